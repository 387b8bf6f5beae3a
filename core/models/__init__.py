"""diffseg3d.core.models: the 3D/2D U-Net (paper sec. 4) and its building blocks."""

from diffseg3d.core.models.conv import resolve_conv_impl
from diffseg3d.core.models.time_embedding import TimeEmbedding, sinusoidal_embedding
from diffseg3d.core.models.unet import UNet

__all__ = ["UNet", "TimeEmbedding", "sinusoidal_embedding", "resolve_conv_impl"]
