"""diffseg3d.core.data.sources: preparing a data set from its source: `tree` (a folder or zip
read in place), `phantom` (the embedded synthetic data set), `prostate`, `amos` and `nifti`
(any folder of NIfTI image/label pairs)."""
