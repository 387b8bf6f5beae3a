"""diffseg3d.analysis."""
