"""A trained model as an MLflow pyfunc model: `mlflow.pyfunc.load_model("runs:/<id>/model")`.

Input: prepared images, a float32 tensor (batch, X, Y, Z, channels) of the data set's prepared
shape (the model signature's TensorSpec `(-1, X, Y, Z, 1)`); prepare a NIfTI file with
`core.data.inference.prepare_volume(path, preparation["preprocessing"])`, the preparation
record being in the model's metadata (`loaded.metadata.metadata["preparation"]`) and put the
label back with `restore_label`. Output: label maps int32 (batch, X, Y, Z). Params (optional):
`seed` (default 0) and, for diffusion models, `samples` (default 1), sampled as
`diffseg3d predict` samples each case (`predictor` module docstring), so the labels equal
predict's with the same seed and samples. The tensor input, not a column of NIfTI paths, keeps
the model servable (`mlflow models serve` sends arrays, and a server cannot read the client's
files).

The model is logged as code (MLflow "models from code"): the folder holds the model-definition
script `MODEL_CODE` (`pyfunc_model_code.py`, which sets a `SegmentationModel`), not a pickled
object, so loading runs that script and unpickles nothing. Models logged by earlier versions hold
`python_model.pkl`, a by-reference pickle of `SegmentationModel` under this module's name or
under `diffseg3d.experiments.pyfunc_model`; both names still resolve to this class, so they load
too. The model folder's `artifacts/` is a model bundle (`checkpoint/`, `config.yaml`,
`preparation.json`) that `model_source.load_model` also reads. No package code is copied into the
model (`code_paths=None`): loading needs diffseg3d installed; `pip_requirements` lists the
installed versions of its main dependencies, given explicitly so that saving does not infer them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import mlflow.pyfunc
import numpy as np
from diffseg3d.experiments.config.schema import Config, to_yaml
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.tracking.logged_model import (
    create_logged_model,
    finish_logged_model,
)
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

#: The model-definition script logged as the model's `python_model` (module docstring).
MODEL_CODE = Path(__file__).with_name("pyfunc_model_code.py")

#: Distributions whose installed versions go into the model's requirements.
REQUIREMENTS = ("jax", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "nibabel",
                "pydantic", "pyyaml", "mlflow")


class SegmentationModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper around `predictor.CasePredictor` (module docstring)."""

    def load_context(self, context) -> None:
        from diffseg3d.predict.model_source import load_bundle

        art = context.artifacts
        self.model = load_bundle(Path(art["config"]), Path(art["preparation"]),
                                 Path(art["checkpoint"]), source="mlflow pyfunc model")
        self._predictors: dict[int, object] = {}

    def _predictor(self, samples: int):
        from diffseg3d.predict.predictor import CasePredictor, resolve_settings

        if samples not in self._predictors:
            settings = resolve_settings(self.model, samples=samples)
            self._predictors[samples] = CasePredictor(self.model, settings)
        return self._predictors[samples]

    def predict(self, context, model_input: np.ndarray,
                params: dict | None = None) -> np.ndarray:
        """Images (batch, X, Y, Z, channels) float32 -> labels (batch, X, Y, Z) int32."""
        import jax

        params = params or {}
        images = np.asarray(model_input, np.float32)
        want = (*self.model.shape, self.model.channels)
        if images.ndim != 5 or images.shape[1:] != want:
            raise ValueError(f"expected prepared images (batch, {', '.join(map(str, want))}), "
                             f"got shape {images.shape}")
        predictor = self._predictor(int(params.get("samples", 1)))
        key = jax.random.PRNGKey(int(params.get("seed", 0)))
        return np.stack([predictor.predict(image[..., 0], key).label for image in images])


def signature(preparation: dict) -> ModelSignature:
    """Prepared images (-1, X, Y, Z, channels) float32 -> labels (-1, X, Y, Z) int32; params
    `seed` and `samples`."""
    shape = tuple(int(s) for s in preparation["shape"])
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *shape, preparation["channels"]))]),
        outputs=Schema([TensorSpec(np.dtype(np.int32), (-1, *shape))]),
        params=ParamSchema([ParamSpec("seed", "long", 0), ParamSpec("samples", "long", 1)]),
    )


def requirements() -> list[str]:
    """`name==installed version` of `REQUIREMENTS` (those installed)."""
    found = []
    for name in REQUIREMENTS:
        try:
            found.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or no hard links there
        shutil.copy2(source, target)


def log_trained_model(run, config: Config, dataset_meta: dict, checkpoint_dir: Path,
                      workdir: Path, metrics: dict[str, float] | None = None,
                      step: int = 0) -> str:
    """Write `config.yaml` and `preparation.json` into the trial's `workdir` (a local trial
    folder `predict` can load), log the preparation record, and log the pyfunc model as an
    MLflow logged model named `record.ARTIFACT_MODEL` of the trial's run (`tracking.TrialRun`);
    returns its model id.

    The model is linked to the run as its output at `step` and carries `metrics` (the test
    means) and the run's params, so the runs table's Models column and the model page show it;
    `runs:/<run_id>/model` resolves to it (MLflow finds a run's logged model by name) and
    `models:/<model_id>` names it. The trial talks to MLflow through its client only, never the
    fluent active run that `mlflow.pyfunc.log_model` needs: the steps of `Model.log` are done
    here with the run's client (`logged_model`)."""
    workdir = Path(workdir)
    preparation = record.preparation_record(dataset_meta)
    files = {"config": workdir / record.ARTIFACT_CONFIG,
             "preparation": workdir / record.ARTIFACT_PREPARATION}
    files["config"].write_text(to_yaml(config))
    files["preparation"].write_text(json.dumps(preparation, indent=2))
    run.log_artifact(files["preparation"])
    model = create_logged_model(run, config)
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".model_") as tmp:
        # MLflow stores each artifact under its base name: a copy named `checkpoint` makes the
        # model's artifacts/ a bundle that `model_source.load_model` reads as well. Hard links
        # copy no data; MLflow refuses symbolic ones.
        staged = Path(tmp) / record.ARTIFACT_CHECKPOINT
        shutil.copytree(checkpoint_dir, staged, copy_function=_link_or_copy)
        artifacts = {"checkpoint": str(staged), **{k: str(v) for k, v in files.items()}}
        folder = Path(tmp) / record.ARTIFACT_MODEL
        with warnings.catch_warnings():
            # MLflow's advice to add an input example: it would run the model while saving.
            warnings.filterwarnings("ignore", message=".*input_example", category=UserWarning)
            mlflow.pyfunc.save_model(
                str(folder), python_model=str(MODEL_CODE), artifacts=artifacts,
                signature=signature(preparation), pip_requirements=requirements(),
                code_paths=None, metadata={"preparation": preparation, "method": config.method,
                                           "trial": config.name},
                mlflow_model=Model(artifact_path=model.artifact_location, run_id=run.run_id,
                                   model_uuid=model.model_id, model_id=model.model_id),
            )
        finish_logged_model(run, model.model_id, folder, metrics or {}, step)
    return model.model_id
