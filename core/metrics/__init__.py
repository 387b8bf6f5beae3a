"""diffseg3d.core.metrics: Dice, HD95 and NSD (MONAI definitions), ROI size, per-case evaluation
rows, Dice along the sampling chain and the uncertainty-Dice correlation (NumPy/SciPy, run outside
jit)."""

from diffseg3d.core.metrics.dice import dice_per_class
from diffseg3d.core.metrics.evaluate import (
    ROW_KEYS,
    case_mean_dice,
    evaluate_case,
    mean_case_dice_per_step,
    read_per_case_csv,
    summarise,
    write_per_case_csv,
)
from diffseg3d.core.metrics.hd95 import hd95_binary, hd95_per_class, surface
from diffseg3d.core.metrics.nsd import DEFAULT_TOLERANCE_MM, nsd_per_class
from diffseg3d.core.metrics.roi import roi_size_per_class
from diffseg3d.core.metrics.uncertainty import uncertainty_dice_spearman

__all__ = [
    "DEFAULT_TOLERANCE_MM",
    "ROW_KEYS",
    "case_mean_dice",
    "dice_per_class",
    "evaluate_case",
    "hd95_binary",
    "hd95_per_class",
    "mean_case_dice_per_step",
    "nsd_per_class",
    "read_per_case_csv",
    "roi_size_per_class",
    "summarise",
    "surface",
    "uncertainty_dice_spearman",
    "write_per_case_csv",
]
