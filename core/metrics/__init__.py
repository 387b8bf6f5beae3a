"""diffseg3d.core.metrics."""
