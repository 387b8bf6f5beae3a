"""diffseg3d.core.train."""
