"""diffseg3d.core.data: data set preparation, validated loading, batching and augmentation.

Modules: `phantom`, `prostate`, `amos`, `nifti` (preparation commands), `preprocess`
(per-case chain), `resample`, `crop`, `nifti_io`, `sources`, `preparation` (atomic folder
writer), `dataset` (`PreparedDataset`), `loader`, `augment` (JAX), `writeback`.
`augment` is not imported here so that preparation does not pay for importing JAX.
"""

from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.loader import batch_iterator, eval_batches
from diffseg3d.core.data.nifti_io import DataError

__all__ = ["DataError", "PreparedDataset", "batch_iterator", "eval_batches"]
