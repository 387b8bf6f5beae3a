"""Collect from a real SQLite MLflow store filled by real `mlflow` calls, and from a CSV folder."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from diffseg3d.analysis.collect import collect_csv_folder, collect_metric_history, collect_mlflow
from diffseg3d.analysis.schema import axes_from_params, cast_param
from diffseg3d.cli.main import main
from diffseg3d.experiments.tracking.record import (
    ARTIFACT_RELIABILITY,
    ARTIFACT_UNCERTAINTY,
    RELIABILITY_COLUMNS,
    TAG_DEVICE_KIND,
    UNCERTAINTY_COLUMNS,
)
from mlflow.tracking import MlflowClient

CLASSES = ["bladder", "rectum"]
SHAPE = (12, 10, 4)


def _per_case(offset):
    return pd.DataFrame([
        {"case": f"case{i}", "class": c, "dice": 0.6 + 0.1 * k + offset + 0.01 * i,
         "hd95": 5.0 - k, "roi_voxels": 100.0 * (k + 1), "roi_mm3": 250.0 * (k + 1)}
        for i in range(4) for k, c in enumerate(CLASSES)
    ])


def _params(recycling, seed=0, root="", method="diffusion"):
    # As record.flatten writes them: JSON booleans, strings for everything.
    return {"data.name": "phantom", "data.root": str(root), "method": method,
            "diffusion.output": "x0", "diffusion.recycling": json.dumps(recycling),
            "loss.dice": "true", "diffusion.train_steps": "5", "seed": str(seed),
            "model.channels": "[8, 16]"}


def _label(offset):
    label = np.zeros(SHAPE, np.uint8)
    label[2:6, 2:6, 1:3] = 1
    label[7 + offset:10, 5:9, 2] = 2
    return label


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Experiment 'grid' with a parent run and five children: three FINISHED with metrics,
    one FAILED, one FINISHED without its per-case CSV. Also a prepared data folder."""
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("grid", artifact_location=(tmp / "artifacts").as_uri())
    root = tmp / "data"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"name": "phantom", "class_names": CLASSES}))
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.random(SHAPE).astype(np.float32), np.eye(4)),
             str(root / "imagesTr" / "case0.nii.gz"))
    nib.save(nib.Nifti1Image(_label(0), np.eye(4)), str(root / "labelsTr" / "case0.nii.gz"))

    parent = client.create_run(exp, run_name="grid").info.run_id
    ids = {}

    def child(name, params, tables, status="FINISHED", per_case=None, pred_offset=None,
              uncertainty=False):
        run = client.create_run(exp, run_name=name, tags={
            "mlflow.parentRunId": parent, "diffseg3d.trial": name, "diffseg3d.tables": tables,
            "diffseg3d.config_hash": name[::-1]})
        run_id = run.info.run_id
        for k, v in params.items():
            client.log_param(run_id, k, v)
        for step in range(3):
            client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step * 10)
        client.log_metric(run_id, "val_dice", 0.5, step=20)
        if per_case is not None:
            folder = tmp / name  # log_artifact keeps the file's name
            folder.mkdir()
            per_case.to_csv(folder / "per_case_metrics.csv", index=False)
            client.log_artifact(run_id, str(folder / "per_case_metrics.csv"))
        if pred_offset is not None:
            pred_dir = tmp / f"{name}-pred"
            pred_dir.mkdir()
            nib.save(nib.Nifti1Image(_label(pred_offset), np.eye(4)),
                     str(pred_dir / "case0.nii.gz"))
            client.log_artifacts(run_id, str(pred_dir), "predictions")
        if uncertainty:  # what a trial with `eval.samples` >= 2 logs beside its per-case CSV
            folder = tmp / f"{name}-uncertainty"
            folder.mkdir()
            rows = _per_case(0.0)[["case", "class"]].assign(samples=4, dice_ensemble=0.7)
            for column in UNCERTAINTY_COLUMNS[4:]:
                rows[column] = 0.25
            rows.to_csv(folder / ARTIFACT_UNCERTAINTY, index=False)
            pd.DataFrame([(b, b / 15, (b + 1) / 15, 3, 0.5, 0.4) for b in range(15)],
                         columns=list(RELIABILITY_COLUMNS)).to_csv(
                folder / ARTIFACT_RELIABILITY, index=False)
            for path in (ARTIFACT_UNCERTAINTY, ARTIFACT_RELIABILITY):
                client.log_artifact(run_id, str(folder / path))
            client.log_metric(run_id, "cost_forward_flops", 1e8)
            client.log_metric(run_id, "test_dice_ensemble_n2", 0.71)
            client.set_tag(run_id, TAG_DEVICE_KIND, "cpu")
        client.set_terminated(run_id, status=status)
        ids[name] = run_id

    child("rec-s0", _params(True, 0, root), "1,2", per_case=_per_case(0.05), pred_offset=0,
          uncertainty=True)
    child("norec-s0", _params(False, 0, root), "1", per_case=_per_case(0.0), pred_offset=1)
    child("unet-s0", _params(True, 0, root, method="unet"), "2", per_case=_per_case(0.06),
          pred_offset=0)
    child("rec-s1-failed", _params(True, 1, root), "1,2", status="FAILED")
    child("norec-s1-noartifact", _params(False, 1, root), "1")
    client.set_terminated(parent)
    return uri, ids, root


