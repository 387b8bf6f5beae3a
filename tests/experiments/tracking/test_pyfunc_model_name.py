"""Models logged before models were logged as code pickled their `python_model` by reference:
before the tracking code moved into `experiments/tracking/` as
`diffseg3d.experiments.pyfunc_model.SegmentationModel`, after it under the tracking module. Both
names still resolve, to the class the model code sets now (`test_pyfunc_model.py` loads such
models)."""

import pickle

from diffseg3d.experiments.tracking.pyfunc_model import SegmentationModel


def test_the_name_older_models_pickled_resolves_to_the_current_class():
    # Protocol 0 reference to a global, as `python_model.pkl` of an older model holds it.
    old = b"cdiffseg3d.experiments.pyfunc_model\nSegmentationModel\n."
    assert pickle.loads(old) is SegmentationModel


def test_the_class_pickles_under_its_tracking_module_as_the_last_pickled_models_hold_it():
    assert SegmentationModel.__module__ == "diffseg3d.experiments.tracking.pyfunc_model"
    assert b"diffseg3d.experiments.tracking.pyfunc_model" in pickle.dumps(SegmentationModel, 0)
