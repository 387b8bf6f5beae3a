"""The TPU rows of the plan (`experiments/gpu_plan/tpu.py`, `plan.tpu_rows`): the topologies'
figures, which programs are planned, their table, and (with libtpu) a small ``paper_tpu`` train
step compiled over the 4 chips of a v5e slice without a TPU, data parallel as a trial runs it."""

import json
import os
import subprocess
import sys

import pytest
from diffseg3d.experiments.gpu_plan import plan, tpu
from diffseg3d.experiments.gpu_plan.programs import PROGRAMS

from tests.conftest import TPU_PLAN_SITE


def test_each_topology_is_four_chips_with_its_published_per_device_figures():
    v5e, v4, v3 = (tpu.topology(k) for k in ("v5e_2x2", "v4_2x2x1", "v3_2x2"))
    assert {t.chips for t in (v5e, v4, v3)} == {4}
    assert (v5e.devices, v4.devices, v3.devices) == (4, 4, 8)  # v3: a device per TensorCore
    assert (v5e.memory_bytes, v4.memory_bytes, v3.memory_bytes) == (16 * 2**30, 32 * 2**30,
                                                                    16 * 2**30)
    assert v4.options == {"chip_config_name": "megacore"}
    assert all("cloud.google.com/tpu/docs" in t.source for t in (v5e, v4, v3))
    with pytest.raises(ValueError, match=r"unknown TPU topology 'v6e'.*v5e_2x2"):
        tpu.topology("v6e")


def test_the_tpu_rows_are_the_paper_tpu_profiles_default_model_and_unet_as_configured():
    rows = list(plan.tpu_rows())
    assert {r.trial.split("_", 1)[1] for r in rows} == {
        "diffusion_x0_recycle-Y_dice-Y_k5_tindex_s0", "unet_dice-Y_s0"}
    assert {r.data_set for r in rows} == {"prostate-mr", "amos-ct"}
    assert len(rows) == 12 and {r.program for r in rows} == set(PROGRAMS)
    c = rows[0].config
    assert (c.train.grad_accum_steps, c.model.remat, c.data.batch_size) == (2, True, 8)
    assert c.resources.accelerator == "tpu" and c.resources.accelerators_per_trial == 4
    assert all(plan.is_tpu(k) for k in tpu.TOPOLOGIES) and not plan.is_tpu("h100_sxm")


def _tpu_rec(program, gib, **extra):
    rec = {"card": "v5e_2x2", "target": "tpu", "status": "ok", "topology": "v5e:2x2",
           "mesh_devices": 4, "chips": 4, "data_set": "prostate-mr", "architecture": "imgx_v010",
           "form": "as configured", "trial": "prostate-mr_unet_dice-Y_s0", "program": program,
           "planned_bytes": gib * 2**30, "memory_bytes": 16 * 2**30, "fits": gib < 14.4,
           "flops": 5e12, "bound_s": 0.25, "param_bytes": 2**30, "param_bytes_per_device": 2**30,
           "collectives": {"all-reduce": 12}, "healthy": True, "compile_s": 363.0}
    return {**rec, **extra}


def test_the_tpu_table_gives_per_device_memory_against_hbm_and_leaves_gpu_rows_out():
    step = _tpu_rec("train_step", 14.0, state_bytes=3 * 2**30, state_bytes_per_device=3 * 2**30,
                    batch_bytes=2**30, batch_bytes_per_device=2**28)
    records = [step, _tpu_rec("sample", 20.0),
               {"card": "h100_sxm", "status": "ok", "trial": "x_y_s0"}]
    table = plan.tpu_markdown_table(records).splitlines()
    assert len(table) == 4  # head, rule, the two TPU rows
    assert "| v5e:2x2 | 4 (4 chips) | prostate-mr | unet_dice-Y | train_step | 14.0 (16) | yes |" \
        in table[2]
    assert "| 3.00 / 3.00 | 256 / 1024 | 12 | yes | 363 |" in table[2]
    assert "| 20.0 (16) | no |" in table[3] and "(parameters)" in table[3]
    assert plan.markdown_table([step]).splitlines()[2:] == []  # the GPU table has no TPU row


def test_merge_keeps_the_earlier_records_a_run_does_not_compile_anew(tmp_path):
    old = tmp_path / "plan.json"
    gpu = {"card": "h100_sxm", "architecture": "imgx_v010", "trial": "t", "program": "sample",
           "form": "as configured", "planned_bytes": 1}
    older = {**gpu, "card": "a100_sxm_80", "date": "2026-12-05"}
    stale = {**gpu, "card": "v5e_2x2", "planned_bytes": 2}
    old.write_text(json.dumps({"date": "2026-12-07", "wall_s": 9.0,
                               "records": [gpu, older, stale]}))
    fresh = {**stale, "planned_bytes": 3, "date": "2026-12-08"}
    records, kept = plan._merged([fresh], old)
    # Each kept record says when it was planned: its own date, else its file's.
    assert records == [{**gpu, "date": "2026-12-07"}, older, fresh]
    assert kept == {"cards": ["a100_sxm_80", "h100_sxm"], "date": "2026-12-07", "wall_s": 9.0}


