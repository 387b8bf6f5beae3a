"""`train.grad_accum_steps`: validated, recorded (MLflow param, config hash), set by the paper
profiles, and wired by `build.train_step` into the step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.train.state import create_train_state
from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.config.layering import deep_merge, load_profile
from diffseg3d.experiments.config.schema import Config, config_hash, validate_config
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.trial import build

SPATIAL = (8, 8, 4)


def _config(**over):
    raw = deep_merge(load_profile("smoke"), {"data": {"root": "/unused"}})
    return validate_config(deep_merge(raw, over))


def test_default_is_no_accumulation_and_values_validate():
    assert Config().train.grad_accum_steps == 1
    assert validate_config({"train": {"grad_accum_steps": 4}}).train.grad_accum_steps == 4
    assert Config.field_type("train.grad_accum_steps") is int
    for bad in (0, -1, "two", 1.5):
        with pytest.raises(ConfigError) as err:
            validate_config({"train": {"grad_accum_steps": bad}}, source="g.yaml")
        assert "train.grad_accum_steps" in str(err.value) and repr(bad) in str(err.value)


def test_a_typo_is_an_unknown_key():
    with pytest.raises(ConfigError) as err:
        validate_config({"train": {"grad_acum_steps": 2}}, source="typo.yaml")
    msg = str(err.value)
    assert "typo.yaml" in msg and "train.grad_acum_steps: unknown key" in msg


def test_it_is_an_mlflow_param_and_part_of_the_config_hash():
    one, four = Config(), validate_config({"train": {"grad_accum_steps": 4}})
    assert record.flatten(one)["train.grad_accum_steps"] == "1"
    assert record.flatten(four)["train.grad_accum_steps"] == "4"
    assert record.cast_value("train.grad_accum_steps", "4") == 4
    assert config_hash(four) != config_hash(one)


@pytest.mark.parametrize(("name", "microbatches"), [("paper", 1), ("paper_tpu", 2)])
def test_paper_profiles_train_the_batch_of_8_as_their_devices_fit_it(name, microbatches):
    # A GPU in one pass (its memory plan: paper.yaml's header); 2 x 4 on 4 TPU chips.
    config = validate_config(load_profile(name), source=name)
    assert config.data.batch_size == 8
    assert config.train.grad_accum_steps == microbatches
    assert config.data.batch_size % config.train.grad_accum_steps == 0


def test_a_batch_the_microbatches_do_not_divide_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        _config(data={"batch_size": 6}, train={"grad_accum_steps": 4})
    assert ("data.batch_size=6 is not divisible by train.grad_accum_steps=4"
            in str(err.value))


def test_build_refuses_a_batch_the_microbatches_do_not_divide_before_compiling():
    # A config changed after validation (model_copy skips it) still fails before compiling.
    valid = _config(data={"batch_size": 6})
    config = valid.model_copy(update={"train": valid.train.model_copy(
        update={"grad_accum_steps": 4})})
    net = build.model(config, num_classes=3)
    tx, lr = build.optimizer(config)
    with pytest.raises(ValueError, match="batch size 6 is not divisible by grad_accum_steps 4"):
        build.train_step(config, net, tx, lr)


def _scan_lengths(jaxpr, found):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            found.append(eqn.params["length"])
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                _scan_lengths(inner, found)
    return found


@pytest.mark.parametrize("method", ["unet", "diffusion"])
def test_build_wires_the_field_into_the_step(method):
    """The built step of the smoke U-Net scans over grad_accum_steps microbatches (traced only,
    nothing compiled), and without accumulation it has no scan at all."""
    lengths = {}
    for steps in (1, 2):
        config = _config(method=method, data={"batch_size": 4}, train={"grad_accum_steps": steps})
        net = build.model(config, num_classes=3)
        tx, lr = build.optimizer(config)
        step = build.train_step(config, net, tx, lr, spacing=(1.0, 1.0, 2.0))
        state = jax.eval_shape(lambda net=net, tx=tx: create_train_state(
            net, tx, jax.random.key(0), (4, *SPATIAL, 1), diffusion=net.diffusion))
        batch = {"image": jnp.zeros((4, *SPATIAL, 1), jnp.float32),
                 "label": jnp.asarray(np.zeros((4, *SPATIAL), np.int32))}
        jaxpr = jax.make_jaxpr(step)(state, batch, jax.random.key(0))
        lengths[steps] = _scan_lengths(jaxpr.jaxpr, [])
    assert lengths[1] == [] and lengths[2] == [2], lengths
