"""diffseg3d.core.infer."""
