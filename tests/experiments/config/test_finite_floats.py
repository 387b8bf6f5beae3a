"""Every float setting of the whole config schema refuses NaN and infinity, naming the dotted
key: found by walking the schema, so a float field added later is covered without a new test."""

import math
import types
import typing

import pytest
from diffseg3d.cli.main import main
from diffseg3d.experiments.config.layering import check_layer, set_dotted
from diffseg3d.experiments.config.schema import Config, ConfigError, validate_config
from pydantic import BaseModel


def _holds_float(annotation) -> bool:
    if annotation is float:
        return True
    return any(_holds_float(a) for a in typing.get_args(annotation) if a is not Ellipsis)


def _is_section(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def float_fields(model: type[BaseModel] = Config, prefix: str = ""):
    """(dotted key, field) of every leaf of the schema whose type holds a float."""
    for name, field in model.model_fields.items():
        if _is_section(field.annotation):
            yield from float_fields(field.annotation, f"{prefix}{name}.")
        elif _holds_float(field.annotation):
            yield f"{prefix}{name}", field


def _with(field, bad: float):
    """`bad` as the field's value: in place of the first element of a tuple or list setting."""
    origin = typing.get_origin(field.annotation)
    if origin in (tuple, list):
        default = list(field.get_default(call_default_factory=True) or [0.0])
        return [bad, *default[1:]]
    if origin in (typing.Union, types.UnionType) or field.annotation is float:
        return bad
    raise AssertionError(f"unexpected float setting type {field.annotation}")


FIELDS = dict(float_fields())


def test_the_walk_finds_the_float_settings():
    assert len(FIELDS) >= 12
    assert {"optim.learning_rate", "data.max_rotation", "eval.nsd_tolerance_mm",
            "resources.accelerators_per_trial", "loss.noise_weight"} <= set(FIELDS)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", sorted(FIELDS))
def test_every_float_setting_refuses_nan_and_infinity_naming_the_key(key, bad):
    raw = set_dotted({}, key, _with(FIELDS[key], bad))
    with pytest.raises(ConfigError) as merged:
        validate_config(raw, source="c.yaml")
    with pytest.raises(ConfigError) as layer:  # also on its own, before a profile can hide it
        check_layer(raw, source="c.yaml")
    for err in (merged.value, layer.value):
        message = str(err)
        assert message.startswith("c.yaml: invalid config:")
        assert f"- {key}" in message
        assert "must be a finite number, not NaN or infinity" in message


def test_train_refuses_an_infinite_learning_rate_under_a_profile(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("optim:\n  learning_rate: .inf\n")
    assert main(["train", str(config), "--profile", "smoke", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {config}: invalid config:\n  - optim.learning_rate: must be a "
                          "finite number, not NaN or infinity (got inf)")
    assert "Traceback" not in err and "overrides" not in err
    assert not (tmp_path / "o").exists()
