"""The paired-differences figure: one panel per comparison holding its cases' differences,
the bootstrap interval and the mde80 band at the computed values, with labels."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from diffseg3d.analysis.comparisons import TABLES_BY_ID
from diffseg3d.analysis.figures.paired_differences import (
    MDE_LABEL,
    MEAN_LABEL,
    POINTS_LABEL,
    paired_differences_figure,
)
from diffseg3d.analysis.table_data import compute_table

from ..synthetic_runs import synthetic_frame


def _artist(ax, label, kind):
    found = [a for a in getattr(ax, kind) if a.get_label() == label]
    assert len(found) == 1, (label, kind)
    return found[0]


def _span(patch):
    """(y low, y high) of an axhspan (a Rectangle: axes x, data y)."""
    return patch.get_y(), patch.get_y() + patch.get_height()


def test_one_panel_per_comparison_with_its_points_interval_and_band():
    frame = synthetic_frame(data_sets=("prostate-mr", "amos-ct"), n_cases=7, seeds=(0, 1),
                            settings=("default", "no-recycling"))
    data = compute_table(frame, TABLES_BY_ID["table1_recycling"])
    fig = paired_differences_figure(data)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(data.comparisons) == 2
    for ax, comp in zip(panels, data.comparisons, strict=True):
        points = _artist(ax, POINTS_LABEL, "collections").get_offsets()
        assert len(points) == 7
        np.testing.assert_allclose(points[:, 1], comp.differences)
        mean = _artist(ax, MEAN_LABEL, "lines").get_ydata()
        assert mean[0] == pytest.approx(comp.test.mean_diff)
        assert _span(_artist(ax, MDE_LABEL, "patches")) == pytest.approx(
            (-comp.mde80, comp.mde80))
        assert _span(_artist(ax, "99% bootstrap interval", "patches")) == pytest.approx(
            (comp.interval.low, comp.interval.high))
        assert ax.get_ylabel() == "Dice difference per case (b - a)"
        assert "mean over 2 seed(s)" in ax.get_xlabel() and "7 paired" in ax.get_xlabel()
        assert [t.get_text() for t in ax.get_xticklabels()] == list(comp.cases)
    assert [ax.get_title() for ax in panels] == ["Prostate MR: Recycling Y vs N",
                                                 "Abdominal CT: Recycling Y vs N"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert set(legend) == {POINTS_LABEL, MEAN_LABEL, MDE_LABEL, "99% bootstrap interval"}
    plt.close(fig)


def test_no_comparison_no_figure():
    frame = synthetic_frame(settings=("default",), n_cases=4)
    assert paired_differences_figure(compute_table(frame, TABLES_BY_ID["table1_recycling"])) \
        is None
