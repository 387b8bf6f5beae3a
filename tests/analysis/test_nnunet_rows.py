"""nnU-Net runs (`method: nnunet`: per-case CSV and wall times, no uncertainty or FLOP metrics)
read back from a real SQLite MLflow store: Table 2 shows an nnU-Net row, `table2_nnunet`
compares the diffusion model and the U-Net against it with Table 2's statistics (checked against
scipy and statsmodels), and the uncertainty and cost tables say "not logged" for it."""

import numpy as np
import pandas as pd
import pytest
from diffseg3d.analysis.collect import collect_mlflow
from diffseg3d.analysis.comparisons import NNUNET_TABLE, TABLES_BY_ID, add_setting_column
from diffseg3d.analysis.report import write_report
from diffseg3d.analysis.table_data import compute_table
from diffseg3d.analysis.tables.main_table import display_frame
from diffseg3d.experiments.tracking.record import (
    ARTIFACT_PER_CASE,
    ARTIFACT_UNCERTAINTY,
    TAG_PARENT,
    TAG_TABLES,
    TAG_TRIAL,
    UNCERTAINTY_COLUMNS,
)
from mlflow.tracking import MlflowClient
from scipy import stats
from statsmodels.stats.multitest import multipletests

pytestmark = pytest.mark.slow  # a SQLite store and a full report: about 20 s

CLASSES = ("bladder", "rectum")
N_CASES = 8
OFFSETS = {"diffusion": 0.0, "unet": 0.01, "nnunet": 0.05}


def _per_case(method: str) -> pd.DataFrame:
    rng = np.random.default_rng(len(method))
    case_effect = np.random.default_rng(0).normal(0, 0.05, N_CASES)
    return pd.DataFrame([
        {"case": f"case{i}", "class": c, "dice": 0.7 + OFFSETS[method] + case_effect[i]
         + rng.normal(0, 0.02), "hd95": 4.0 + k, "roi_voxels": 100.0, "roi_mm3": 250.0}
        for i in range(N_CASES) for k, c in enumerate(CLASSES)])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nnunet")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("grid", artifact_location=(tmp / "artifacts").as_uri())
    parent = client.create_run(exp, run_name="grid").info.run_id
    written = {}
    for method in OFFSETS:
        name = f"phantom_{method}_s0"
        run_id = client.create_run(exp, run_name=name, tags={
            TAG_PARENT: parent, TAG_TRIAL: name, TAG_TABLES: "2"}).info.run_id
        for key, value in {"data.name": "phantom", "method": method, "seed": "0",
                           "diffusion.output": "x0", "diffusion.recycling": "true",
                           "loss.dice": "true", "diffusion.train_steps": "5"}.items():
            client.log_param(run_id, key, value)
        folder = tmp / name
        folder.mkdir()
        rows = _per_case(method)
        rows.to_csv(folder / ARTIFACT_PER_CASE, index=False)
        client.log_artifact(run_id, str(folder / ARTIFACT_PER_CASE))
        client.log_metric(run_id, "test_dice", float(rows["dice"].mean()))
        client.log_metric(run_id, "cost_train_seconds", 100.0)
        client.log_metric(run_id, "cost_inference_seconds_1", 0.5)
        if method != "nnunet":  # nnU-Net: wall times only, no FLOPs, no uncertainty scores
            for key in ("cost_forward_flops", "cost_inference_flops_1", "cost_train_flops",
                        "cost_train_step_flops"):
                client.log_metric(run_id, key, 2e9)
            scores = rows[["case", "class"]].assign(samples=4 if method == "diffusion" else 0,
                                                    dice_ensemble=0.7)
            for column in UNCERTAINTY_COLUMNS[4:]:
                scores[column] = 0.25
            scores.to_csv(folder / ARTIFACT_UNCERTAINTY, index=False)
            client.log_artifact(run_id, str(folder / ARTIFACT_UNCERTAINTY))
        client.set_terminated(run_id)
        written[method] = rows
    client.set_terminated(parent)
    return collect_mlflow("grid", uri), written


def _case_means(rows: pd.DataFrame) -> np.ndarray:
    return rows.groupby("case")["dice"].mean().sort_index().to_numpy()