_COMPILE = """
import json
from diffseg3d.experiments.config.layering import deep_merge, load_profile
from diffseg3d.experiments.config.schema import validate_config
from diffseg3d.experiments.gpu_plan import plan, tpu
from diffseg3d.experiments.gpu_plan.programs import PROGRAMS

config = validate_config(deep_merge(load_profile("paper_tpu"), {
    "method": "unet", "data": {"root": "unprepared"}, "model": {"channels": [4, 8, 16, 32]}}))
plan.DATA_SETS["small"] = ((16, 16, 16), 3, (1.0, 1.0, 1.0))
row = plan.Row("small_unet", "small", "imgx_v010", "as configured", "train_step",
               config.train.grad_accum_steps, config.model.remat, config)
mesh = tpu.mesh("v5e_2x2")
print(json.dumps(plan.compile_row(row, "v5e_2x2", mesh)))
diffusion = validate_config(deep_merge(load_profile("paper_tpu"), {
    "data": {"root": "unprepared"}, "model": {"channels": [4, 8, 16, 32]}}))
row = plan.Row("small_diffusion", "small", "imgx_v010", "as configured", "validation",
               diffusion.train.grad_accum_steps, diffusion.model.remat, diffusion)
print(json.dumps(plan.compile_row(row, "v5e_2x2", mesh)))
"""


@pytest.mark.slow
@pytest.mark.requires("tpu-plan")
def test_a_small_paper_tpu_train_step_and_validation_compile_data_parallel_over_four_v5e_chips():
    out = subprocess.run([sys.executable, "-c", _COMPILE],
                         env=plan.subprocess_env(None, TPU_PLAN_SITE), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rec, val = (json.loads(line) for line in out.stdout.strip().splitlines()[-2:])
    assert rec["status"] == "ok", rec.get("error")
    assert (rec["target"], rec["mesh_devices"], rec["chips"]) == ("tpu", 4, 4)
    assert rec["mesh_device_kinds"] == ["TPU v5 lite"]
    # The state is replicated: every chip holds all of it; the batch of 8 is split over 4.
    assert rec["param_bytes_per_device"] == rec["param_bytes"] > 0
    assert rec["state_bytes_per_device"] == rec["state_bytes"] > rec["param_bytes"]
    assert rec["batch_bytes_per_device"] * 4 == rec["batch_bytes"] == 8 * 16**3 * (4 + 4)
    # XLA's per-device buffer plan: the arguments hold that chip's state and batch shard (and
    # the key; TPU layouts pad small arrays to whole tiles); the donated state comes back in
    # place.
    assert rec["argument_bytes"] >= rec["state_bytes_per_device"] + rec["batch_bytes_per_device"]
    assert rec["alias_bytes"] > 0.9 * rec["state_bytes_per_device"]
    assert rec["planned_bytes"] == (rec["temp_bytes"] + rec["argument_bytes"]
                                    + rec["output_bytes"] - rec["alias_bytes"])
    assert rec["memory_bytes"] == 16 * 2**30 and rec["fits"]
    # Data parallel: the gradients are summed over the chips.
    assert rec["collectives"].get("all-reduce", 0) > 0
    assert rec["healthy"] and rec["dilated_volume"] == [] and rec["convolutions"] > 20
    assert rec["flops"] > 0 and rec["grad_accum_steps"] == 2 and rec["remat"]
    # The validation pass samples the profile's evaluation batch of 4 split over the 4 chips:
    # one volume (16**3 float32 voxels) per chip, as the trial places it.
    assert val["status"] == "ok", val.get("error")
    assert val["eval_batch_size"] == 4 and val["program"] == "validation"
    assert val["batch_bytes_per_device"] * 4 == val["batch_bytes"] == 4 * 16**3 * 4
    assert val["param_bytes_per_device"] == val["param_bytes"] > 0


def test_without_libtpu_the_error_gives_the_install_command():
    env = {**os.environ, **tpu.DEVICELESS_ENV, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", "from diffseg3d.experiments.gpu_plan import "
                          "tpu; tpu.mesh('v5e_2x2')"], env=env, capture_output=True, text=True,
                         timeout=120)
    if out.returncode == 0:
        pytest.skip("libtpu is installed in this environment itself")
    assert "make gpu-plan-deps" in out.stderr and tpu.libtpu_requirement() in out.stderr
    assert tpu.libtpu_requirement().startswith("libtpu==")
