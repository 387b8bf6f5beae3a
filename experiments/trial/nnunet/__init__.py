"""nnU-Net v2 as a trial method: the prepared data set in nnU-Net's raw layout with the
project's split as its fold 0 (`layout`) and its training budget in the grid's terms (`budget`).
Neither module imports PyTorch or nnunetv2."""