def test_collect_mlflow_casts_params_and_lists_every_uncollected_run(store):
    uri, ids, _ = store
    col = collect_mlflow("grid", uri)
    assert set(col.frame["run_id"]) == {ids["rec-s0"], ids["norec-s0"], ids["unet-s0"]}
    assert len(col.frame) == 3 * 4 * 2  # runs x cases x classes
    rec = col.frame[col.frame["run_id"] == ids["rec-s0"]]
    assert rec["recycling"].map(type).eq(bool).all() and rec["recycling"].all()
    norec = col.frame[col.frame["run_id"] == ids["norec-s0"]]
    assert not norec["recycling"].any()  # "false" is not truthy
    assert rec["train_steps"].iloc[0] == 5 and isinstance(rec["train_steps"].iloc[0],
                                                          (int, np.integer))
    assert rec["tables"].iloc[0] == "1,2"
    assert rec.sort_values(["case", "class"])["dice"].iloc[0] == pytest.approx(0.65)
    problems = "\n".join(col.problems)
    assert ids["rec-s1-failed"] in problems and "status FAILED" in problems
    assert ids["norec-s1-noartifact"] in problems and "per_case_metrics.csv" in problems
    assert len(col.runs) == 5  # the parent run is not a trial


def test_collect_mlflow_reads_uncertainty_artifacts_cost_metrics_and_device(store):
    uri, ids, _ = store
    col = collect_mlflow("grid", tracking_uri=uri)
    frame = col.uncertainty.frame
    assert set(frame["run_id"]) == {ids["rec-s0"]}  # the others did not log any
    assert len(frame) == len(_per_case(0.0)) and (frame["ged"] == 0.25).all()
    assert (frame["recycling"] == True).all() and (frame["tables"] == "1,2").all()  # noqa: E712
    assert len(col.uncertainty.reliability) == 15 and col.uncertainty.slices == {}
    metrics = col.run_metrics[col.run_metrics["run_id"] == ids["rec-s0"]]
    assert {"cost_forward_flops", "test_dice_ensemble_n2"} <= set(metrics["metric"])
    runs = col.runs.set_index("run_id")
    assert runs.at[ids["rec-s0"], "device_kind"] == "cpu"
    assert pd.isna(runs.at[ids["norec-s0"], "device_kind"])  # an older run: no tag


def test_metric_history_reads_mlflow_steps(store):
    uri, ids, _ = store
    hist = collect_metric_history([ids["rec-s0"]], tracking_uri=uri)
    loss = hist[hist["key"] == "loss"].sort_values("step")
    assert loss["step"].tolist() == [0, 10, 20]
    np.testing.assert_allclose(loss["value"], [1.0, 0.5, 1 / 3])


def test_missing_experiment_is_a_clear_error(store):
    with pytest.raises(ValueError, match="no MLflow experiment named 'nope'"):
        collect_mlflow("nope", store[0])


