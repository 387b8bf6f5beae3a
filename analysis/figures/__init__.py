"""Figures (seaborn / matplotlib). Figure sizes are fixed in inches and saved at `DPI` without
tight cropping, so a PNG is exactly `figsize * DPI` pixels.

- `saving`: `save(fig, stem)` writes PNG + PDF; `DPI`.
- `per_class`: Dice per class per setting (box plot), ROI volume vs Dice (Spearman r).
- `curves`: training curves (MLflow history), Dice per sampling step.
- `montage`: the paper's Fig. 2 (image, ground truth, predictions of one slice).
- `paired_differences`: per table, the per-case paired Dice differences of each comparison
  with the bootstrap interval and the mde80 band (returns the Figure).
"""

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (CI, Ray workers)
