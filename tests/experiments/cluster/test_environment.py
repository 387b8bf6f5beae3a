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


def test_forgetting_the_cached_settings_makes_ray_read_the_auth_mode_again(monkeypatch):
    """Ray's C++ config keeps the RAY_AUTH_MODE it first read: a driver that read it unset and
    then connects to a token cluster would send no token. `forget_cached_ray_token` re-reads."""
    from diffseg3d.experiments.cluster.environment import forget_cached_ray_token
    from ray._raylet import AuthenticationMode, get_authentication_mode

    try:
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        forget_cached_ray_token()
        assert get_authentication_mode() == AuthenticationMode.DISABLED
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        assert get_authentication_mode() == AuthenticationMode.DISABLED  # still the cached mode
        forget_cached_ray_token()
        assert get_authentication_mode() == AuthenticationMode.TOKEN
    finally:
        monkeypatch.undo()
        forget_cached_ray_token()  # as the session's environment says again
