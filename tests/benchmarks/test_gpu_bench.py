"""The GPU benchmark harness of #10 (`benchmarks/gpu_bench.py`, `benchmarks/gpu/`,
`benchmarks/hlo_summary.py`), checked on the CPU: the small mode's output keys, a part killed at
its time limit while the next still runs, the budget's honest skips, the HLO summary on a
GPU-style snippet and on a real XLA:CPU dump, and `--record-unmeasured` (nulls, never numbers).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import gpu_bench
from benchmarks.gpu import external, figures
from benchmarks.gpu.child import RESULT_PREFIX
from benchmarks.gpu.plan import PARTS, GpuConfig, plan
from benchmarks.gpu.runner import run_all
from benchmarks.hlo_summary import summarise_dir, summarise_text

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


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> dict:
    """forward killed by a 1 s limit (importing jax alone takes longer), step_b1 and the paper
    profile's step after it."""
    return _bench(tmp_path_factory.mktemp("small"), "--only", "forward", "step_b1",
                  "paper_step", "--timeout", "forward=1")


def test_small_mode_writes_every_required_key_and_says_small(small_run):
    missing = [k for k in figures.REQUIRED_KEYS if k not in small_run]
    assert not missing
    assert small_run["small"] is True
    assert small_run["targets"] is None  # rehearsal figures get no pass/fail
    assert small_run["device"] == "cpu"
    assert small_run["versions"]["jax"] and small_run["versions"]["python"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", small_run["measured_at"])


def test_part_past_its_limit_is_recorded_as_timeout_and_the_next_still_runs(small_run):
    by_name = {r["name"]: r for r in small_run["records"]}
    forward, step = by_name["forward_256x256x48_b1"], by_name["step_256x256x48_b1"]
    assert forward["status"] == "timeout"
    assert forward["timeout_s"] == 1.0 and "1 s limit" in forward["error"]
    assert forward["wall_s"] < 30  # killed, not waited for
    assert step["status"] == "ok" and step["step_s"] > 0 and step["compile_s"] > 0
    assert step["backend"] == "cpu" and step["device_peak_gib"] is None
    assert small_run["step_over_forward_256x256x48"] is None
    assert "timeout" in small_run["figure_notes"]["step_over_forward_256x256x48"]


def test_small_mode_runs_the_paper_profile_step_as_the_profile_builds_it(small_run):
    paper = {r["name"]: r for r in small_run["records"]}["paper_step"]
    assert paper["status"] == "ok", paper.get("error")
    assert paper["step_s"] > 0 and paper["accum_field"] == "train.grad_accum_steps"
    assert paper["accum"] == 2  # gcd of the profile's 8 microbatches and the batch of 2


def test_budget_too_small_to_start_skips_every_part_with_the_reason(tmp_path):
    result = _bench(tmp_path, "--only", "forward", "paper_step", "--budget-s", "5",
                    "--min-start-s", "10", timeout=60)
    assert [r["status"] for r in result["records"]] == ["skipped", "skipped"]
    assert all("time budget" in r["error"] for r in result["records"])
    assert result["paper_step_s"] is None and result["step_over_forward_256x256x48"] is None


def test_budget_spent_by_the_first_configuration_skips_the_rest():
    configs = plan(("forward", "step_b1", "paper_step"), small=True)
    now = [0.0]
    seen = []

    def run(cfg, timeout_s, log_dir):
        seen.append((cfg.name, timeout_s))
        now[0] += 70.0  # this configuration took 70 s of the 100 s budget
        return {"name": cfg.name, "part": cfg.part, "status": "ok", "step_s": 1.0}

    records = run_all(configs, 100.0, Path("unused"), min_start_s=20.0, clock=lambda: now[0],
                      run=run)
    # The second gets only the 30 s left, not its own 90 s limit; the third cannot start.
    assert seen == [(configs[0].name, 90.0), (configs[1].name, 30.0)]
    assert [r["status"] for r in records] == ["ok", "ok", "skipped"]
    assert "0 s of 100 s left" in records[2]["error"]


def test_record_unmeasured_writes_nulls_and_never_numbers(tmp_path):
    out = tmp_path / "gpu_latest.json"
    gpu_bench.main(["--record-unmeasured", "no GPU in the session of 2026-11-29",
                    "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["unmeasured"] == "no GPU in the session of 2026-11-29"
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
        gpu_bench.main(["--only", "forward", "--out", os.devnull])


# --------------------------------------------------------------------------------------------
# Plan, figures, targets (pure)


def test_plan_runs_parts_in_priority_order_with_variants_and_limits():
    configs = plan(accum=(2, 3), monai_batch=2, timeouts={"paper_step": 300, "forward": 60})
    assert [c.part for c in configs] == sorted((c.part for c in configs), key=PARTS.index)
    names = [c.name for c in configs]
    # 8 is not a multiple of 3: no accum3 variant; ours at the MONAI batch of 2 is added.
    assert "paper_step" in names and "paper_step_accum2" in names
    assert "paper_step_accum3" not in names
    assert {"monai_plain_256x256x48_b2", "ours_plain_256x256x48_b2",
            "ours_recycling_256x256x48_b2", "monai_recycling_256x256x48_b2"} <= set(names)
    by = {c.name: c for c in configs}
    assert by["paper_step"].batch == 8 and by["paper_step"].accum == 0
    assert by["paper_step_accum2"].timeout_s == 300 and by["forward_256x256x48_b1"].timeout_s == 60
    assert by["amos_step"].size == (192, 128, 128) and by["amos_step"].num_classes == 16
    assert GpuConfig.from_json(by["paper_step_accum2"].to_json()) == by["paper_step_accum2"]
    with pytest.raises(ValueError, match="multiple of accum"):
        GpuConfig("x", "paper_step", "profile_step", batch=8, accum=3)


def _rec(name, part, kind, step_s, **kw):
    return {"name": name, "part": part, "kind": kind, "status": "ok", "step_s": step_s,
            "size": [256, 256, 48], "batch": 1, **kw}


def test_figures_pair_monai_with_ours_at_its_size_and_batch_and_pick_the_profile_step():
    records = [
        _rec("forward", "forward", "forward", 0.02),
        _rec("step", "step_b1", "step", 0.07, recycling=False),
        {"name": "paper_step", "part": "paper_step", "kind": "profile_step", "status": "oom",
         "error": "exit 1: RESOURCE_EXHAUSTED"},
        _rec("paper_step_accum2", "paper_step", "profile_step", 0.6, init_s=20.0, compile_s=30.0,
             device_peak_gib=40.0, accum_forced=True, batch=8),
        _rec("monai", "monai_plain", "monai", 0.14),
        _rec("ours_rec", "recycling", "step", 0.1, recycling=True),
        _rec("monai_rec", "monai_recycling", "monai", 0.15),
        _rec("amos", "amos_step", "profile_step", 0.8, init_s=1.0, compile_s=1.0,
             accum_forced=False, size=[192, 128, 128], batch=8),
        {"name": "test_gpu", "part": "test_gpu", "kind": "pytest", "status": "ok",
         "passed": 168, "failed": 1, "errors": 0, "skipped": 2},
    ]
    figs, notes = figures.figures(records)
    assert figs["step_over_forward_256x256x48"] == pytest.approx(3.5)
    assert figs["paper_step_config"] == "paper_step_accum2"  # the profile as is ran out of memory
    assert figs["paper_compile_s"] == pytest.approx(50.0) and figs["paper_peak_gib"] == 40.0
    assert figs["monai_over_ours_256x256x48"] == pytest.approx(2.0)
    assert figs["monai_over_ours_recycling_256x256x48"] == pytest.approx(1.5)
    assert figs["amos_step_s"] == 0.8 and figs["monai_over_ours_192x128x128"] is None
    assert "monai_amos not run" in notes["monai_over_ours_192x128x128"]
    t = figures.targets({**figs, "bench_wall_s": 500.0})
    assert t["step_over_forward_256x256x48"]["pass"] is True
    assert t["paper_step_s"]["pass"] is True and t["paper_compile_s"]["pass"] is True
    assert t["bench_wall_s"]["pass"] is False and t["monai_over_ours_192x128x128"]["pass"] is None
    assert t["test_gpu"]["pass"] is False  # one failure


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
    from benchmarks.measure import RESULT_PREFIX as MEASURE_PREFIX

    assert RESULT_PREFIX == MEASURE_PREFIX


# --------------------------------------------------------------------------------------------
# HLO summary

#: A hand-written optimized module in XLA:GPU's syntax: cuDNN conv custom calls (forward, input
#: and filter gradients), a cuBLAS gemm, a Triton gemm fusion, and one plain convolution left
#: inside a fusion (the fallback the summary must flag).
GPU_SNIPPET = (Path(__file__).parent / "gpu_hlo_snippet.txt").read_text()


def test_hlo_summary_counts_cudnn_conv_custom_calls_and_the_plain_fallback():
    s = summarise_text(GPU_SNIPPET)
    assert s["convolutions"] == {
        "plain": 1, "total": 5,
        "custom_call": {"__cudnn$convForward": 1, "__cudnn$convBackwardInput": 1,
                        "__cudnn$convBackwardFilter": 2},
    }
    assert s["custom_calls"]["__cublas$gemm"] == 1
    assert s["fusions"] == {"kLoop": 1, "__triton_gemm": 1}
    by_name = {c["name"]: c for c in s["convs"]}
    fwd = by_name["cudnn-conv.1"]
    assert fwd["dtype"] == "bf16" and fwd["shape"] == [1, 32, 8, 8, 4] and fwd["in_entry"]
    assert fwd["window"] == "size=3x3x3 pad=1_1x1_1x1_1"
    assert fwd["dim_labels"] == "bf012_oi012->bf012"
    assert fwd["operand_shapes"] == [[1, 32, 8, 8, 4], [32, 32, 3, 3, 3]]
    # Operands printed without types take their shapes from their definitions.
    assert by_name["cudnn-conv-bw-input.2"]["operand_shapes"] == [[1, 32, 8, 8, 4],
                                                                  [32, 32, 3, 3, 3]]
    assert by_name["cudnn-conv-bw-filter.4"]["window"] == "size=4x4x2 stride=2x2x2"
    plain = by_name["convolution.9"]
    assert plain["form"] == "plain" and plain["computation"] == "fused_computation.2"
    assert not plain["in_entry"] and plain["dtype"] == "f32"
    assert "lhs_dilate=2x2x2" in plain["window"] and "transpose(" in plain["op_name"]
    assert s["plain_by_window"] == {"size=3x3x3 pad=1_1x1_1x1_1 lhs_dilate=2x2x2": 1}


def test_hlo_summary_finds_the_plain_convolutions_of_a_real_cpu_dump(tmp_path):
    program = textwrap.dedent("""
        import jax, jax.numpy as jnp
        from jax import lax
        def train_step(x, w, w2):
            def loss(x, w, w2):
                dn = ("NDHWC", "DHWIO", "NDHWC")
                y = lax.conv_general_dilated(x, w, (1, 1, 1), "SAME", dimension_numbers=dn)
                z = lax.conv_general_dilated(y, w2, (2, 2, 2), "VALID", dimension_numbers=dn)
                return jnp.sum(z ** 2)
            return jax.grad(loss, argnums=(0, 1, 2))(x, w, w2)
        args = (jnp.ones((1, 8, 8, 4, 3)), jnp.ones((3, 3, 3, 3, 5)), jnp.ones((2, 2, 2, 5, 6)))
        jax.jit(train_step).lower(*args).compile()
        """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_dump_to={tmp_path} --xla_dump_hlo_as_text "
                        "--xla_dump_hlo_module_re=jit_train_step"}
    subprocess.run([sys.executable, "-c", program], env=env, check=True, timeout=120)
    s = summarise_dir(tmp_path, "jit_train_step")
    assert s["file"].endswith("after_optimizations.txt") and "jit_train_step" in s["file"]
    # Two forward convs and, for each, the input and the filter gradient; XLA:CPU keeps every
    # one a plain convolution (no custom call).
    assert s["convolutions"]["plain"] == s["convolutions"]["total"] >= 5
    assert s["convolutions"]["custom_call"] == {}
    windows = [c["window"] for c in s["convs"]]
    assert "size=2x2x2 stride=2x2x2" in windows
    assert any("lhs_dilate=2x2x2" in w for w in windows)  # input gradient of the strided conv
    assert all(c["dtype"] == "f32" and len(c["shape"]) == 5 for c in s["convs"])
    with pytest.raises(ValueError, match="no \\*after_optimizations"):
        summarise_dir(tmp_path, "no_such_module")


@pytest.mark.parametrize(("small", "batch", "accum", "expected"),
                         [(True, 2, 0, 2), (False, 8, 0, 8), (False, 8, 2, 2), (True, 2, 1, 1)])
def test_profile_step_config_validates_as_the_profile_sets_it(small, batch, accum, expected):
    # The paper profile's 8 microbatches meet the rehearsal's batch of 2 (gcd), forced variants
    # replace them; every result is a valid Config (a batch they do not divide is an error).
    from benchmarks.gpu.jax_steps import ACCUM_FIELD, profile_config

    cfg = GpuConfig("paper_step", "paper_step", "profile_step", batch=batch, accum=accum,
                    small=small, channels=(4, 8) if small else (32, 64, 128, 256))
    config, field_name = profile_config(cfg)
    assert field_name == ACCUM_FIELD == "train.grad_accum_steps"
    assert config.data.batch_size == batch
    assert config.train.grad_accum_steps == expected
