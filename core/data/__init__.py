"""diffseg3d.core.data: data set preparation, validated loading, batching and augmentation.

Folders: `sources/` (`phantom`, `prostate`, `amos`, `nifti`: preparation commands; `tree`:
reading a source folder or zip) and `nifti/` (`io`: NIfTI reading and writing, `writeback`).
Modules: `preprocess` (per-case chain), `resample`, `crop`, `preparation` (atomic folder
writer), `dataset` (`PreparedDataset`), `loader`, `inference` (one volume for prediction),
`augment` (JAX), `augment_presets`, `safe_name`.
`augment` is not imported here so that preparation does not pay for importing JAX.
"""

from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.loader import batch_iterator, eval_batches
from diffseg3d.core.data.nifti.io import DataError

__all__ = ["DataError", "PreparedDataset", "batch_iterator", "eval_batches"]
