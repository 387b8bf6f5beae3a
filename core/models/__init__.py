"""diffseg3d.core.models."""
