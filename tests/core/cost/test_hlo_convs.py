"""`core/cost/hlo_convs.py`: the flag needs a dilated input, not only a large window, and the
verdict names what fails (the summary's other cases: tests/benchmarks/test_hlo_summary.py)."""

from pathlib import Path

from diffseg3d.core.cost.hlo_convs import summarise_text, verdict

#: Two kernel gradients in the backward pass: of a 3x3x3 conv on a 4x4x2 level (window 4x4x2,
#: ordinary input) and of an up-conv (window 8x8x4 over an interior-padded pad).
_TEXT = (Path(__file__).parent / "bottom_level_and_upconv.hlo.txt").read_text()


def test_a_large_window_over_an_ordinary_input_is_not_flagged_but_over_an_interior_pad_is():
    s = summarise_text(_TEXT)
    # The kernel gradient of a 3x3x3 conv on a 4x4x2 level: window 4x4x2, undilated input.
    assert "bottom" not in s["flagged"]
    assert s["flagged"] == ["upconv"] and s["padded_inputs"] == ["upconv"]
    v = verdict(s)
    assert not v["healthy"] and "upconv" in v["reasons"][0]


def test_a_program_without_such_convs_is_healthy():
    healthy = _TEXT.replace("%padded, %g", "%x, %g")
    s = summarise_text(healthy)
    assert s["flagged"] == [] and s["padded_inputs"] == []
    assert verdict(s) == {"healthy": True, "reasons": []}
