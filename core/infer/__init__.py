"""diffseg3d.core.infer: U-Net prediction and K-step diffusion sampling (DDPM, DDIM)."""

from diffseg3d.core.infer.predict import predict_unet
from diffseg3d.core.infer.sampling import make_sampler

__all__ = ["make_sampler", "predict_unet"]
