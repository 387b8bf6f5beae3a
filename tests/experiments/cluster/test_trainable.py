"""trainable.newest_checkpoint: which checkpoint folder a restarted trial resumes from."""

import json
from pathlib import Path

from diffseg3d.experiments.cluster.trainable import newest_checkpoint


def _folder(root: Path, name: str, **meta) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    if meta:
        (folder / "trial.json").write_text(json.dumps(meta))
    return folder


def test_the_highest_step_of_this_config_wins(tmp_path):
    meta = {"mlflow_run_id": "r1", "config_hash": "abc"}
    s10 = _folder(tmp_path / "checkpoints", "step_0000010", step=10, **meta)
    s20 = _folder(tmp_path / "checkpoints", "step_0000020", step=20, **meta)
    tune_copy = _folder(tmp_path, "restored_checkpoint", step=10, **meta)
    assert newest_checkpoint([s10, s20, tune_copy], "abc") == s20
    assert newest_checkpoint([tune_copy, s10], "abc") == tune_copy  # equal steps: the first
    assert newest_checkpoint([], "abc") is None


def test_incomplete_foreign_and_corrupt_folders_are_skipped(tmp_path):
    good = _folder(tmp_path, "step_0000010", step=10, mlflow_run_id="r", config_hash="abc")
    no_json = _folder(tmp_path, "step_0000030")  # cut short before trial.json was written
    other = _folder(tmp_path, "step_0000040", step=40, mlflow_run_id="r", config_hash="zzz")
    missing_key = _folder(tmp_path, "step_0000050", step=50, config_hash="abc")
    corrupt = _folder(tmp_path, "step_0000060")
    (corrupt / "trial.json").write_text('{"step": 60, "config_ha')
    no_best = _folder(tmp_path, "step_0000070", step=70, mlflow_run_id="r", config_hash="abc",
                      best_step=10)  # best-validation parameters not written yet
    folders = [good, no_json, other, missing_key, corrupt, no_best]
    assert newest_checkpoint(folders, "abc") == good
    assert newest_checkpoint(folders, "zzz") == other
    assert newest_checkpoint(folders, "nope") is None
    (no_best / "best_params.npz").write_bytes(b"")
    assert newest_checkpoint(folders, "abc") == no_best
