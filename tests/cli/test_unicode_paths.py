"""Folders with spaces and non-ASCII characters work end to end: a phantom written there, a
config file named so, and a trial trained into such a runs folder with its MLflow store and
artifacts inside it."""

from urllib.parse import unquote

import pytest
from diffseg3d.cli.main import main
from mlflow.tracking import MlflowClient


@pytest.mark.slow
def test_train_into_a_runs_folder_with_spaces_and_non_ascii(tmp_path, capsys):
    data = tmp_path / "fantôme data ✓"
    assert main(["data", "phantom", "--out", str(data), "--cases", "4", "--shape", "16", "16",
                 "8"]) == 0
    config = tmp_path / "conf ü.yaml"
    config.write_text("method: unet\n", encoding="utf-8")
    out = tmp_path / "runs é 試験"
    rc = main(["train", str(config), "--profile", "smoke", "--data", str(data), "--out", str(out),
               "--set", "train.steps=4", "--set", "train.eval_every=2",
               "--set", "train.checkpoint_every=2"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert f"sqlite:///{out}/mlflow.db" in printed
    (trial,) = (out / "trials").iterdir()
    assert (trial / "per_case_metrics.csv").is_file()
    run_id = printed.split("MLflow run ")[1].split()[0]
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "test_dice" in run.data.metrics
    assert unquote(run.info.artifact_uri).startswith(f"file://{out}/mlartifacts/")
    assert "per_case_metrics.csv" in {a.path for a in client.list_artifacts(run_id)}
    assert list((out / "mlartifacts").rglob("per_case_metrics.csv"))
