"""Models logged before the tracking code moved into `experiments/tracking/` pickled their
`python_model` by reference as `diffseg3d.experiments.pyfunc_model.SegmentationModel`: that name
still resolves, to the class models are saved with now."""

import pickle

from diffseg3d.experiments.tracking.pyfunc_model import SegmentationModel


def test_the_name_older_models_pickled_resolves_to_the_current_class():
    # Protocol 0 reference to a global, as `python_model.pkl` of an older model holds it.
    old = b"cdiffseg3d.experiments.pyfunc_model\nSegmentationModel\n."
    assert pickle.loads(old) is SegmentationModel


def test_new_models_pickle_the_class_under_its_tracking_module():
    assert SegmentationModel.__module__ == "diffseg3d.experiments.tracking.pyfunc_model"
    assert b"diffseg3d.experiments.tracking.pyfunc_model" in pickle.dumps(SegmentationModel, 0)
