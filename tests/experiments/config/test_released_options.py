"""The released-code options in the config schema and the profiles: the paper profiles turn
them all on, quick and smoke keep this project's defaults, and bad values name their key."""

import pytest
from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.config.layering import load_profile
from diffseg3d.experiments.config.schema import Config, validate_config

RELEASED = {
    ("model", "architecture"): "imgx_v010",
    ("diffusion", "time_input"): "index",
    ("loss", "dice_absent_classes"): "exclude",
    ("data", "limit_translation"): True,
    ("data", "augment_space"): "voxel",
    ("train", "eval_every"): 500,
    ("eval", "val_metric"): "binary_dice_with_background",
    ("eval", "val_ties"): "later",
    ("eval", "checkpoint"): "best_val",
}
PROJECT = {
    ("model", "architecture"): "diffseg3d",
    ("diffusion", "time_input"): "fraction",
    ("loss", "dice_absent_classes"): "include",
    ("data", "limit_translation"): False,
    ("data", "augment_space"): "mm",
    ("eval", "val_metric"): "foreground_dice",
    ("eval", "val_ties"): "earlier",
}


def _values(config, keys):
    return {key: getattr(getattr(config, key[0]), key[1]) for key in keys}


@pytest.mark.parametrize("name", ["paper", "paper_tpu"])
def test_paper_profiles_follow_the_released_code(name):
    config = Config.model_validate(load_profile(name))
    assert _values(config, RELEASED) == RELEASED


@pytest.mark.parametrize("name", ["quick", "smoke"])
def test_cpu_profiles_and_schema_keep_the_project_defaults(name):
    assert _values(Config.model_validate(load_profile(name)), PROJECT) == PROJECT
    assert _values(Config(), PROJECT) == PROJECT


@pytest.mark.parametrize("key,value", [
    ("model.architecture", "resnet"), ("diffusion.time_input", "step"),
    ("loss.dice_absent_classes", "drop"), ("data.augment_space", "index"),
    ("eval.val_metric", "hd95"), ("eval.val_ties", "first"),
])
def test_bad_values_name_their_key(key, value):
    section, field = key.split(".")
    with pytest.raises(ConfigError, match=field):
        validate_config({section: {field: value}}, source="test.yaml")


def test_new_settings_are_documented():
    for section, field in list(RELEASED) + list(PROJECT):
        model = type(getattr(Config(), section))
        assert len(model.model_fields[field].description or "") > 40, (section, field)
