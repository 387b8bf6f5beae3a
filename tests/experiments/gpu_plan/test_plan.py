"""`experiments/gpu_plan/plan.py`: which programs the plan compiles, the memory arithmetic, and
its summary and table, on hand-made records (the compiles: test_guard.py, make gpu-plan)."""

from types import SimpleNamespace

import pytest
from diffseg3d.experiments.gpu_plan.plan import (
    markdown_table,
    memory_plan,
    plan_rows,
    summarise,
)


def test_planned_memory_counts_a_donated_argument_once():
    stats = SimpleNamespace(temp_size_in_bytes=100, argument_size_in_bytes=40,
                            output_size_in_bytes=30, alias_size_in_bytes=25)
    assert memory_plan(stats)["planned_bytes"] == 100 + 40 + 30 - 25


@pytest.fixture(scope="module")
def rows():
    return {arch: list(plan_rows(arch)) for arch in ("imgx_v010", "diffseg3d")}


def test_every_paper_trial_gets_its_configured_step_and_the_main_ones_every_form(rows):
    imgx = rows["imgx_v010"]
    trials = {r.trial for r in imgx}
    assert len(trials) == 9  # the paper grid's trials on its two data sets
    default = [r for r in imgx
               if r.trial.startswith("prostate-mr_diffusion_x0_recycle-Y_dice-Y_k5")]
    forms = {(r.grad_accum_steps, r.remat) for r in default if r.program == "train_step"}
    assert forms == {(1, False), (1, True), (8, True)}  # as configured = one pass, no remat
    assert {r.program for r in default} == {"train_step", "validation", "sample"}
    no_dice = [r for r in imgx if "dice-N" in r.trial]
    assert [(r.program, r.form) for r in no_dice] == [("train_step", "as configured")]
    eps = {r.program for r in imgx if "_eps_" in r.trial}
    assert eps == {"train_step", "validation", "sample"}  # the noise model samples differently
    assert all(r.config.model.architecture == "imgx_v010" for r in imgx)


def test_the_other_network_is_planned_for_the_default_diffusion_model_and_the_unet(rows):
    other = rows["diffseg3d"]
    assert all(r.config.model.architecture == "diffseg3d" for r in other)
    assert {r.trial.split("_", 1)[1] for r in other} == {
        "diffusion_x0_recycle-Y_dice-Y_k5_tindex_s0", "unet_dice-Y_s0"}


def _rec(card, trial, program, form, gib, bound_s, healthy=True):
    return {"card": card, "status": "ok", "architecture": "imgx_v010", "data_set": "prostate-mr",
            "trial": trial, "program": program, "form": form, "planned_bytes": gib * 2**30,
            "fits": gib < 71, "bound_s": bound_s, "flops": 2e13, "healthy": healthy,
            "trial_bound_h": bound_s * 12500 / 3600}


def test_summary_and_table_from_records():
    trial = "prostate-mr_diffusion_x0_recycle-Y_dice-Y_k5_tindex_s0"
    records = [_rec("h100_sxm", trial, "train_step", "as configured", 36.6, 0.12),
               _rec("h100_sxm", trial, "sample", "as configured", 0.9, 0.02, healthy=False),
               {"card": "h100_sxm", "status": "error", "error": "x"}]
    s = summarise(records)["h100_sxm"]
    assert s["programs"] == 2 and s["errors"] == 1 and not s["all_healthy"]
    assert s["configured_train_max_gib"] == pytest.approx(36.6)
    assert s["default_step_bound_ms"] == pytest.approx(120)
    assert s["default_trial_bound_h"] == pytest.approx(0.12 * 12500 / 3600)
    table = markdown_table(records).splitlines()
    assert table[0].startswith("| network | data set | trial | program | form | h100_sxm GiB")
    assert "| 36.6 | 120 | 20.0 | yes |" in table[2]
    assert table[3].endswith("| NO |")
