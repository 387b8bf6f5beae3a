"""The GPU plan beside the GPU benchmark's measurements: for each measured ``paper`` profile
step, the planned device memory and roofline bound of the same program on the same card
(``benchmarks/results/gpu_plan.json``, `make gpu-plan`), and measured / planned, measured /
bound. A ratio near 1 for memory confirms the plan; the step's ratio says how far from what the
card allows the step runs.
"""

from __future__ import annotations

import json
from pathlib import Path

PLAN = Path(__file__).resolve().parents[1] / "results" / "gpu_plan.json"
GIB = 2**30


def _plan_row(plan: list[dict], rec: dict) -> dict | None:
    """The plan's train step of the profile's default diffusion model on prostate MR with the
    record's card, accumulation and remat."""
    remat = (rec.get("profile_model") or {}).get("remat")
    for row in plan:
        if (row.get("status") == "ok" and row["card_name"] == rec.get("device")
                and row["program"] == "train_step" and row["architecture"] == "imgx_v010"
                and row["trial"].startswith("prostate-mr_diffusion_x0_recycle-Y_dice-Y_k5")
                and row["grad_accum_steps"] == rec.get("accum") and row["remat"] == remat):
            return row
    return None


def with_plan(records: list[dict], plan_path: Path = PLAN) -> list[dict]:
    """``records`` with ``plan`` added to each ok ``profile_step`` record: ``planned_gib``,
    ``bound_s``, ``peak_over_planned`` and ``step_over_bound`` (None where not measured), or
    the reason no plan row matches."""
    plan = json.loads(plan_path.read_text())["records"] if plan_path.is_file() else []
    out = []
    for rec in records:
        if rec.get("kind") == "profile_step" and rec.get("status") == "ok":
            row = _plan_row(plan, rec)
            if row is None:
                rec = {**rec, "plan": f"no plan row for {rec.get('device')!r}, accumulation "
                                      f"{rec.get('accum')} (make gpu-plan)"}
            else:
                peak, step = rec.get("device_peak_gib"), rec.get("step_s")
                planned = row["planned_bytes"] / GIB
                rec = {**rec, "plan": {
                    "card": row["card"], "planned_gib": planned, "bound_s": row["bound_s"],
                    "peak_over_planned": peak / planned if peak else None,
                    "step_over_bound": step / row["bound_s"] if step else None}}
        out.append(rec)
    return out
