"""Ray's environment defaults: set where unset, a user's exported value kept, auth never off."""

import os

from diffseg3d.experiments.cluster.environment import RAY_ENV_DEFAULTS, set_ray_env_defaults


def test_defaults_fill_unset_variables_and_keep_exported_ones(monkeypatch):
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    set_ray_env_defaults()
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert os.environ["RAY_AUTH_MODE"] == "token"


def test_defaults_never_turn_token_authentication_off(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    set_ray_env_defaults()
    assert "RAY_AUTH_MODE" not in os.environ
    assert RAY_ENV_DEFAULTS == {"RAY_USAGE_STATS_ENABLED": "0"}
