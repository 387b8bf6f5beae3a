"""The shared montage renderer: palette, radiological orientation, figure size, bad shapes."""

import matplotlib.image as mpimg
import numpy as np
import pytest
from diffseg3d.core.viz.montage import (
    DPI,
    class_colormap,
    class_colours,
    display_slice,
    montage_figure,
    save_figure,
)


@pytest.mark.parametrize("num_classes", [9, 16])
def test_background_is_transparent_and_classes_distinct(num_classes):
    colours = class_colours(num_classes)
    assert colours.shape == (num_classes, 4) and colours[0, 3] == 0.0
    assert len({tuple(np.round(c, 3)) for c in colours[1:]}) == num_classes - 1
    np.testing.assert_array_equal(class_colormap(num_classes)(np.arange(num_classes)), colours)


def test_display_slice_is_radiological():
    """RAS slice: x grows towards the patient's right, y towards anterior. Shown: anterior on
    top, the patient's right on the viewer's left."""
    x, y = np.meshgrid(np.arange(3), np.arange(2), indexing="ij")  # (X=3, Y=2)
    shown = display_slice(10 * x + y)
    assert shown.shape == (2, 3)
    np.testing.assert_array_equal(shown, [[21, 11, 1], [20, 10, 0]])  # top-left: right, anterior
    with pytest.raises(ValueError, match=r"\(2, 2, 2\)"):
        display_slice(np.zeros((2, 2, 2)))


def test_figure_is_fixed_size_and_panels_checked(tmp_path):
    image = np.random.default_rng(0).random((6, 5, 4))
    label = np.zeros((6, 5, 4), int)
    label[1:3, 1:4, 1:3] = 1
    fig = montage_figure(image, [("truth", label)], ["organ"], [1, 2], panel_inches=2.0)
    png = mpimg.imread(save_figure(fig, tmp_path / "m.png"))
    assert png.shape[:2] == (int((2 * 2.0 + 1.0) * DPI), int(2 * 2.0 * DPI))
    with pytest.raises(ValueError, match="'truth' has shape"):
        montage_figure(image, [("truth", label[..., :3])], ["organ"], [1])