def test_nnunet_comparisons_have_table2_statistics(store):
    collection, written = store
    assert collection.problems == []
    frame = add_setting_column(collection.frame)
    data = compute_table(frame, NNUNET_TABLE)
    ref = _case_means(written["nnunet"])
    raw = [stats.ttest_rel(ref, _case_means(written[m])).pvalue for m in ("diffusion", "unet")]
    wilcoxon = [stats.wilcoxon(_case_means(written[m]) - ref).pvalue
                for m in ("diffusion", "unet")]
    holm = multipletests(raw, method="holm")[1]
    assert [(c.reference, c.compared) for c in data.comparisons] == [
        ("nnU-Net", "Diffusion"), ("nnU-Net", "U-Net")]
    for comp, p, p_holm, w, method in zip(data.comparisons, raw, holm, wilcoxon,
                                          ("diffusion", "unet"), strict=True):
        assert comp.test.t_pvalue == pytest.approx(p, rel=1e-9)
        assert comp.t_pvalue_holm == pytest.approx(p_holm, rel=1e-9)
        assert comp.test.wilcoxon_pvalue == pytest.approx(w, rel=1e-9)
        diff = _case_means(written[method]) - ref
        assert comp.test.mean_diff == pytest.approx(diff.mean())
        assert comp.interval.low < diff.mean() < comp.interval.high
        assert comp.verdict == "significant"  # -0.05 on every case, noise 0.02 / sqrt(2)
    # Table 2: the paper's one comparison per data set, and an nnU-Net row shown beside it.
    table2 = compute_table(frame, TABLES_BY_ID["table2_diffusion_vs_unet"])
    assert [(c.reference, c.compared) for c in table2.comparisons] == [("N", "Y")]
    text, _ = display_frame(table2, pm="±")
    assert list(text.index[:3]) == ["N", "Y", "nnU-Net"]
    assert text.loc["nnU-Net", ("Phantom", "Dice")] == f"{ref.mean():.3f} ± {ref.std(ddof=1):.3f}"
    # Without nnU-Net runs, Table 2 is as before: two rows and no nnU-Net note.
    plain = compute_table(frame[frame["method"] != "nnunet"],
                          TABLES_BY_ID["table2_diffusion_vs_unet"])
    assert plain.variant_labels == ()
    assert list(display_frame(plain)[0].index) == [
        "N", "Y", "p (t-test)", "p (t-test, Holm)", "p (Wilcoxon, Holm)"]


def test_report_writes_the_nnunet_table_and_not_logged_cells(store, tmp_path):
    collection, _ = store
    write_report(collection, tmp_path, n_resamples=99)
    assert (tmp_path / "table2_nnunet.tex").is_file()
    assert "nnU-Net" in (tmp_path / "table2_diffusion_vs_unet.tex").read_text()
    csv = pd.read_csv(tmp_path / "comparisons.csv")
    rows = csv[csv["table"] == "table2_nnunet"]
    assert sorted(zip(rows["a"], rows["b"], strict=True)) == [
        ("nnU-Net", "Diffusion"), ("nnU-Net", "U-Net")]
    assert set(rows["verdict"]) == {"significant"}
    cost = (tmp_path / "cost.tex").read_text()
    line = next(x for x in cost.splitlines() if "nnU-Net" in x)
    # The three FLOP cells and the device tag; its wall time is shown.
    assert line.count("not logged") == 4 and "& 100 &" in line and "& 0.500 &" in line
    uncertainty = (tmp_path / "samples_uncertainty.tex").read_text()
    line = next(x for x in uncertainty.splitlines() if "nnU-Net" in x)
    assert line.count("not logged") == 9  # N and the eight metric columns
    summary = (tmp_path / "summary.md").read_text()
    assert "## table2_nnunet" in summary and "| nnU-Net |" in summary
    # Its rows are methods, so its header and sentences say "Method", not Table 2's "Diffusion".
    section = summary.split("## table2_nnunet", 1)[1]
    assert "| Method | " in section and "Method = Diffusion gave" in section
    assert "Diffusion = Diffusion" not in section
