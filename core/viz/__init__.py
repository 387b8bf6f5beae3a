"""diffseg3d.core.viz: the one slice-montage renderer (image with label overlays), shared by the
trial's per-case PNGs (`experiments.trial.montage`) and the paper's Fig. 2 (`analysis.figures`)."""

from diffseg3d.core.viz.montage import (
    DPI,
    class_colormap,
    class_colours,
    display_slice,
    montage_figure,
    save_figure,
)

__all__ = [
    "DPI",
    "class_colormap",
    "class_colours",
    "display_slice",
    "montage_figure",
    "save_figure",
]
