"""Diffusion sampling tables: Dice per sampling step and 1 vs N-sample ensembles (LaTeX)."""

from __future__ import annotations

import pandas as pd
from diffseg3d.analysis.tables.latex import (
    EMPTY,
    NAME_COLUMNS,
    data_set_name,
    number,
    plain_table_latex,
)


def sampling_steps_frame(steps: pd.DataFrame) -> pd.DataFrame:
    """Plain-text cells of the Dice-per-sampling-step table: columns `Data set`, `Setting`, then
    one per step k (1..K, the union over settings; `--` where a setting has fewer steps).

    steps: output of `sampling_chain.step_dice`.
    """
    wide = steps.pivot_table(index=["data_set", "setting"], columns="step", values="mean",
                             sort=False)
    text = pd.DataFrame({
        "Data set": [data_set_name(d) for d, _ in wide.index],
        "Setting": [s for _, s in wide.index],
        **{f"step {int(k)}": [number(v) for v in wide[k]] for k in sorted(wide.columns)},
    })
    return text


def sampling_steps_latex(steps: pd.DataFrame) -> str:
    """Mean test Dice of each sampling step's x0_hat (argmax) per data set and setting.

    steps: output of `sampling_chain.step_dice` (non-empty).
    """
    text = sampling_steps_frame(steps)
    n_runs = int(steps["n_runs"].max()) if len(steps) else 0
    cap = ("Quality along the sampling chain: mean test Dice (mean over cases of the per-case "
           "mean over foreground classes) of the label map of each sampling step's $\\hat{x}_0$"
           ", step 1 from pure noise, the last step being the prediction"
           + (f"; mean over up to {n_runs} seeds." if n_runs > 1 else "."))
    return plain_table_latex(text, caption=cap, label="tab:dice-per-sampling-step",
                             column_format="ll" + "c" * (text.shape[1] - 2),
                             escape_columns=NAME_COLUMNS)


def ensemble_frame(ensembles: pd.DataFrame) -> pd.DataFrame:
    """Plain-text cells of the 1-sample vs N-sample table (`sampling_chain.ensemble_dice`)."""
    return pd.DataFrame({
        "Data set": [data_set_name(d) for d in ensembles["data_set"]],
        "Setting": list(ensembles["setting"]),
        "N": [str(int(n)) if n > 0 else EMPTY for n in ensembles["samples"]],
        "Dice (1 sample)": [number(v) for v in ensembles["dice_single"]],
        "Dice (N samples)": [number(v) for v in ensembles["dice_ensemble"]],
        "Spearman r": [number(v) for v in ensembles["spearman_r"]],
    })


def ensemble_latex(ensembles: pd.DataFrame) -> str:
    """1-sample Dice next to the N-sample ensemble's, with the entropy-Dice Spearman r."""
    text = ensemble_frame(ensembles)
    cap = ("Ensembles of N independent diffusion samples: mean test Dice of one sample and of "
           "the N-sample ensemble (argmax of the mean class probabilities), the first sample "
           "being shared; Spearman r between each case's mean voxel entropy of the ensemble and "
           "its ensemble Dice (negative: the uncertainty flags the poor cases). Means over "
           "seeds.")
    return plain_table_latex(text, caption=cap, label="tab:ensemble", column_format="llcccc",
                             escape_columns=NAME_COLUMNS)
