"""The name under which models saved by earlier versions find their class.

Models logged before models were logged as code hold `python_model.pkl`, a by-reference pickle
of `SegmentationModel`: those logged before the tracking code moved to `experiments/tracking/`
load `diffseg3d.experiments.pyfunc_model.SegmentationModel`, this module's name. The class
itself lives in `tracking/pyfunc_model.py`.
"""

from diffseg3d.experiments.tracking.pyfunc_model import SegmentationModel

__all__ = ["SegmentationModel"]
