"""`data.max_rotation` / `max_translation` / `max_scale` / `isotropic_scale`: filled from the data
set's preset when not given, kept when given, validated with the dotted key in the message."""

import math

import pytest
from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.config.schema import validate_config


@pytest.mark.parametrize(
    ("name", "translation"), [("prostate-mr", (20.0, 20.0, 4.0)), ("amos-ct", (10.0, 10.0, 10.0))]
)
def test_real_data_sets_get_the_released_ranges(name, translation):
    data = validate_config({"data": {"name": name, "root": f"data/{name}"}}).data
    assert data.max_rotation == (0.088, 0.088, 0.088)
    assert data.max_translation == translation
    assert data.max_scale == (0.15, 0.15, 0.15) and data.isotropic_scale is False


@pytest.mark.parametrize("name", ["phantom", "brain-mr"])
def test_phantom_and_unlisted_names_keep_the_former_ranges(name):
    data = validate_config({"data": {"name": name}}).data
    assert data.max_rotation == (math.radians(15.0),) * 3
    assert data.max_translation == (3.0, 3.0, 3.0)
    assert data.max_scale == (0.1, 0.1, 0.1) and data.isotropic_scale is True


def test_given_ranges_win_over_the_preset():
    data = validate_config(
        {"data": {"name": "prostate-mr", "max_translation": [5, 5, 1], "max_scale": [0, 0, 0]}}
    ).data
    assert data.max_translation == (5.0, 5.0, 1.0) and data.max_scale == (0.0, 0.0, 0.0)
    assert data.max_rotation == (0.088, 0.088, 0.088)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"max_rotation": [0.1, 0.1, 4.0]}, "data.max_rotation"),
        ({"max_translation": [1, -1, 1]}, "data.max_translation"),
        ({"max_scale": [0.1, 1.0, 0.1], "isotropic_scale": False}, "data.max_scale"),
        ({"max_scale": [0.1, 0.2, 0.1], "isotropic_scale": True}, "data.isotropic_scale"),
        ({"max_translation": [1, 1]}, "data.max_translation"),
    ],
)
def test_bad_ranges_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        validate_config({"data": data})
