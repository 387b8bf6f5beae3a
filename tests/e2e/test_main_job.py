"""The main job end to end, as a user runs it: `make ablations` with the smoke profile and Table
1's shipped grid into a temporary folder, stopped by a fault after the second trial's first
checkpoint, then the same `make ablations` again: it resumes, and writes the tables.

The stop is deterministic: the trainable's fault hook (DIFFSEG3D_FAULT_KILL_TRIAL) SIGKILLs the
named trial's worker right after Tune accepted its first checkpoint, and MAX_FAILURES=0 forbids
a retry within the run, so the first run always ends with one trial finished and one stopped at
its checkpoint (max-concurrent 1: the trials run in grid order), and the second always resumes.

Real processes only: make, the CLI, a local Ray started by the driver, SQLite MLflow.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GRID = "table1_recycling"  # shipped grid: recycling N/Y; with DATA, 2 trials
TRIALS = (
    "phantom_diffusion_x0_recycle-N_dice-Y_k5_s0",
    "phantom_diffusion_x0_recycle-Y_dice-Y_k5_s0",
)
STOPPED = TRIALS[1]
SMOKE_LOG_STEPS = [5, 10, 15, 20]  # smoke profile: 20 steps, log every 5, checkpoint every 10
#: A hang guard, not a speed check: one `make ablations` of this test ran past 20 minutes on a
#: heavily loaded 2-core machine.
MAKE_LIMIT_S = 3000


def _env(markers: Path) -> dict:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0",
               DIFFSEG3D_FAULT_KILL_TRIAL=STOPPED, DIFFSEG3D_FAULT_MARKER_DIR=str(markers))
    # The local path: ablate starts its own Ray (token auth on); make derives the store from OUT.
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "MLFLOW_TRACKING_URI", "MAKEFLAGS", "MFLAGS",
                "MAKELEVEL"):
        env.pop(key, None)
    return env


def _make_ablations(tmp_path: Path, data: Path, env: dict) -> subprocess.CompletedProcess:
    """`make ablations` of this checkout with the knobs of a user's small run; the venv running
    the tests is the one make uses (`-o` its install stamp: never reinstalled here). Its own
    process group: past the (generous, load-independent) limit, the whole job, Ray included,
    gets Ctrl-C and then SIGKILL, so nothing outlives the test."""
    venv = Path(sys.prefix)
    cmd = ["make", "-C", str(REPO), "-o", str(venv / ".installed"), "ablations",
           f"VENV={venv}", "PROFILE=smoke", f"GRID=experiments/grids/{GRID}.yaml",
           f"PHANTOM={data}", f"DATA={data}", f"OUT={tmp_path / 'runs'}",
           f"RESULTS={tmp_path / 'results'}", "MAX_CONCURRENT=1", "MAX_FAILURES=0"]
    # No EXPERIMENT: make names the experiment and results/<experiment> after the grid's name.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=MAKE_LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):  # the group may be gone already
                os.killpg(proc.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _trial_runs(client: MlflowClient) -> dict:
    exp = client.get_experiment_by_name(GRID)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return {r.data.tags["diffseg3d.trial"]: r for r in runs
            if r.data.tags.get("diffseg3d.kind") == "trial"}


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _last_result(experiment_dir: Path, trial: str) -> dict:
    return json.loads((experiment_dir / trial / "result.json").read_text().splitlines()[-1])


@pytest.mark.timeout(7200)
def test_make_ablations_stopped_after_a_checkpoint_resumes_and_writes_the_tables(tmp_path):
    data, markers = tmp_path / "phantom", tmp_path / "markers"
    env = _env(markers)
    subprocess.run(
        [str(BIN / "diffseg3d"), "data", "phantom", "--out", str(data), "--cases", "6",
         "--shape", "16", "16", "8"],
        env=env, check=True, capture_output=True, timeout=300,
    )

    # First run: the stopped trial ends the run with an error; make stops before the tables.
    first = _make_ablations(tmp_path, data, env)
    log = first.stdout[-3000:] + first.stderr[-3000:]
    assert first.returncode != 0, log
    assert (markers / f"{STOPPED}.killed").is_file(), "the fault hook never fired:\n" + log
    assert "1 of 2 trials finished" in first.stdout, log
    assert not (tmp_path / "results").exists()
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    before = _trial_runs(client)
    assert before[TRIALS[0]].info.status == "FINISHED"
    assert before[STOPPED].info.status != "FINISHED"
    assert _steps(client, before[STOPPED].info.run_id, "loss") == [5, 10]  # up to checkpoint 1
    (experiment_dir,) = (tmp_path / "runs" / "ray_results").glob(f"{GRID}_*")
    finished_result = (experiment_dir / TRIALS[0] / "result.json").read_text()

    # Second run, the same command: the finished trial is left alone, the stopped one continues
    # from its checkpoint in the same MLflow run, then the tables.
    second = _make_ablations(tmp_path, data, env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "2 of 2 trials finished" in second.stdout
    after = _trial_runs(client)
    assert sorted(after) == sorted(TRIALS)  # one run each
    assert all(r.info.status == "FINISHED" for r in after.values())
    assert after[TRIALS[0]].info.end_time == before[TRIALS[0]].info.end_time  # never reopened
    assert (experiment_dir / TRIALS[0] / "result.json").read_text() == finished_result
    assert after[STOPPED].info.run_id == before[STOPPED].info.run_id
    assert _steps(client, after[STOPPED].info.run_id, "loss") == SMOKE_LOG_STEPS  # each once
    last = _last_result(experiment_dir, STOPPED)
    assert (last["step"], last["training_iteration"], last["iterations_since_restore"]) == (
        20, 2, 1)  # restored from the step-10 checkpoint, then one more report
    manifest = json.loads((experiment_dir / "diffseg3d_grid.json").read_text())
    assert {r.data.tags["mlflow.parentRunId"] for r in after.values()} == {
        manifest["parent_run_id"]}

    # The tables of make's second step, from these runs.
    results = tmp_path / "results" / GRID
    table1 = (results / "table1_recycling.tex").read_text()
    assert "\\toprule" in table1 and "phantom" in table1.lower()
    summary = (results / "summary.md").read_text()
    assert "recycl" in summary.lower()
