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


def test_figure_content_columns_rows_legend_and_overlays():
    """Read back from the returned figure: one axes per (slice, column), the column titles, the
    row labels, the legend's class names in their colours, and each overlay the label slice."""
    image = np.random.default_rng(1).random((6, 5, 4))
    truth = np.zeros((6, 5, 4), int)
    truth[1:3, 1:4, 1:3] = 1
    pred = np.zeros_like(truth)
    pred[2:5, 0:2, 2] = 2
    fig = montage_figure(image, [("truth", truth), ("pred", pred)], ["liver", "kidney"], [1, 2],
                         title="case 7", row_labels=["first", "second"])
    axes = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["image", "truth", "pred"]
    assert [ax.get_title() for ax in axes[1]] == ["", "", ""]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["first", "second"]
    assert fig.get_suptitle() == "case 7"
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["liver", "kidney"]
    colours = class_colours(3)
    np.testing.assert_allclose([h.get_facecolor() for h in legend.legend_handles], colours[1:])
    for row, z in enumerate([1, 2]):
        assert len(axes[row, 0].get_images()) == 1  # the image alone
        np.testing.assert_array_equal(axes[row, 0].get_images()[0].get_array(),
                                      display_slice(image[..., z]))
        for col, label in ((1, truth), (2, pred)):
            grey, overlay = axes[row, col].get_images()
            np.testing.assert_array_equal(overlay.get_array(), display_slice(label[..., z]))
            assert overlay.get_clim() == (0, 2)
    # Slice z=2 of the prediction holds class 2 only: its overlay is drawn in kidney's colour.
    assert set(np.unique(axes[1, 2].get_images()[1].get_array())) == {0, 2}
    np.testing.assert_allclose(axes[1, 2].get_images()[1].cmap(2), colours[2])