@pytest.mark.slow
def test_tables_command_end_to_end(store, tmp_path, capsys):
    uri, ids, _ = store
    out = tmp_path / "results"
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: grid\nseeds: [0]\ndata_sets: {phantom: data/phantom}\n"
                    "comparisons:\n  - table: '2'\n    axes: {method: [unet, diffusion]}\n")
    assert main(["tables", "--experiment", "grid", "--out", str(out), "--tracking-uri", uri,
                 "--grid", str(grid)]) == 0
    for name in ("table1_recycling", "table2_diffusion_vs_unet", "table3a_output",
                 "table3b_dice_loss", "table3c_train_steps", "supplement_dice_phantom",
                 "supplement_hd95_phantom"):
        assert (out / f"{name}.tex").is_file(), name
    summary = (out / "summary.md").read_text()
    assert ids["rec-s1-failed"] in summary and ids["norec-s0"] in summary
    assert "No finished runs feed this table." in summary  # table 3a has no runs here
    # The test's trial names are not the grid's: every grid trial is reported missing.
    assert "phantom_unet_dice-Y_s0: no run in the experiment" in summary
    for fig in ("examples_phantom", "training_curves", "dice_per_class_phantom",
                "roi_vs_dice_phantom"):
        assert (out / "figures" / f"{fig}.png").is_file(), fig
        assert (out / "figures" / f"{fig}.pdf").is_file(), fig
    assert "not collected" in capsys.readouterr().err


@pytest.mark.parametrize("raw, expected", [("false", False), ("True", True), ("1000", 1000)])
def test_cast_param_from_schema(raw, expected):
    key = {bool: "diffusion.recycling", int: "diffusion.train_steps"}[type(expected)]
    value = cast_param(key, raw)
    assert value == expected and type(value) is type(expected)


def test_cast_param_names_key_and_value_on_bad_input():
    with pytest.raises(ValueError, match="diffusion.recycling.*maybe"):
        cast_param("diffusion.recycling", "maybe", source="run abc")


def test_collect_csv_folder_with_sidecars(tmp_path):
    _per_case(0.0).to_csv(tmp_path / "mine.csv", index=False)
    (tmp_path / "mine.json").write_text(json.dumps(
        {"trial": "mine-s0", "tables": ["1"],
         "params": {"data.name": "prostate-mr", "diffusion.recycling": False, "seed": 3}}))
    _per_case(0.1).to_csv(tmp_path / "orphan.csv", index=False)
    col = collect_csv_folder(tmp_path)
    assert set(col.frame["run_id"]) == {"mine"}
    row = col.frame.iloc[0]
    assert (row["data_set"], row["recycling"], row["seed"], row["method"]) == (
        "prostate-mr", False, 3, "diffusion")  # method from the documented defaults
    assert col.problems == ["orphan (orphan): no sidecar orphan.json with the run's params"]


def test_csv_missing_columns_name_the_file(tmp_path):
    pd.DataFrame({"case": ["a"], "dice": [0.5]}).to_csv(tmp_path / "bad.csv", index=False)
    (tmp_path / "bad.json").write_text(json.dumps({"params": {"data.name": "x"}}))
    with pytest.raises(ValueError, match="bad.csv.*lacks columns"):
        collect_csv_folder(tmp_path)


def test_two_runs_of_one_trial_keep_one_and_list_the_other(tmp_path):
    for stem, offset in (("a-old", 0.0), ("b-new", 0.1)):
        _per_case(offset).to_csv(tmp_path / f"{stem}.csv", index=False)
        (tmp_path / f"{stem}.json").write_text(json.dumps(
            {"trial": "same", "params": {"data.name": "phantom"}}))
    col = collect_csv_folder(tmp_path)
    assert set(col.frame["run_id"]) == {"b-new"}  # not averaged as if it were a second seed
    assert col.problems == ["a-old (same): superseded by newer run b-new of trial same"]


def test_missing_axes_take_the_config_defaults_but_data_name_is_required():
    axes = axes_from_params({"data.name": "phantom"}, source="s.json")
    assert axes == {"data_set": "phantom", "method": "diffusion", "output": "x0",
                    "recycling": True, "dice_loss": True, "train_steps": 5, "seed": 0}
    with pytest.raises(ValueError, match="s.json: param 'data.name' is missing"):
        axes_from_params({"seed": "1"}, source="s.json")
