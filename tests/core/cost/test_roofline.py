"""`core/cost/roofline.py`: the bound is the larger of compute and memory time."""

import math

import pytest
from diffseg3d.core.cost.roofline import intensity, roofline_seconds


def test_the_larger_term_sets_the_bound_and_is_named():
    r = roofline_seconds(flops=1e12, bytes_moved=1e9, peak_flops=1e15, bandwidth=1e12)
    assert r["compute_s"] == pytest.approx(1e-3) and r["memory_s"] == pytest.approx(1e-3)
    r = roofline_seconds(flops=4e12, bytes_moved=1e9, peak_flops=1e15, bandwidth=1e12)
    assert r["bound_s"] == pytest.approx(4e-3) and r["limit"] == "compute"
    r = roofline_seconds(flops=1e12, bytes_moved=3e9, peak_flops=1e15, bandwidth=1e12)
    assert r["bound_s"] == pytest.approx(3e-3) and r["limit"] == "memory"


def test_peaks_must_be_positive_and_intensity_is_flops_per_byte():
    with pytest.raises(ValueError, match="peak_flops and bandwidth must be > 0"):
        roofline_seconds(1.0, 1.0, 0.0, 1.0)
    assert intensity(10.0, 4.0) == 2.5 and math.isinf(intensity(1.0, 0.0))
