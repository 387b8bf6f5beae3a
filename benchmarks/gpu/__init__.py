"""The GPU run (`make bench-gpu`, `python -m benchmarks.gpu_bench`; docs/GPU.md).

Modules, one concept each: `plan` (parts -> configurations in the order of what they decide,
sizes, time limits, the estimate of the run), `runner` (one subprocess per configuration, time
limits, the budget, the shared environment), `child` (the measuring process), `jax_steps` (our
train steps, forward pass, sampling, optimized HLO), `monai_step` (the MONAI peer),
`external` (conv-layer timings and `make test-gpu` as parts), `conv_layers` (per-layer conv
timings per conv form), `hlo_summary` (what XLA made of the convs: the flagged pathological
one), `figures` (records -> the figures of `gpu_latest.json` and the targets);
`run_offline.sh` runs it all on a machine without a package index.
"""
