"""The GPU benchmark of issue #10 (`make bench-gpu`, `python -m benchmarks.gpu_bench`).

Modules, one concept each: `plan` (parts -> configurations, sizes, time limits), `runner`
(one subprocess per configuration, time limits, the budget), `child` (the measuring process),
`jax_steps` (our forward / train step / sampling / HLO dump), `monai_step` (the MONAI peer),
`external` (the conv-layer probe and `make test-gpu` as parts), `figures` (records -> the
headline figures of `gpu_latest.json` and the #10 targets).
"""
