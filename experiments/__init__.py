"""diffseg3d.experiments."""
