"""Table 3a reports the noise model under both samplers: its main evaluation (fixed_large) and
the runs' `sampling/ddpm_fixed_small.csv`, read back from a real SQLite MLflow store; runs from
before that evaluation read "not logged" (no crash), and the paper's comparison is unchanged."""

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from diffseg3d.analysis.collect import collect_mlflow
from diffseg3d.analysis.comparisons import TABLES_BY_ID
from diffseg3d.analysis.table_data import compute_table
from diffseg3d.analysis.tables.latex import MINIMAL_DOCUMENT
from diffseg3d.analysis.tables.main_table import display_frame, main_table_latex
from diffseg3d.experiments.tracking.record import (
    ARTIFACT_PER_CASE,
    ARTIFACT_SAMPLING,
    TAG_PARENT,
    TAG_TABLES,
    TAG_TRIAL,
)
from mlflow.tracking import MlflowClient
from scipy import stats

SPEC = TABLES_BY_ID["table3a_output"]
CLASSES = ("bladder", "rectum", "sv")
N_CASES = 6


def _rows(offset: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dice = np.clip(0.7 + offset + rng.normal(0, 0.05, (N_CASES, len(CLASSES))), 0, 1)
    return pd.DataFrame([
        {"case": f"case{i}", "class": c, "dice": dice[i, k], "hd95": 10 * (1 - dice[i, k]),
         "roi_voxels": 100.0, "roi_mm3": 250.0}
        for i in range(N_CASES) for k, c in enumerate(CLASSES)])


def _params(data_set: str, output: str, seed: int) -> dict[str, str]:
    return {"data.name": data_set, "method": "diffusion", "diffusion.output": output,
            "diffusion.recycling": "true", "loss.dice": "true", "diffusion.train_steps": "5",
            "seed": str(seed)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """prostate-mr: noise model s0 with both sampler CSVs, noise model s1 from before the
    fixed_small evaluation, mask model s0 with both; amos-ct: both models without it."""
    tmp = tmp_path_factory.mktemp("table3a")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("table3", artifact_location=(tmp / "artifacts").as_uri())
    parent = client.create_run(exp, run_name="table3").info.run_id
    written: dict[str, dict[str, pd.DataFrame]] = {}

    def child(name, data_set, output, seed, main, variants):
        run_id = client.create_run(exp, run_name=name, tags={
            TAG_PARENT: parent, TAG_TRIAL: name, TAG_TABLES: "3a"}).info.run_id
        for k, v in _params(data_set, output, seed).items():
            client.log_param(run_id, k, v)
        folder = tmp / name
        (folder / ARTIFACT_SAMPLING).mkdir(parents=True)
        main.to_csv(folder / ARTIFACT_PER_CASE, index=False)
        client.log_artifact(run_id, str(folder / ARTIFACT_PER_CASE))
        for variant, rows in variants.items():
            rows.to_csv(folder / ARTIFACT_SAMPLING / f"{variant}.csv", index=False)
        if variants:
            client.log_artifacts(run_id, str(folder / ARTIFACT_SAMPLING), ARTIFACT_SAMPLING)
        client.set_terminated(run_id)
        written[name] = {"main": main, **variants}

    eps0, eps0_small = _rows(-0.10, 1), _rows(-0.02, 2)
    x0 = _rows(0.0, 3)
    child("prostate_eps_s0", "prostate-mr", "eps", 0, eps0,
          {"ddpm_fixed_large": eps0, "ddpm_fixed_small": eps0_small})
    child("prostate_eps_s1", "prostate-mr", "eps", 1, _rows(-0.08, 4), {})
    child("prostate_x0_s0", "prostate-mr", "x0", 0, x0,
          {"ddpm_fixed_large": x0, "ddpm_fixed_small": _rows(0.01, 5)})
    child("amos_eps_s0", "amos-ct", "eps", 0, _rows(-0.1, 6), {})
    child("amos_x0_s0", "amos-ct", "x0", 0, _rows(0.0, 7), {})
    client.set_terminated(parent)
    collection = collect_mlflow("table3", uri)
    names = collection.runs.set_index("trial")["run_id"].to_dict()
    return collection, written, names


def _case_means(rows: pd.DataFrame) -> pd.Series:
    return rows.groupby("case")["dice"].mean().sort_index()


@pytest.mark.slow  # the SQLite store and its runs: about 8 s
def test_noise_model_under_fixed_small_next_to_its_main_row(store):
    collection, written, names = store
    assert collection.problems == []
    data = compute_table(collection.frame, SPEC, sampling=collection.sampling)
    text, bold = display_frame(data, pm="±")
    assert list(text.index[:3]) == ["Noise", "Mask", "Noise (fixed_small)"]
    # The fixed_small cell: the s0 run's fixed_small CSV only (s1 never logged one).
    small = _case_means(written["prostate_eps_s0"]["ddpm_fixed_small"])
    cell = data.cells[("Noise (fixed_small)", "prostate-mr", "dice")]
    assert cell.mean == pytest.approx(small.mean(), rel=1e-12)
    assert cell.std == pytest.approx(small.std(ddof=1), rel=1e-12)
    assert text.loc["Noise (fixed_small)", ("Prostate MR", "Dice")] == (
        f"{small.mean():.3f} ± {small.std(ddof=1):.3f}")
    hd95 = written["prostate_eps_s0"]["ddpm_fixed_small"].groupby("case")["hd95"].mean()
    assert data.cells[("Noise (fixed_small)", "prostate-mr", "hd95")].mean == pytest.approx(
        hd95.mean())
    assert data.run_ids[("Noise (fixed_small)", "prostate-mr")] == (names["prostate_eps_s0"],)
    assert any("not logged by run(s) " + names["prostate_eps_s1"] in n for n in data.notes)
    # Older runs on amos-ct: the literal "not logged", in Dice and HD95.
    for metric in ("Dice", "HD95 (mm)"):
        assert text.loc["Noise (fixed_small)", ("Abdominal CT", metric)] == "not logged"
    # The main Noise row is both seeds' main evaluation, averaged per case.
    both = pd.concat([written["prostate_eps_s0"]["main"], written["prostate_eps_s1"]["main"]])
    per_case = both.groupby(["case"])["dice"].mean()
    assert data.cells[("Noise", "prostate-mr", "dice")].mean == pytest.approx(per_case.mean())
    # The variant row is shown, not compared: the paper's one comparison per data set remains.
    assert [(c.data_set, c.compared) for c in data.comparisons] == [
        ("prostate-mr", "Mask"), ("amos-ct", "Mask")]
    mask = _case_means(written["prostate_x0_s0"]["main"])
    expected = stats.ttest_rel(per_case.sort_index(), mask).pvalue
    assert data.comparison("prostate-mr", "Mask").test.t_pvalue == pytest.approx(expected)
    assert "p (t-test), Mask vs Noise" in text.index
    # Bold: the best of every shown row (the fixed_small noise cell is not best here).
    assert bool(bold.loc["Mask", ("Prostate MR", "Dice")])


@pytest.mark.slow
def test_latex_names_the_row_says_not_logged_and_compiles(store, tmp_path):
    collection, _, _ = store
    latex = main_table_latex(compute_table(collection.frame, SPEC,
                                           sampling=collection.sampling))
    assert "Noise (fixed\\_small) &" in latex and "not logged" in latex
    assert "eq. 3" in latex
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (make tex installs texlive-latex-recommended)")
    (tmp_path / "table3a_output.tex").write_text(latex)
    (tmp_path / "doc.tex").write_text(MINIMAL_DOCUMENT % "table3a_output")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_no_sampling_rows_at_all_reads_not_logged():
    frame = pd.concat([
        _rows(-0.1, 1).assign(run_id="r-eps", output="eps"),
        _rows(0.0, 2).assign(run_id="r-x0", output="x0")]).assign(
        trial=lambda f: f["run_id"], data_set="phantom", method="diffusion", recycling=True,
        dice_loss=True, train_steps=5, seed=0, nsd=np.nan, nsd_tolerance_mm=2.0, tables="3a")
    for sampling in (None, pd.DataFrame(columns=[*frame.columns, "sampling"])):
        data = compute_table(frame, SPEC, sampling=sampling)
        text, _ = display_frame(data, pm="±")
        assert text.loc["Noise (fixed_small)", ("Phantom", "Dice")] == "not logged"
        assert ("Noise (fixed_small)", "phantom") in data.not_logged
    # A table without variant rows is unchanged: two rows and unlabelled p rows.
    other = compute_table(frame.assign(tables="3b"), TABLES_BY_ID["table3b_dice_loss"])
    assert other.variant_labels == () and "p (t-test)" in display_frame(other)[0].index

