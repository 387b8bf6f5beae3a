"""Saving a figure as PNG (fixed pixel size: `figsize * DPI`) and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from diffseg3d.core.viz.montage import DPI

__all__ = ["DPI", "save"]


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """Write `stem.png` and `stem.pdf`; close the figure; return both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return paths
