"""A small convolutional denoiser for tests of the training machinery (compiles in ~1 s, unlike
the U-Net): same call signature as `UNet`, `model(image, x_t, t)` or `model(image)`."""

import flax.linen as nn
import jax
import jax.numpy as jnp


class TinyDenoiser(nn.Module):
    """(B, *S, 1) image [+ (B, *S, C) x_t + (B,) t] -> (B, *S, C) via two convolutions."""

    num_classes: int
    features: int = 8
    diffusion: bool = True

    @nn.compact
    def __call__(self, image, x_t=None, t=None):
        kernel = (3,) * (image.ndim - 2)
        h = image if not self.diffusion else jnp.concatenate([image, x_t], axis=-1)
        h = nn.Conv(self.features, kernel)(h)
        if self.diffusion:
            t_emb = nn.Dense(self.features)(t[:, None])
            h = h + t_emb.reshape((t.shape[0],) + (1,) * (image.ndim - 2) + (self.features,))
        return nn.Conv(self.num_classes, kernel)(jax.nn.gelu(h))
