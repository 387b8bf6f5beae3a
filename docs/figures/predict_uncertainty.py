"""Render docs/figures/predict_uncertainty.png from a real `diffseg3d predict --samples N` run.

    diffseg3d predict --model runs/trials/<trial> --input data/phantom/imagesTr/phantom_020.nii.gz \
        --out /tmp/pred --samples 8
    python docs/figures/predict_uncertainty.py --image data/phantom/imagesTr/phantom_020.nii.gz \
        --label data/phantom/labelsTr/phantom_020.nii.gz --pred /tmp/pred \
        --out docs/figures/predict_uncertainty.png

Columns: image | ground truth | ensemble label | entropy (nats) | disagreement, one row per axial
slice, in the montage's radiological view (`core.viz.montage.display_slice`; the input must be
RAS, as prepared data sets are).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
from diffseg3d.core.viz.montage import (
    OVERLAY_ALPHA,
    class_colormap,
    class_colours,
    display_slice,
    save_figure,
)
from matplotlib.figure import Figure
from matplotlib.patches import Patch


def render(image: np.ndarray, label: np.ndarray, pred: np.ndarray, entropy: np.ndarray,
           disagreement: np.ndarray, class_names: list[str], slices: list[int],
           title: str) -> Figure:
    """The figure (module docstring); every volume (X, Y, Z) on the same grid."""
    num_classes = len(class_names) + 1
    cmap = class_colormap(num_classes)
    lo, hi = np.percentile(image, (1, 99))
    columns = [("image", None), ("ground truth", label), ("ensemble label", pred),
               ("entropy (nats)", entropy), ("disagreement", disagreement)]
    fig = Figure(figsize=(2.3 * len(columns), 2.3 * len(slices) + 0.8), layout="constrained")
    axes = fig.subplots(len(slices), len(columns), squeeze=False)
    for row, z in enumerate(slices):
        grey = display_slice(image[..., z])
        for col, (name, values) in enumerate(columns):
            ax = axes[row, col]
            ax.imshow(grey, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if values is label or values is pred:
                ax.imshow(display_slice(values[..., z]), cmap=cmap, vmin=0,
                          vmax=num_classes - 1, alpha=OVERLAY_ALPHA, interpolation="nearest")
            elif values is not None:
                top = math.log(num_classes) if values is entropy else 1.0
                shown = ax.imshow(display_slice(values[..., z]), cmap="magma", vmin=0.0,
                                  vmax=top, interpolation="nearest")
                if row == len(slices) - 1:
                    fig.colorbar(shown, ax=axes[:, col], shrink=0.6, location="bottom")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
        axes[row, 0].set_ylabel(f"z = {z}")
    colours = class_colours(num_classes)
    fig.legend(handles=[Patch(color=colours[i + 1], label=n) for i, n in enumerate(class_names)],
               loc="outside lower center", ncol=min(len(class_names), 8), fontsize=7,
               frameon=False)
    fig.suptitle(title, fontsize=9)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--label", type=Path, required=True)
    parser.add_argument("--pred", type=Path, required=True, help="the predict --out folder")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    case = args.image.name.removesuffix(".nii.gz").removesuffix(".nii").removesuffix("_0000")

    def load(path: Path) -> np.ndarray:
        return np.asarray(nib.load(str(path)).dataobj)

    image, label = load(args.image).astype(np.float32), load(args.label).astype(np.int32)
    pred = load(args.pred / f"{case}.nii.gz").astype(np.int32)
    entropy = load(args.pred / f"{case}_entropy.nii.gz")
    disagreement = load(args.pred / f"{case}_disagreement.nii.gz")
    info = json.loads((args.pred / "labels.json").read_text())
    class_names = [info["labels"][str(i)] for i in range(1, len(info["labels"]))]
    foreground = np.flatnonzero((label > 0).sum(axis=(0, 1)))
    slices = [int(z) for z in np.unique(np.quantile(foreground, (0.3, 0.7)).round())]
    dice = []
    for c in range(1, len(class_names) + 1):
        union = (pred == c).sum() + (label == c).sum()
        if union:
            dice.append(2 * ((pred == c) & (label == c)).sum() / union)
    title = (f"diffseg3d predict, {case}: {info['samples']} samples, {info['steps']} "
             f"{info['sampler']} steps; mean Dice {np.mean(dice):.3f}")
    save_figure(render(image, label, pred, entropy, disagreement, class_names, slices, title),
                args.out)


if __name__ == "__main__":
    main()
