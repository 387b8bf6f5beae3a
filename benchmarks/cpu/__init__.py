"""The parts of ``make bench`` (``python -m benchmarks.run``), the CPU suite.

`configs` (what is timed, in run order), `workloads` (the jitted callable of a configuration),
`measure` (one configuration in its own process), `paired` (two configurations interleaved in
one process), `summary` and `report` (the headline figures and their targets, the table),
`machine` (the CPU's nominal peak), `reference_unet` (the straightforward U-Net ours is
compared with).
"""
