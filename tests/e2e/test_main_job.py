"""The main job end to end with the real CLI, on the smoke profile: phantom -> `diffseg3d ablate`
(Ctrl-C'd after its first trial finished, then rerun) -> MLflow runs -> `diffseg3d tables`.

Real processes only: the CLI in subprocesses, a local Ray started by the driver, SQLite MLflow.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
GRID = "table1_recycling"  # shipped grid: recycling N/Y; with --data, 2 trials
TRIALS = (
    "phantom_diffusion_x0_recycle-N_dice-Y_k5_s0",
    "phantom_diffusion_x0_recycle-Y_dice-Y_k5_s0",
)


def _env(out: Path) -> dict:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)  # the local path: ablate starts its own Ray (token auth on)
    env.pop("RAY_AUTH_MODE", None)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{out / 'mlflow.db'}"
    return env


def _trial_runs(client: MlflowClient) -> list:
    exp = client.get_experiment_by_name(GRID)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return [r for r in runs if r.data.tags.get("diffseg3d.kind") == "trial"]


def _tune_states(experiment_dir: Path) -> dict[str, str]:
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(experiment_dir))
    return {t.config["trial"]: t.status for t in analysis.trials}


@pytest.mark.timeout(1200)
def test_phantom_ablate_interrupt_rerun_tables(tmp_path):
    data, out, results = tmp_path / "phantom", tmp_path / "runs", tmp_path / "results"
    out.mkdir()
    env = _env(out)
    subprocess.run(
        [str(BIN / "diffseg3d"), "data", "phantom", "--out", str(data), "--cases", "6",
         "--shape", "16", "16", "8"],
        env=env, check=True, capture_output=True, timeout=300,
    )
    ablate = [str(BIN / "diffseg3d"), "ablate", GRID, "--profile", "smoke", "--data", str(data),
              "--out", str(out), "--max-concurrent", "1"]

    # First run: Ctrl-C once the first trial's MLflow run is FINISHED.
    log = (tmp_path / "first.log").open("w")
    driver = subprocess.Popen(ablate, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    deadline = time.monotonic() + 900
    finished = []
    while not finished and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(2)
        if (out / "mlflow.db").exists():
            finished = [r for r in _trial_runs(client) if r.info.status == "FINISHED"]
    assert finished, f"no trial finished; driver rc={driver.poll()}:\n" + (
        tmp_path / "first.log").read_text()[-3000:]
    driver.send_signal(signal.SIGINT)
    first_rc = driver.wait(timeout=300)
    first_done = {r.data.tags["diffseg3d.trial"]: r for r in _trial_runs(client)
                  if r.info.status == "FINISHED"}

    (experiment_dir,) = (out / "ray_results").glob(f"{GRID}_*")  # <grid>_<expansion hash>
    states = _tune_states(experiment_dir)
    assert len(first_done) >= 1
    for name in first_done:
        assert states[name] == "TERMINATED"
    result_json = {n: (experiment_dir / n / "result.json").read_text() for n in first_done}
    if len(first_done) < len(TRIALS):
        assert first_rc != 0  # interrupted trials are reported, never silently dropped

    # Rerun the same command: restores the Tune experiment, finishes the rest only.
    second = subprocess.run(ablate, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "2 of 2 trials finished" in second.stdout
    assert set(_tune_states(experiment_dir).values()) == {"TERMINATED"}

    runs = _trial_runs(client)
    assert sorted(r.data.tags["diffseg3d.trial"] for r in runs) == sorted(TRIALS)  # one each
    assert all(r.info.status == "FINISHED" for r in runs)
    for name, run in first_done.items():
        again = next(r for r in runs if r.data.tags["diffseg3d.trial"] == name)
        assert again.info.run_id == run.info.run_id
        assert again.info.end_time == run.info.end_time  # never reopened
        assert (experiment_dir / name / "result.json").read_text() == result_json[name]
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1
    manifest = json.loads((experiment_dir / "diffseg3d_grid.json").read_text())
    assert parents == {manifest["parent_run_id"]}

    # Tables from the MLflow runs.
    tables = subprocess.run(
        [str(BIN / "diffseg3d"), "tables", "--experiment", GRID, "--out", str(results),
         "--tracking-uri", env["MLFLOW_TRACKING_URI"], "--no-figures-from-mlflow"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert tables.returncode == 0, tables.stdout[-2000:] + tables.stderr[-2000:]
    table1 = (results / "table1_recycling.tex").read_text()
    assert "\\toprule" in table1 and "phantom" in table1.lower()
    assert (results / "summary.md").is_file()
