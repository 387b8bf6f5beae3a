"""`pyfunc_model.log_trained_model` logs the model as code (MLflow "models from code"): no
CloudPickle warning, no `python_model.pkl`, the same signature, requirements and metadata; the
model loads in a fresh process that forbids unpickling and predicts what it predicts here. Models
logged by earlier versions (a pickled `python_model`, `data/old_pickled_model/`) still load and
predict the labels recorded when that folder was logged."""

import json
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import mlflow
import numpy as np
import pytest
import yaml
from diffseg3d.core.train.checkpoint import save_checkpoint_folder
from diffseg3d.core.train.state import create_train_state
from diffseg3d.experiments.config.layering import deep_merge, load_profile
from diffseg3d.experiments.config.schema import validate_config
from diffseg3d.experiments.tracking import mlflow_runs as tracking
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.tracking.pyfunc_model import (
    MODEL_CODE,
    log_trained_model,
    requirements,
    signature,
)
from diffseg3d.experiments.trial import build

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
#: A model logged by the version before models were logged as code (its `python_model.pkl`
#: refers to `diffseg3d.experiments.tracking.pyfunc_model.SegmentationModel`), with the input
#: it was given and the labels it predicted then.
OLD_MODEL = DATA / "old_pickled_model"
OLD_INPUT = DATA / "old_pickled_model_input.npy"
OLD_LABELS = DATA / "old_pickled_model_labels.npy"
#: The same model's `python_model.pkl` as versions before `experiments/tracking/` pickled it,
#: under `diffseg3d.experiments.pyfunc_model.SegmentationModel`.
PRE_TRACKING_PICKLE = DATA / "python_model_experiments_name.pkl"

SHAPE = (8, 8, 4)
#: The prepared data set a model was trained on, as `log_trained_model` receives it.
DATASET_META = {
    "name": "phantom", "class_names": ["a", "b"], "spacing": [1.5, 1.5, 3.0],
    "shape": list(SHAPE), "preprocessing": {"spacing": [1.5, 1.5, 3.0], "shape": list(SHAPE),
                                            "intensity": "synthetic, clipped to [0, 1]"}}


