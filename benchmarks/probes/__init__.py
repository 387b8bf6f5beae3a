"""Measurements run by hand, not by any ``make`` target; each decided one thing.

- `conv_probe`: which 3x3x3 and down/up conv forms are faster on the CPU (decided the
  ``slices`` form and the space-to-depth down/up convs).
- `profile_step`: a ``jax.profiler`` trace of one training step, summed per XLA op.
- `memory_plan`: the paper-size step's memory plan without running it.
- `init_compile`: compile time of a trial's init program, XLA's default against
  ``core.train.state.INIT_COMPILER_OPTIONS`` (decided them).
- `noise_curve`: for a trained noise-prediction checkpoint, the per-step Dice from noised ground
  truth, the head's rank limit and the size of x0_hat (explained why noise prediction fails on
  the ``quick`` profile; ``docs/NOISE_PREDICTION.md``).
- `val_curves`: validation Dice per step of several `diffseg3d train` runs as one figure and a
  Markdown table (the noise-prediction curves of ``docs/NOISE_PREDICTION.md``).

Their dated results are in ``docs/BENCHMARKS.md`` and ``benchmarks/results/``.
"""
