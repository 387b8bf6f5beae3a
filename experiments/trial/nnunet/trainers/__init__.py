"""nnU-Net trainer classes of this project. nnU-Net's own CLI finds them by class name through
its `nnUNet_extTrainer` folder search (this folder); the trial hands them over directly
(`entry`). They import only nnunetv2, PyTorch and `trainer_contract`."""
