"""The GPU benchmark harness (`benchmarks/gpu_bench.py`, `benchmarks/gpu/`), checked on the CPU:
the plan's order and its estimate of the GPU run, the small mode's output keys, a step killed
at its time limit while the next still runs (and its HLO then compiled for the summary), the
budget's honest skips, the figures and targets, and `--record-unmeasured` (nulls, never
numbers). The HLO summary has its own tests (`test_hlo_summary.py`).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_bench
from benchmarks.gpu import external, figures
from benchmarks.gpu.child import RESULT_PREFIX
from benchmarks.gpu.plan import (
    BUDGET_S,
    GPU_FORM,
    PAPER_ACCUM,
    PARTS,
    SMALL_TIMEOUT_S,
    GpuConfig,
    estimate,
    plan,
)
from benchmarks.gpu.runner import child_outcome, run_all

REPO = Path(__file__).resolve().parents[2]


def _bench(tmp_path: Path, *args: str, timeout: float = 240) -> dict:
    """Run ``python -m benchmarks.gpu_bench --small ARGS`` as the Makefile does; its JSON."""
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_bench", "--small", "--out", str(out),
         "--log-dir", str(tmp_path / "logs"), *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


# --------------------------------------------------------------------------------------------
# Runs of the command (real subprocesses, real jax)


LAX3D_STEP = "step_256x256x48_b1_lax3d"
PICK_STEP = f"step_256x256x48_b1_{GPU_FORM}"


#: The lax3d step's limit: a child cannot even start Python in 10 ms, so it is always killed,
#: on any machine.
KILL_LIMIT_S = 0.01


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> dict:
    """The batch-1 steps, the lax3d one killed by its `KILL_LIMIT_S` limit, the HLO summaries
    of both, and the paper profile's step after them."""
    return _bench(tmp_path_factory.mktemp("small"), "--only", "step_b1", "hlo", "paper_step",
                  "--timeout", f"{LAX3D_STEP}={KILL_LIMIT_S}", timeout=400)


