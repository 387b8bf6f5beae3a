"""The model definition of a logged pyfunc model (MLflow "models from code"), not a module to
import.

`pyfunc_model.log_trained_model` passes this file's path as `python_model`: MLflow copies the
file into the model folder and runs it on saving and on every `mlflow.pyfunc.load_model`, and
the `SegmentationModel` it sets is the model. The file holds no code of its own: the class comes
from the installed diffseg3d, as the models' `code_paths=None` requires.
"""

import mlflow.models
from diffseg3d.experiments.tracking.pyfunc_model import SegmentationModel

mlflow.models.set_model(SegmentationModel())
