"""Environment defaults Ray needs on one machine, set in one place before Ray is imported.

The `diffseg3d` command line sets them at start (so Ray's own imports see them) and the grid
runner again before connecting (for callers that use `run_grid` from Python). A value the user
already exported wins.
"""

from __future__ import annotations

import os

#: Ray environment defaults: no usage reporting (machines without network, CI), no auth token
#: written under $HOME (a local cluster needs none).
RAY_ENV_DEFAULTS = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def set_ray_env_defaults() -> None:
    """Put `RAY_ENV_DEFAULTS` into `os.environ` where the variable is not set yet."""
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
