"""diffseg3d.core."""
