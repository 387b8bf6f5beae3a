"""diffseg3d.core.metrics: Dice, HD95 (MONAI definition), ROI size and per-case evaluation rows
(NumPy/SciPy, run outside jit)."""

from diffseg3d.core.metrics.dice import dice_per_class
from diffseg3d.core.metrics.evaluate import (
    ROW_KEYS,
    evaluate_case,
    read_per_case_csv,
    summarise,
    write_per_case_csv,
)
from diffseg3d.core.metrics.hd95 import hd95_binary, hd95_per_class, surface
from diffseg3d.core.metrics.roi import roi_size_per_class

__all__ = [
    "ROW_KEYS",
    "dice_per_class",
    "evaluate_case",
    "hd95_binary",
    "hd95_per_class",
    "read_per_case_csv",
    "roi_size_per_class",
    "summarise",
    "surface",
    "write_per_case_csv",
]
