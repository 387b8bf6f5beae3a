"""Synthetic tidy runs with known per-setting effects (no training, no MLflow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from diffseg3d.analysis.schema import TIDY_COLUMNS

# name -> (axes, tables tag, Dice offset from the default diffusion model)
SETTINGS: dict[str, tuple[dict, str, float]] = {
    "default": (dict(method="diffusion", output="x0", recycling=True, dice_loss=True,
                     train_steps=5), "1,2,3a,3b,3c", 0.0),
    "no-recycling": (dict(method="diffusion", output="x0", recycling=False, dice_loss=True,
                          train_steps=5), "1", -0.05),
    "unet": (dict(method="unet", output="x0", recycling=True, dice_loss=True, train_steps=5),
             "2", 0.01),
    "eps": (dict(method="diffusion", output="eps", recycling=True, dice_loss=True,
                 train_steps=5), "3a", -0.12),
    "no-dice": (dict(method="diffusion", output="x0", recycling=True, dice_loss=False,
                     train_steps=5), "3b", -0.09),
    "1000-steps": (dict(method="diffusion", output="x0", recycling=True, dice_loss=True,
                        train_steps=1000), "3c", -0.10),
}

CLASS_VOLUMES_MM3 = {"bladder": 9000.0, "rectum": 4000.0, "sv": 600.0, "nvb": 150.0}


def synthetic_frame(*, data_sets=("prostate-mr",), n_cases=20, seeds=(0,), noise=0.02,
                    settings=tuple(SETTINGS), seed=0) -> pd.DataFrame:
    """Tidy rows: Dice = 0.6 + 0.3 * volume rank / (classes - 1) + offset + case effect + noise.

    Dice increases with ROI size (for the Spearman test); HD95 = 20 * (1 - Dice) mm; NSD (at
    2 mm) = min(1, Dice + 0.05).
    """
    rng = np.random.default_rng(seed)
    classes = list(CLASS_VOLUMES_MM3)
    ranks = np.argsort(np.argsort([CLASS_VOLUMES_MM3[c] for c in classes]))
    rows = []
    for data_set in data_sets:
        case_effect = rng.normal(0, 0.03, n_cases)
        for name in settings:
            axes, tables, offset = SETTINGS[name]
            for s in seeds:
                run_id = f"{data_set}-{name}-s{s}"
                for i in range(n_cases):
                    for c, cls in enumerate(classes):
                        dice = (0.6 + 0.3 * ranks[c] / (len(classes) - 1) + offset
                                + case_effect[i] + rng.normal(0, noise))
                        dice = float(np.clip(dice, 0, 1))
                        rows.append(dict(
                            run_id=run_id, trial=f"{name}-s{s}", data_set=data_set, seed=s,
                            case=f"case{i:03d}", **{"class": cls}, dice=dice,
                            hd95=20.0 * (1.0 - dice), roi_voxels=CLASS_VOLUMES_MM3[cls] / 2.0,
                            roi_mm3=CLASS_VOLUMES_MM3[cls], nsd=min(1.0, dice + 0.05),
                            nsd_tolerance_mm=2.0, tables=tables, **axes))
    return pd.DataFrame(rows).loc[:, list(TIDY_COLUMNS) + ["tables"]]
