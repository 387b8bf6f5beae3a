"""Evaluation split over the devices of a data-parallel trial (`eval.batch_size`,
`sharding.place_batch`): each device samples its share of the batch, the labels equal those of
one device, and a trial on 4 devices refuses an evaluation batch they cannot split.

The 4 devices are CPU devices from `--xla_force_host_platform_device_count`, in a subprocess
(the device count is fixed when JAX starts)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import jax
    import numpy as np
    from diffseg3d.core.data.dataset import PreparedDataset
    from diffseg3d.core.data.loader import eval_batches
    from diffseg3d.core.train.sharding import make_mesh, place_batch
    from diffseg3d.core.train.state import create_train_state
    from diffseg3d.experiments.config.layering import deep_merge, load_profile
    from diffseg3d.experiments.config.schema import validate_config
    from diffseg3d.experiments.tracking import mlflow_runs as tracking
    from diffseg3d.experiments.trial import build
    from diffseg3d.experiments.trial.run import run_trial
    from diffseg3d.experiments.trial.sampling_eval import batch_sampler, sample_split
    from diffseg3d.experiments.trial.scoring import predict_split

    data, work = Path(sys.argv[1]), Path(sys.argv[2])
    assert len(jax.local_devices()) == 4, jax.local_devices()
    raw = deep_merge(load_profile("smoke"), {"data": {"root": str(data), "batch_size": 4}})
    config = validate_config(deep_merge(raw, {"eval": {"batch_size": 4}}))
    dataset = PreparedDataset.load(data)
    model = build.model(config, dataset.num_classes)
    tx, _ = build.optimizer(config)
    state = create_train_state(model, tx, jax.random.key(0), (4, *dataset.shape, 1), True)
    mesh, key = make_mesh(), jax.random.key(5)

    # The image batch goes onto the mesh split along its first axis; each device holds one case.
    image = next(iter(eval_batches(dataset, "train", 4)))["image"]
    placed = place_batch(image, mesh)
    assert placed.addressable_shards[0].data.shape[0] == 1
    assert place_batch(image, None) is image

    sampler = batch_sampler(build.sampler(config, model, dataset.num_classes), samples=2)
    label = sampler.run(state.params, placed, key)[0]
    # The sampling itself ran split: its output is split the same way (one case per device).
    assert len(label.sharding.device_set) == 4, label.sharding
    assert label.addressable_shards[0].data.shape[0] == 1, label.addressable_shards[0].data.shape

    one = jax.local_devices()[:1]
    params_one = jax.device_put(state.params, one[0])
    for split in ("test",):  # 2 cases: one batch of 4 with 2 of padding
        split_mesh = sample_split(sampler, state.params, dataset, split, 4, key, mesh)
        split_one = sample_split(sampler, params_one, dataset, split, 4, key)
        for name in ("preds", "step_preds", "ensemble"):
            a, b = getattr(split_mesh, name), getattr(split_one, name)
            assert a.shape == b.shape, (name, a.shape, b.shape)
            agree = float((a == b).mean())
            assert agree > 0.999, (split, name, agree)
        assert len(split_mesh.preds) == len(dataset.case_ids(split))
        predict = build.predictor(config, model, dataset.num_classes)
        p_mesh = predict_split(predict, state.params, dataset, split, 4, key, mesh)[0]
        p_one = predict_split(predict, params_one, dataset, split, 4, key)[0]
        assert float((p_mesh == p_one).mean()) > 0.999, split

    # A trial on these 4 devices: an evaluation batch of 6 is refused before training.
    uri = f"sqlite:///{work / 'm.db'}"
    tracking.ensure_experiment("sharded", tracking.default_artifact_location(work, uri),
                               tracking_uri=uri)
    bad = validate_config(deep_merge(raw, {"name": "bad", "eval": {"batch_size": 6}}))
    try:
        run_trial(bad, workdir=work / "bad", tracking_uri=uri, experiment="sharded")
    except ValueError as err:
        assert "eval.batch_size" in str(err) and "multiple of 4" in str(err), err
    else:
        raise AssertionError("an evaluation batch of 6 on 4 devices was accepted")
    # ... and one of 4 trains, validates and scores the test split, one case per device.
    good = validate_config(deep_merge(raw, {"name": "good", "eval": {"batch_size": 4},
                                            "train": {"steps": 4, "eval_every": 2,
                                                      "checkpoint_every": 0, "log_every": 2}}))
    result = run_trial(good, workdir=work / "good", tracking_uri=uri, experiment="sharded")
    assert result["test_n_cases"] == len(dataset.case_ids("test")), result
    assert 0.0 <= result["test_dice"] <= 1.0 and np.isfinite(result["val_dice"]), result
    print("OK")
    """
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 6 cases -> 3 train / 1 valid / 2 test (phantom splits).
    return Path(make_phantom(tmp_path_factory.mktemp("sharded") / "phantom",
                             PhantomSpec(cases=6, shape=(16, 16, 8))))


def test_evaluation_is_split_over_four_devices_and_matches_one(data, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[3]),
                                          os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(data), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), \
        proc.stdout[-3000:] + proc.stderr[-6000:]