@pytest.mark.slow
def test_small_mode_writes_every_required_key_and_says_small(small_run):
    missing = [k for k in figures.REQUIRED_KEYS if k not in small_run]
    assert not missing
    assert small_run["small"] is True
    assert small_run["targets"] is None  # rehearsal figures get no pass/fail
    assert small_run["device"] == "cpu"
    assert small_run["versions"]["jax"] and small_run["versions"]["python"]
    assert small_run["versions"]["jaxlib"] and "cuda_plugins" in small_run["versions"]
    assert small_run["versions"]["cuda"]["jax_plugin"] is None  # no CUDA plugin on the CPU
    assert 0 < small_run["estimated_gpu_run_s"] <= BUDGET_S
    assert small_run["compilation_cache"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", small_run["measured_at"])


@pytest.mark.slow
def test_step_past_its_limit_is_recorded_as_timeout_and_the_next_still_runs(small_run):
    by_name = {r["name"]: r for r in small_run["records"]}
    killed, step = by_name[LAX3D_STEP], by_name[PICK_STEP]
    assert killed["status"] == "timeout"
    assert killed["timeout_s"] == KILL_LIMIT_S and "s limit" in killed["error"]
    # Killed, not waited for: shorter than the complete step of the same size that ran next on
    # the same machine (a clock comparison under the same load, no absolute bound).
    assert killed["wall_s"] < step["wall_s"]
    assert step["status"] == "ok" and step["step_s"] > 0 and step["compile_s"] > 0
    assert step["conv_impl"] == GPU_FORM and step["forward_s"] > 0
    assert step["backend"] == "cpu" and step["device_peak_gib"] is None
    assert small_run["step_over_forward_256x256x48"] == pytest.approx(
        step["step_s"] / step["forward_s"])
    assert small_run["lax3d_over_s2d_step_256x256x48"] is None
    assert "timeout" in small_run["figure_notes"]["lax3d_over_s2d_step_256x256x48"]


@pytest.mark.slow
def test_hlo_summaries_of_both_steps_one_compiled_for_it_after_its_step_timed_out(small_run):
    by_name = {r["name"]: r for r in small_run["records"]}
    pick, old = by_name[f"hlo_{PICK_STEP}"], by_name[f"hlo_{LAX3D_STEP}"]
    assert pick["status"] == old["status"] == "ok"
    assert pick["source"] == "written by the step"
    assert old["source"] == "compiled for the summary"
    assert pick["hlo_summary"]["convolutions"]["total"] > 0
    # On XLA:CPU no conv is cuDNN, so none is flagged; the dilated whole-volume kernel gradient
    # of the (one) transposed up-conv is there in lax3d only.
    assert small_run["hlo_flagged"] == {GPU_FORM: 0, "lax3d": 0}
    assert small_run["hlo_dilated_volume"] == {GPU_FORM: 0, "lax3d": 1}


@pytest.mark.slow
def test_small_mode_runs_the_paper_profile_step_as_the_profile_builds_it(small_run):
    paper = {r["name"]: r for r in small_run["records"]}["paper_step"]
    assert paper["status"] == "ok", paper.get("error")
    assert paper["step_s"] > 0 and paper["accum_field"] == "train.grad_accum_steps"
    assert paper["accum"] == 1  # the profile's batch in one pass


def test_budget_too_small_to_start_skips_every_part_with_the_reason(tmp_path):
    result = _bench(tmp_path, "--only", "step_b1", "paper_step", "--budget-s", "5",
                    "--min-start-s", "10", timeout=60)
    assert [r["status"] for r in result["records"]] == ["skipped"] * 3
    assert all("time budget" in r["error"] for r in result["records"])
    assert result["paper_step_s"] is None and result["step_over_forward_256x256x48"] is None


def test_budget_spent_by_the_first_configuration_skips_the_rest():
    configs = plan(("step_b1", "paper_step"), small=True)
    now = [0.0]
    seen = []

    def run(cfg, timeout_s, log_dir):
        seen.append((cfg.name, timeout_s))
        now[0] += 125.0  # this configuration took 125 s of the 150 s budget
        return {"name": cfg.name, "part": cfg.part, "status": "ok", "step_s": 1.0}

    records = run_all(configs, 150.0, Path("unused"), min_start_s=20.0, clock=lambda: now[0],
                      run=run)
    # The first gets its own limit; the second only the 25 s left; the third cannot start.
    assert SMALL_TIMEOUT_S < 150
    assert seen == [(configs[0].name, SMALL_TIMEOUT_S), (configs[1].name, 25.0)]
    assert [r["status"] for r in records] == ["ok", "ok", "skipped"]
    assert "0 s of 150 s left" in records[2]["error"]


def test_a_process_killed_after_printing_its_record_counts_and_says_so():
    line = RESULT_PREFIX + json.dumps({"step_s": 2.0})
    late = child_outcome({"returncode": None, "timed_out": True, "stdout": f"x\n{line}\n",
                          "stderr": "", "wall_s": 90.4}, 90.0)
    assert late["status"] == "ok" and late["step_s"] == 2.0 and "90 s limit" in late["note"]
    killed = child_outcome({"returncode": None, "timed_out": True, "stdout": "x\n",
                            "stderr": "", "wall_s": 90.4}, 90.0)
    assert killed["status"] == "timeout" and "step_s" not in killed
    crashed = child_outcome({"returncode": 1, "timed_out": False, "stdout": f"{line}\n",
                             "stderr": "RESOURCE_EXHAUSTED: out of memory", "wall_s": 3.0}, 90.0)
    assert crashed["status"] == "oom"  # a non-zero exit is a failure even after a record


def test_record_unmeasured_writes_nulls_and_never_numbers(tmp_path):
    out = tmp_path / "gpu_latest.json"
    gpu_bench.main(["--record-unmeasured", "not measured on a GPU", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["unmeasured"] == "not measured on a GPU"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", result["written_at"])
    for key in (*figures.REQUIRED_KEYS, *figures.TARGETS):
        assert result[key] is None, key
    assert all(t["pass"] is None and t["value"] is None for t in result["targets"].values())

    def numbers(node):
        if isinstance(node, dict):
            return [n for v in node.values() for n in numbers(v)]
        if isinstance(node, list):
            return [n for v in node for n in numbers(v)]
        return [node] if isinstance(node, int | float) and not isinstance(node, bool) else []

    assert numbers(result) == []


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_full_mode_refuses_to_run_without_a_gpu():
    with pytest.raises(SystemExit, match="no NVIDIA GPU"):
        gpu_bench.main(["--only", "step_b1", "--out", os.devnull])


# --------------------------------------------------------------------------------------------
# Plan, figures, targets (pure)


def test_plan_runs_what_decides_first_with_variants_and_limits():
    configs = plan(accum=(2, 3), monai_batch=2, timeouts={"paper_step": 300, "step_b1": 60})
    assert [c.part for c in configs] == sorted((c.part for c in configs), key=PARTS.index)
    assert PARTS[:5] == ("step_b1", "hlo", "conv_updown", "paper_step", "monai_paper")
    # The batch-1 step in the accelerator pick (with a forward pass), then in lax3d; the HLO
    # summaries of those two; the down/up rows of the top three levels.
    assert [(c.name, c.conv_impl) for c in configs[:4]] == [
        (PICK_STEP, GPU_FORM), (LAX3D_STEP, "lax3d"),
        (f"hlo_{PICK_STEP}", GPU_FORM), (f"hlo_{LAX3D_STEP}", "lax3d")]
    assert configs[0].extra["forward"] and not configs[1].extra.get("forward")
    assert configs[2].extra["step"] == PICK_STEP
    assert configs[4].extra == {"kinds": ["down", "up"], "levels": [0, 1, 2]}
    names = [c.name for c in configs]
    # 8 is not a multiple of 3: no accum3 variant; ours at the MONAI batch of 2 is added.
    assert "paper_step" in names and "paper_step_accum2" in names
    assert "paper_step_accum3" not in names
    assert {"monai_plain_256x256x48_b2", "ours_plain_256x256x48_b2",
            "ours_recycling_256x256x48_b2", "monai_recycling_256x256x48_b2"} <= set(names)
    by = {c.name: c for c in configs}
    assert by["paper_step"].batch == 8 and by["paper_step"].accum == 0
    assert by["paper_step_accum2"].timeout_s == 300 and by[PICK_STEP].timeout_s == 60
    monai_paper = by["monai_paper_256x256x48_b8"]
    assert monai_paper.batch == 8 and monai_paper.accum == PAPER_ACCUM
    assert by["ours_recycling_256x256x48_b2"].conv_impl == GPU_FORM
    assert by["amos_step"].size == (192, 128, 128) and by["amos_step"].num_classes == 16
    assert GpuConfig.from_json(by["paper_step_accum2"].to_json()) == by["paper_step_accum2"]
    with pytest.raises(ValueError, match="multiple of accum"):
        GpuConfig("x", "paper_step", "profile_step", batch=8, accum=3)


def test_the_estimated_gpu_run_fits_six_minutes_and_answers_first():
    est = estimate(plan())
    assert est["budget_s"] == BUDGET_S == 360 and 0 < est["total_s"] <= 360
    cum = {name: c for name, _, _, c, _ in est["rows"]}
    # The ratio of the two forms is expected within about two minutes; the paper step and
    # MONAI at its batch fit the budget; the CPU rehearsal plan lists the same parts.
    assert cum[LAX3D_STEP] <= 150
    assert {"paper_step", "monai_paper_256x256x48_b8"}.isdisjoint(est["skipped"])
    assert {c.part for c in plan(small=True)} == set(PARTS)


def _rec(name, part, kind, step_s, **kw):
    return {"name": name, "part": part, "kind": kind, "status": "ok", "step_s": step_s,
            "size": [256, 256, 48], "batch": 1, **kw}


def test_figures_pair_monai_with_ours_at_its_size_and_batch_and_pick_the_profile_step():
    records = [
        _rec("step_pick", "step_b1", "step", 0.07, recycling=False, conv_impl=GPU_FORM,
             forward_s=0.02),
        _rec("step_lax3d", "step_b1", "step", 0.84, recycling=False, conv_impl="lax3d"),
        {"name": "hlo_pick", "part": "hlo", "kind": "hlo", "status": "ok", "conv_impl": GPU_FORM,
         "hlo_summary": {"flagged": [], "dilated_volume": []}},
        {"name": "hlo_lax3d", "part": "hlo", "kind": "hlo", "status": "ok", "conv_impl": "lax3d",
         "hlo_summary": {"flagged": ["a", "b", "c"], "dilated_volume": ["a", "b", "c"]}},
        {"name": "paper_step", "part": "paper_step", "kind": "profile_step", "status": "oom",
         "error": "exit 1: RESOURCE_EXHAUSTED"},
        _rec("paper_step_accum2", "paper_step", "profile_step", 0.6, init_s=20.0, compile_s=30.0,
             device_peak_gib=40.0, accum_forced=True, batch=8),
        _rec("monai_paper", "monai_paper", "monai", 1.2, batch=8),
        _rec("monai", "monai_plain", "monai", 0.14),
        _rec("ours_rec", "recycling", "step", 0.1, recycling=True, conv_impl=GPU_FORM),
        _rec("monai_rec", "monai_recycling", "monai", 0.15),
        _rec("amos", "amos_step", "profile_step", 0.8, init_s=1.0, compile_s=1.0,
             accum_forced=False, size=[192, 128, 128], batch=8),
        {"name": "test_gpu", "part": "test_gpu", "kind": "pytest", "status": "ok",
         "passed": 168, "failed": 1, "errors": 0, "skipped": 2},
    ]
    figs, notes = figures.figures(records)
    assert figs["lax3d_over_s2d_step_256x256x48"] == pytest.approx(12.0)
    assert figs["step_s_256x256x48_b1"] == {GPU_FORM: 0.07, "lax3d": 0.84}
    assert figs["hlo_flagged"] == {GPU_FORM: 0, "lax3d": 3}
    assert figs["step_over_forward_256x256x48"] == pytest.approx(3.5)
    assert figs["monai_over_ours_paper_b8"] == pytest.approx(2.0)
    assert figs["paper_step_config"] == "paper_step_accum2"  # the profile as is ran out of memory
    assert figs["paper_compile_s"] == pytest.approx(50.0) and figs["paper_peak_gib"] == 40.0
    # MONAI at batch 1 pairs with the pick's step, not lax3d's.
    assert figs["monai_over_ours_256x256x48"] == pytest.approx(2.0)
    assert figs["monai_over_ours_recycling_256x256x48"] == pytest.approx(1.5)
    assert figs["amos_step_s"] == 0.8 and figs["monai_over_ours_192x128x128"] is None
    assert "monai_amos not run" in notes["monai_over_ours_192x128x128"]
    t = figures.targets({**figs, "bench_wall_s": 500.0})
    assert t["step_over_forward_256x256x48"]["pass"] is True
    assert t["paper_step_s"]["pass"] is True and t["paper_compile_s"]["pass"] is True
    assert t["bench_wall_s"]["pass"] is False and t["monai_over_ours_192x128x128"]["pass"] is None
    assert t["test_gpu"]["pass"] is False  # one failure
    # 0.9 s misses the H200's 0.75 s and meets the H100's 1.0 s.
    slow = {**figs, "paper_step_s": 0.9}
    assert figures.targets(slow, "NVIDIA H200")["paper_step_s"]["pass"] is False
    assert figures.targets(slow, "NVIDIA H100 80GB HBM3")["paper_step_s"]["pass"] is True


def test_pytest_summary_lines_are_counted():
    assert external.pytest_counts("....\n26 failed, 143 passed in 83.34s (0:01:23)\n") == {
        "passed": 143, "failed": 26, "errors": 0, "skipped": 0}
    line = "==== 1 failed, 10 passed, 2 skipped, 1 error in 3.1s ===="
    assert external.pytest_counts(line) == {"passed": 10, "failed": 1, "errors": 1, "skipped": 2}
    assert external.pytest_counts("collecting ...\nKilled\n") is None


def test_make_test_gpu_runs_what_the_test_gpu_part_runs():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\ntest-gpu:")[1].split("\n\n")[0]
    assert f"JAX_PLATFORMS={external.GPU_PLATFORMS}" in recipe
    assert all(p in recipe for p in external.TEST_PATHS)
    assert "$(STAMP)" not in makefile.split("\nbench-gpu:")[1].split("\n")[0]


def test_child_result_prefix_is_the_one_benchmarks_run_parses():
    from benchmarks.cpu.measure import RESULT_PREFIX as MEASURE_PREFIX

    assert RESULT_PREFIX == MEASURE_PREFIX


# --------------------------------------------------------------------------------------------
# The paper profile's step


@pytest.mark.parametrize(("small", "batch", "accum", "expected"),
                         [(True, 2, 0, 1), (False, 8, 0, 1), (False, 8, 2, 2), (True, 2, 2, 2)])
def test_profile_step_config_validates_as_the_profile_sets_it(small, batch, accum, expected):
    # The paper profile's one pass (gcd with the rehearsal's batch of 2), forced variants
    # replace it; every result is a valid Config (a batch they do not divide is an error).
    from benchmarks.gpu.jax_steps import ACCUM_FIELD, profile_config

    cfg = GpuConfig("paper_step", "paper_step", "profile_step", batch=batch, accum=accum,
                    small=small, channels=(4, 8) if small else (32, 64, 128, 256))
    config, field_name = profile_config(cfg)
    assert field_name == ACCUM_FIELD == "train.grad_accum_steps"
    assert config.data.batch_size == batch
    assert config.train.grad_accum_steps == expected
    if not small and accum == 0:
        assert expected == PAPER_ACCUM  # MONAI's step at the paper batch accumulates as many