class _Records(logging.Handler):
    """Keeps every record: MLflow's loggers do not propagate to the root logger (caplog's)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, item: logging.LogRecord) -> None:
        self.messages.append(item.getMessage())


def _tiny_bundle(root: Path):
    """A smoke-profile U-Net with two levels of 2 and 4 channels at its initial parameters,
    saved as a trial checkpoint folder: (config, checkpoint folder)."""
    config = validate_config(deep_merge(load_profile("smoke"), {
        "name": "tiny", "method": "unet", "data": {"root": str(root / "unused")},
        "model": {"channels": [2, 4]}}))
    net = build.model(config, len(DATASET_META["class_names"]) + 1)
    tx, _ = build.optimizer(config)
    state = create_train_state(net, tx, jax.random.PRNGKey(0), (1, *SHAPE, 1), diffusion=False)
    return config, save_checkpoint_folder(root / "checkpoints", state, {},
                                          info_name=record.TRIAL_JSON, keep=1)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """{uri, model_id, folder, warnings, logs}: a tiny model logged by a trial run into a fresh
    SQLite store, with the warnings and MLflow log messages logging it raised."""
    root = tmp_path_factory.mktemp("pyfunc")
    config, checkpoint = _tiny_bundle(root)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracking.ensure_experiment("pyfunc", tracking.default_artifact_location(root, uri),
                               tracking_uri=uri)
    run = tracking.TrialRun.start(config, experiment="pyfunc", tracking_uri=uri)
    workdir = root / "trial"
    workdir.mkdir()
    handler = _Records()
    mlflow_logger = logging.getLogger("mlflow")
    mlflow_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model_id = log_trained_model(run, config, DATASET_META, checkpoint, workdir)
        # Through the logger MLflow's CloudPickle warning uses: proof the handler hears it.
        logging.getLogger("mlflow.pyfunc").warning("probe")
    finally:
        mlflow_logger.removeHandler(handler)
    location = mlflow.MlflowClient(uri).get_logged_model(model_id).artifact_location
    return {"uri": uri, "model_id": model_id, "folder": Path(location.removeprefix("file://")),
            "warnings": [str(w.message) for w in caught], "logs": handler.messages}


def test_the_model_is_logged_as_code_without_the_cloudpickle_warning(logged):
    said = logged["warnings"] + logged["logs"]
    assert logged["logs"][-1] == "probe"
    assert not [m for m in said if "cloudpickle" in m.lower()]
    folder = logged["folder"]
    assert not (folder / "python_model.pkl").exists()
    assert (folder / MODEL_CODE.name).read_text() == MODEL_CODE.read_text()
    flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert Path(flavor["model_code_path"]).name == MODEL_CODE.name
    assert "python_model" not in flavor and flavor["code"] is None  # no pickle, no code_paths
    assert sorted(flavor["artifacts"]) == ["checkpoint", "config", "preparation"]


def test_signature_requirements_and_metadata_are_those_of_a_trained_model(logged):
    model = mlflow.models.Model.load(str(logged["folder"]))
    preparation = record.preparation_record(DATASET_META)
    assert model.signature == signature(preparation)
    assert model.metadata == {"preparation": preparation, "method": "unet", "trial": "tiny"}
    assert model.model_id == logged["model_id"]
    written = (logged["folder"] / "requirements.txt").read_text().split()
    assert written == requirements() and any(r.startswith("jax==") for r in written)
    bundle = logged["folder"] / "artifacts"
    assert json.loads((bundle / record.ARTIFACT_PREPARATION).read_text()) == preparation
    assert (bundle / record.ARTIFACT_CHECKPOINT / record.TRIAL_JSON).is_file()


_FRESH_PROCESS = """
import sys
import mlflow
import numpy as np
model = mlflow.pyfunc.load_model(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), params={"seed": 3}))
"""


def test_a_fresh_process_that_forbids_unpickling_loads_it_and_predicts_the_same(
        logged, tmp_path):
    images = np.random.default_rng(1).random((2, *SHAPE, 1)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    here = mlflow.pyfunc.load_model(str(logged["folder"])).predict(images, params={"seed": 3})
    assert here.shape == (2, *SHAPE) and here.dtype == np.int32
    # Loading a pickled python_model raises under this setting.
    env = {**os.environ, "MLFLOW_TRACKING_URI": logged["uri"],
           "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, f"models:/{logged['model_id']}",
         str(tmp_path / "images.npy"), str(tmp_path / "labels.npy")],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), here)


def test_a_model_pickled_by_an_earlier_version_is_refused_when_unpickling_is_forbidden(
        monkeypatch):
    # What the previous test's setting guards against: the stored old model is a pickle.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with pytest.raises(mlflow.exceptions.MlflowException, match="pickle"):
        mlflow.pyfunc.load_model(str(OLD_MODEL))


@pytest.mark.parametrize("pickled_as", ["tracking", "experiments"])
def test_models_pickled_by_earlier_versions_load_and_predict_their_labels(pickled_as, tmp_path):
    folder = OLD_MODEL
    if pickled_as == "experiments":
        folder = tmp_path / "old"
        shutil.copytree(OLD_MODEL, folder)
        shutil.copyfile(PRE_TRACKING_PICKLE, folder / "python_model.pkl")
    name = f"diffseg3d.experiments.{'tracking.' if pickled_as == 'tracking' else ''}pyfunc_model"
    assert name.encode() + b"\x94" in (folder / "python_model.pkl").read_bytes()
    model = mlflow.pyfunc.load_model(str(folder))
    labels = model.predict(np.load(OLD_INPUT))
    expected = np.load(OLD_LABELS)
    assert labels.shape == (2, *SHAPE) and labels.dtype == np.int32
    assert len(np.unique(expected)) > 1  # a constant map would not tell models apart
    np.testing.assert_array_equal(labels, expected)
