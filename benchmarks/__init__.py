"""diffseg3d benchmarks: speed and memory of the training step, inference and the tracking store.

Where is what:

- ``run.py`` — ``make bench`` / ``bench-quick`` / ``bench-levers``: the CPU suite (training
  step, forward, sampling, conv layers, ours against a straightforward reference U-Net), one
  process per configuration; its parts are in ``cpu/``. Writes ``results/latest.json``
  (``quick.json``, ``levers.json``, ``only.json``).
- ``gpu_bench.py`` — ``make bench-gpu``: the GPU run (conv forms, the paper profile's step,
  MONAI side by side, HLO summary, the core tests on the GPU), one process per configuration;
  its parts are in ``gpu/``; ``gpu/run_offline.sh`` runs it on a machine without a package
  index. Writes ``results/gpu_latest.json`` (``gpu_small_cpu.json`` for the CPU rehearsal).
- ``mlflow_load.py`` (+ ``mlflow_servers.py``) — load test of the tracking store, by hand;
  ``results/mlflow_load.json``.
- ``throughput.py`` — timing arithmetic and XLA's buffer plan, shared by both suites.
- ``probes/`` — measurements run by hand to decide one thing, not by any ``make`` target
  (conv forms on the CPU, a profiled step, the paper-size memory plan, the init program's
  compile time); each says in its docstring what it decided and where its result is.
"""

from pathlib import Path

#: The measured results (JSON) of every benchmark, committed with the code that made them.
RESULTS_DIR = Path(__file__).resolve().parent / "results"
