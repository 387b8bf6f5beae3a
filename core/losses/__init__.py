"""diffseg3d.core.losses."""
