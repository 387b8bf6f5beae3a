"""Session-wide test settings: CPU JAX, quiet Ray, no network services unless a test starts one."""

import os

from diffseg3d.experiments.ray_env import set_ray_env_defaults

os.environ.setdefault("JAX_PLATFORMS", "cpu")
set_ray_env_defaults()
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
