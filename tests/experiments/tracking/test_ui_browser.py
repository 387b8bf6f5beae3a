"""The MLflow UI as a researcher opens it after `make ablations` and `make ui`, in a real browser.

A smoke grid (`table1_recycling` on a tiny phantom: real Ray, SQLite store, the CLI in
subprocesses), `diffseg3d tables`, then the UI started as `make ui` starts it (`ui_server` on
127.0.0.1, a free port) and Debian's headless Chromium driven by Selenium (chromedriver from the
`chromium-driver` package; nothing is downloaded). The page is read as a user reads it: the link
`make ui` prints opens the runs table (no GenAI overview), the parent run expanded shows every
trial with its axes, data set and test Dice, and the model page shows the trial's logged model.

Screenshots go to `$DIFFSEG3D_SCREENSHOTS` (created) or the test's temporary folder; their
paths are printed.
"""

from __future__ import annotations

import importlib.util
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from diffseg3d.experiments.tracking.trial_axes import AXIS_TAGS
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

BIN = Path(sys.executable).parent
GRID = "table1_recycling"  # two trials that differ in one axis (recycling)
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: Seconds the page may take to show what is waited for (the UI's first load on a busy machine).
PAGE_WAIT_S = 300
#: Texts of MLflow's GenAI experiment overview (the page an unmarked experiment opens on).
GENAI_PANELS = ("Token Usage", "Tokens per Trace", "Cost Breakdown")


def _require_browser() -> None:
    """Skip (elsewhere) or fail (CI=true: `.ci/run` installs them) without the browser."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium")
    if not missing:
        return
    message = f"missing {', '.join(missing)}: apt-get install chromium chromium-driver; " \
              'pip install -e ".[dev]"'
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _run(args: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[:3]}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> dict:
    """The smoke grid and its tables in a fresh store: {uri, experiment_id, parent, trials}."""
    _require_browser()
    root = tmp_path_factory.mktemp("ui_grid")
    out, data = root / "runs", root / "phantom"
    uri = f"sqlite:///{out / 'mlflow.db'}"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", MLFLOW_TRACKING_URI=uri)
    env.pop("RAY_ADDRESS", None)
    cli = str(BIN / "diffseg3d")
    _run([cli, "data", "phantom", "--out", str(data), "--cases", "6", "--shape", "16", "16",
          "8"], env, 600)
    _run([cli, "ablate", GRID, "--profile", "smoke", "--data", str(data), "--out", str(out),
          "--max-concurrent", "2"], env, 1800)
    _run([cli, "tables", "--experiment", GRID, "--out", str(root / "results"),
          "--no-figures-from-mlflow"], env, 600)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(GRID)
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("diffseg3d.kind") == "grid"]
    trials = [r for r in runs if r.data.tags.get("diffseg3d.kind") == "trial"]
    assert len(trials) == 2
    return {"uri": uri, "experiment_id": experiment.experiment_id, "parent": parent,
            "trials": trials}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ui(grid):
    """The UI as `make ui` starts it; yields the link it printed for the grid's experiment."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "diffseg3d.experiments.tracking.ui_server",
         "--backend-store-uri", grid["uri"], "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        link = None
        for line in server.stdout:
            if line.strip().startswith(f"{GRID}: "):
                link = line.split(": ", 1)[1].strip()
                break
        assert link is not None, "make ui printed no link for the grid's experiment"
        deadline = time.monotonic() + PAGE_WAIT_S
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, "mlflow ui exited"
                assert time.monotonic() < deadline, "mlflow ui did not answer"
                time.sleep(0.5)
        yield link
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("DIFFSEG3D_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=2560,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _cell(driver, run_id: str, column: str):
    """The runs table's cell of `run_id` in column `column` (MLflow's column id)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    locator = (By.CSS_SELECTOR, f'[row-id="{run_id}"] [col-id="{column}"]')
    return WebDriverWait(driver, PAGE_WAIT_S).until(ec.presence_of_element_located(locator))


def _save(driver, shots: Path, name: str) -> Path:
    path = shots / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def test_runs_table_compares_the_trials_at_first_sight(grid, ui, browser, shots):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(ui)
    parent = grid["parent"].info.run_id
    expand = (By.CSS_SELECTOR, f'[row-id="{parent}"] [col-id="attributes.`Run Name`"] button')
    try:
        button = WebDriverWait(browser, PAGE_WAIT_S).until(
            lambda d: next(iter(d.find_elements(*expand)), None))
    except TimeoutException:
        _save(browser, shots, "mlflow_opened_instead.png")  # what opened instead
        raise
    assert "/runs" in browser.current_url
    page = browser.find_element(By.TAG_NAME, "body").text
    assert not [t for t in GENAI_PANELS if t in page], "the GenAI overview opened"
    button.click()  # the one click: expand the grid's parent run
    for trial in grid["trials"]:
        run_id, tags = trial.info.run_id, trial.data.tags
        name = _cell(browser, run_id, "attributes.`Run Name`")
        WebDriverWait(browser, PAGE_WAIT_S).until(lambda d, c=name: c.text.strip())
        assert trial.info.run_name in name.text
        for key in AXIS_TAGS:
            assert _cell(browser, run_id, f"tags.`{key}`").text.strip() == tags[key]
        shown = float(_cell(browser, run_id, "metrics.`test_dice`").text.strip())
        assert math.isclose(shown, trial.data.metrics["test_dice"], rel_tol=1e-6)
        (data_input,) = trial.inputs.dataset_inputs
        dataset = _cell(browser, run_id, "attributes.`Dataset`").text
        assert "phantom" in dataset and data_input.dataset.digest in dataset
        assert "model" in _cell(browser, run_id, "attributes.`Models`").text
    recycling = {t.data.tags["axis.recycling"] for t in grid["trials"]}
    assert recycling == {"yes", "no"}
    path = _save(browser, shots, "mlflow_runs.png")
    assert path.stat().st_size > 10_000


def test_model_page_shows_the_trials_logged_model(grid, ui, browser, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    trial = grid["trials"][0]
    (output,) = trial.outputs.model_outputs
    base = ui.split("#", 1)[0]
    browser.get(f"{base}#/experiments/{grid['experiment_id']}/models/{output.model_id}"
                "?workflowType=machine_learning")
    expected = (trial.info.run_name, output.model_id, "test_dice")  # source run, id, metrics
    try:  # the page fills in as its requests return
        WebDriverWait(browser, PAGE_WAIT_S).until(
            lambda d: all(t in d.find_element(By.TAG_NAME, "body").text for t in expected))
    finally:
        _save(browser, shots, "mlflow_model.png")


def test_an_unmarked_experiment_link_opens_mlflows_default_page(grid):
    """Without the experiment-kind tag the link is MLflow's plain experiment link (the UI's
    GenAI default), so the runs-table checks above depend on the tag."""
    from diffseg3d.experiments.tracking.ui_view import TAG_EXPERIMENT_KIND, experiment_url

    client = MlflowClient(grid["uri"])
    tags = dict(client.get_experiment(grid["experiment_id"]).tags)
    assert tags[TAG_EXPERIMENT_KIND] == "custom_model_development"
    assert "/runs?workflowType=machine_learning" in experiment_url("http://h", "1", tags)
    del tags[TAG_EXPERIMENT_KIND]
    assert experiment_url("http://h", "1", tags) == "http://h/#/experiments/1"


def test_parent_run_carries_the_trials_table_and_the_report(grid):
    import json

    client = MlflowClient(grid["uri"])
    parent = grid["parent"].info.run_id
    files = {f.path for f in client.list_artifacts(parent)}
    assert "trials.json" in files
    table = json.loads(Path(client.download_artifacts(parent, "trials.json")).read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    by_trial = {row["trial"]: row for row in rows}
    for trial in grid["trials"]:
        row = by_trial[trial.info.run_name]
        assert row["recycling"] == trial.data.tags["axis.recycling"]
        assert math.isclose(row["test_dice"], trial.data.metrics["test_dice"], abs_tol=1e-4)
        assert row["run_id"] == trial.info.run_id
    logged = json.loads(client.get_run(parent).data.tags["mlflow.loggedArtifacts"])
    assert {"path": "trials.json", "type": "table"} in logged
    report = {f.path for f in client.list_artifacts(parent, "tables")}
    assert "tables/summary.md" in report and "tables/table1_recycling.tex" in report
