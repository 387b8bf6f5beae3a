"""`diffseg3d tables` while a grid still trains runs of the same experiment (a child run in
status RUNNING, as an `ablate` in progress leaves it): the tables of the finished runs are
written and one line says how many runs are still running and to run tables again later."""

import pandas as pd
import pytest
from diffseg3d.cli.main import main
from diffseg3d.experiments.tracking.record import (
    ARTIFACT_PER_CASE,
    TAG_PARENT,
    TAG_TABLES,
    TAG_TRIAL,
)
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow  # a SQLite store and a full report


def test_tables_during_a_grid_cover_the_finished_runs_and_say_so(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("grid", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, run_name="grid").info.run_id
    for method, offset, done in (("diffusion", 0.0, True), ("unet", 0.05, True),
                                 ("nnunet", 0.1, False)):
        name = f"phantom_{method}_s0"
        run_id = client.create_run(exp, run_name=name, tags={
            TAG_PARENT: parent, TAG_TRIAL: name, TAG_TABLES: "2"}).info.run_id
        for key, value in {"data.name": "phantom", "method": method, "seed": "0"}.items():
            client.log_param(run_id, key, value)
        if not done:  # still training: no per-case CSV yet, status RUNNING
            continue
        folder = tmp_path / name
        folder.mkdir()
        pd.DataFrame([{"case": f"c{i}", "class": "organ", "dice": 0.6 + offset + 0.01 * i,
                       "hd95": 3.0, "roi_voxels": 100.0, "roi_mm3": 200.0}
                      for i in range(6)]).to_csv(folder / ARTIFACT_PER_CASE, index=False)
        client.log_artifact(run_id, str(folder / ARTIFACT_PER_CASE))
        client.set_terminated(run_id)

    code = main(["tables", "--experiment", "grid", "--tracking-uri", uri,
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "diffseg3d tables: 1 run(s) of " in err and (
        "are still RUNNING (a grid is training them, or its driver was stopped): these tables "
        "cover the 2 finished run(s); run tables again when the grid has ended") in err
    assert (tmp_path / "out" / "table2_diffusion_vs_unet.tex").is_file()
    # The running trial is untouched: still RUNNING.
    runs = client.search_runs([exp], filter_string="tags.`diffseg3d.trial` = 'phantom_nnunet_s0'")
    assert [r.info.status for r in runs] == ["RUNNING"]
