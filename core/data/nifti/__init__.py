"""diffseg3d.core.data.nifti: NIfTI files: `io` (reading and writing volumes, `DataError`) and
`writeback` (predictions back onto a case's original grid)."""
