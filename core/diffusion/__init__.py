"""diffseg3d.core.diffusion."""
