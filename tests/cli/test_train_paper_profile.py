"""`diffseg3d train --profile paper` builds the released network with the released time input
and training details, and `--set` shrinks it to a CPU smoke run without dropping them: the
profile's settings reach the MLflow run, and each `--set` replacement is printed and tagged."""

import pytest
import yaml
from diffseg3d.cli.main import main
from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom
from diffseg3d.experiments.tracking.record import TAG_OVERRIDDEN, TAG_TEST_CHECKPOINT
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

#: The paper profile at smoke size: narrow levels, float32 (XLA:CPU runs bfloat16 slowly), 4
#: steps of 2 microbatches of one volume, a validation every 2 steps.
SMOKE_SETS = [
    "model.channels=[4, 8, 8, 16]",
    "model.compute_dtype=float32",
    "data.batch_size=2",
    "train.grad_accum_steps=2",
    "train.steps=4",
    "train.log_every=1",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "optim.warmup_steps=1",
    "optim.decay_steps=3",
    "eval.save_predictions=0",
]


def test_paper_profile_trains_the_released_network_at_smoke_size(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # 32x32x16: imgx_v010's four stride-2 levels need every size divisible by 16.
    data = make_phantom(tmp_path / "phantom", PhantomSpec(cases=6, shape=(32, 32, 16)))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"name": "paper_smoke"}))
    out = tmp_path / "runs"
    args = ["train", str(config), "--profile", "paper", "--data", str(data), "--out", str(out)]
    for item in SMOKE_SETS:
        args += ["--set", item]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "--set overrides train.steps: 12500 -> 4" in captured.err
    assert "--set overrides model.channels: [32, 64, 128, 256] -> [4, 8, 8, 16]" in captured.err
    assert "test_dice = " in captured.out

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    params = run.data.params
    # The paper profile's released-code settings survive the smoke-size --set items.
    assert params["model.architecture"] == "imgx_v010"
    assert params["diffusion.time_input"] == "index"
    assert params["loss.dice_absent_classes"] == "exclude"
    assert (params["data.augment_space"], params["data.limit_translation"]) == ("voxel", "true")
    assert (params["eval.checkpoint"], params["eval.val_metric"], params["eval.val_ties"]) == (
        "best_val", "binary_dice_with_background", "later")
    assert (params["model.remat"], params["diffusion.clip_x0"]) == ("false", "false")
    assert (params["model.channels"], params["train.steps"]) == ("[4, 8, 8, 16]", "4")
    # Best validation of steps 2 and 4 scored the test split.
    assert run.data.tags[TAG_TEST_CHECKPOINT] in ("2 (best_val)", "4 (best_val)")
    history = client.get_metric_history(run.info.run_id, "val_dice")
    assert [m.step for m in history] == [2, 4]
    overridden = run.data.tags[TAG_OVERRIDDEN]
    assert "train.steps: 12500 -> 4 (--set)" in overridden
    assert "model.compute_dtype: bfloat16 -> float32 (--set)" in overridden
