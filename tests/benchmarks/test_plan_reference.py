"""`benchmarks/gpu/plan_reference.py`: a measured paper step gets its plan row's memory and bound,
and the ratios; a device the plan has no row for gets the reason."""

import json

import pytest

from benchmarks.gpu.plan_reference import PLAN, with_plan


def _measured(device, accum=1, remat=False, peak=40.0, step=0.3):
    return {"kind": "profile_step", "status": "ok", "device": device, "accum": accum,
            "profile_model": {"remat": remat}, "device_peak_gib": peak, "step_s": step}


def test_a_measured_h100_step_is_put_beside_the_kept_plan():
    rows = json.loads(PLAN.read_text())["records"]
    planned = next(r for r in rows if r["card"] == "h100_sxm" and r["form"] == "as configured"
                   and r["program"] == "train_step" and r["architecture"] == "imgx_v010"
                   and r["trial"].startswith("prostate-mr_diffusion_x0_recycle-Y_dice-Y_k5"))
    [rec, other] = with_plan([_measured("NVIDIA H100 80GB HBM3"), {"kind": "step"}])
    plan = rec["plan"]
    assert plan["card"] == "h100_sxm"
    assert plan["planned_gib"] == pytest.approx(planned["planned_bytes"] / 2**30)
    assert plan["peak_over_planned"] == pytest.approx(40.0 / plan["planned_gib"])
    assert plan["step_over_bound"] == pytest.approx(0.3 / planned["bound_s"])
    assert "plan" not in other


def test_a_card_without_a_plan_row_says_so():
    [rec] = with_plan([_measured("NVIDIA B200")])
    assert rec["plan"].startswith("no plan row for 'NVIDIA B200'")
