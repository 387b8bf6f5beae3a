"""Example predictions for the Fig. 2 montage: pick the runs, find a common case, load a slice.

The roles are the paper's Fig. 2 columns: U-Net, diffusion without and with recycling (the
default diffusion model otherwise: mask prediction, Dice loss, 5 training steps; lowest seed).
Predictions are the runs' `predictions/<case>.nii.gz` artifacts (prepared space); the image and
ground truth come from the prepared data set folder in the run's `data.root` param
(`imagesTr/<case>.nii.gz`, `labelsTr/<case>.nii.gz`, `dataset.json` class names). Every reason
not to draw the montage is returned as text, to be listed in summary.md.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from diffseg3d.analysis.collect import download_predictions

# (panel title, tidy-axis filter) in the paper's column order.
ROLES: tuple[tuple[str, dict], ...] = (
    ("U-Net", {"method": "unet", "dice_loss": True}),
    ("Diffusion, no recycling", {"method": "diffusion", "recycling": False, "output": "x0",
                                 "dice_loss": True, "train_steps": 5}),
    ("Diffusion, recycling", {"method": "diffusion", "recycling": True, "output": "x0",
                              "dice_loss": True, "train_steps": 5}),
)


@dataclasses.dataclass(frozen=True)
class Example:
    """One slice: image (X, Y) float, panels [(title, (X, Y) int)] ground truth first."""

    image: np.ndarray
    panels: list[tuple[str, np.ndarray]]
    class_names: list[str]
    title: str


def pick_runs(runs: pd.DataFrame, data_set: str) -> dict[str, pd.Series]:
    """Collected run per role on `data_set` (lowest seed); roles without a run are absent."""
    ok = runs[(runs["problem"].isna()) & (runs["data_set"] == data_set)]
    picked = {}
    for title, where in ROLES:
        mask = pd.Series(True, index=ok.index)
        for column, value in where.items():
            mask &= ok[column] == value
        if mask.any():
            picked[title] = ok[mask].sort_values("seed").iloc[0]
    return picked


def _load(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj)


def load_example(runs: pd.DataFrame, data_set: str, tracking_uri: str | None = None
                 ) -> Example | str:
    """The montage's arrays for `data_set`, or the reason it cannot be drawn.

    Roles without a run are left out of the montage and named in its title.
    """
    from diffseg3d.analysis.figures.montage import best_slice

    picked = pick_runs(runs, data_set)
    if not picked:
        return f"{data_set}: no collected U-Net or default diffusion run"
    absent = [title for title, _ in ROLES if title not in picked]
    root = next((r["data_root"] for r in picked.values() if r["data_root"]), None)
    if root is None or not (Path(root) / "dataset.json").is_file():
        return f"{data_set}: prepared data set folder {root!r} (param data.root) not found here"
    with tempfile.TemporaryDirectory(prefix="diffseg3d-montage-") as tmp:
        preds = {}
        for title, run in picked.items():
            found = download_predictions(run["run_id"], Path(tmp) / run["run_id"], tracking_uri)
            if not found:
                return f"{data_set}: run {run['run_id']} ({title}) logged no predictions/"
            preds[title] = found
        common = sorted(set.intersection(*(set(p) for p in preds.values())))
        if not common:
            return f"{data_set}: the runs share no predicted case"
        case = common[0]
        label_path = Path(root) / "labelsTr" / f"{case}.nii.gz"
        image_path = Path(root) / "imagesTr" / f"{case}.nii.gz"
        if not (label_path.is_file() and image_path.is_file()):
            return f"{data_set}: {image_path} or {label_path} missing"
        label = _load(label_path).astype(np.int32)
        image = _load(image_path).astype(np.float32).squeeze()
        arrays = {title: _load(p[case]).astype(np.int32) for title, p in preds.items()}
    z = best_slice(label)
    class_names = json.loads((Path(root) / "dataset.json").read_text())["class_names"]
    panels = [("ground truth", label[..., z])]
    panels += [(title, arrays[title][..., z]) for title, _ in ROLES if title in arrays]
    title = f"{data_set}: test case {case}, slice {z}"
    if absent:
        title += f" (no run for: {', '.join(absent)})"
    return Example(image=image[..., z], panels=panels, class_names=list(class_names),
                   title=title)
