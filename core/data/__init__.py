"""diffseg3d.core.data."""
