"""The run record: param flatten/cast against the config schema, schema defaults, and names that
must agree with the code that writes them."""

import pytest
from diffseg3d.core.metrics.evaluate import ROW_KEYS
from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.config.layering import set_dotted
from diffseg3d.experiments.config.schema import Config, validate_config
from diffseg3d.experiments.tracking import record


def test_flatten_writes_strings_in_json_form():
    c = validate_config(
        {"name": "n", "tables": ["1", "3a"], "model": {"channels": [4, 8]},
         "diffusion": {"recycling": False}, "optim": {"learning_rate": 3e-4}}
    )
    flat = record.flatten(c)
    assert list(flat) == sorted(flat)
    assert all(isinstance(v, str) for v in flat.values())
    assert flat["model.channels"] == "[4, 8]"
    assert flat["diffusion.recycling"] == "false"
    assert flat["data.batch_size"] == "8"
    assert flat["optim.learning_rate"] == "0.0003"
    assert flat["tables"] == '["1", "3a"]'
    assert flat["name"] == "n"


def test_cast_value_round_trips_every_flat_param():
    c = validate_config(
        {"name": "n", "tables": ["1", "3a"], "model": {"channels": [4, 8]},
         "diffusion": {"recycling": False}, "optim": {"learning_rate": 3e-4}}
    )
    typed = {k: record.cast_value(k, v) for k, v in record.flatten(c).items()}
    assert typed["model.channels"] == [4, 8] and typed["diffusion.recycling"] is False
    assert typed["data.max_scale"] == (0.1, 0.1, 0.1) and typed["optim.learning_rate"] == 3e-4
    tree: dict = {}
    for key, value in typed.items():
        tree = set_dotted(tree, key, value)
    assert validate_config(tree) == c


def test_cast_value_reads_python_str_and_json_values():
    # Python's str() of values (how other tools log params) casts too.
    assert record.cast_value("diffusion.recycling", "True") is True
    assert record.cast_value("data.max_scale", "(0.15, 0.15, 0.1)") == (0.15, 0.15, 0.1)
    for key, value in record.flatten(Config()).items():  # unset optional fields
        if value == "null":
            assert record.cast_value(key, "None") is None
    # Non-strings (a JSON sidecar's values) are validated as they are.
    assert record.cast_value("loss.dice", False) is False
    assert record.cast_value("diffusion.train_steps", 1000) == 1000
    with pytest.raises(ConfigError, match="data.batch_size='eight'"):
        record.cast_value("data.batch_size", "eight")
    with pytest.raises(ConfigError, match="data.name=5"):
        record.cast_value("data.name", 5)
    with pytest.raises(ConfigError, match="not.a"):
        record.cast_value("not.a.key", "x")


def test_config_default_is_the_schema_default():
    c = Config()
    assert record.config_default("diffusion.train_steps") == c.diffusion.train_steps == 5
    assert record.config_default("loss.dice") is True
    assert record.config_default("method") == "diffusion"
    assert record.config_default("data.max_scale") == (0.1, 0.1, 0.1)
    with pytest.raises(ConfigError, match="section"):
        record.config_default("diffusion")
    with pytest.raises(ConfigError, match="loss.dise"):
        record.config_default("loss.dise")


def test_names_agree_with_the_writers():
    assert record.PER_CASE_COLUMNS == tuple(ROW_KEYS)
    assert record.ARTIFACT_PER_CASE.endswith(".csv") and record.TRIAL_JSON.endswith(".json")
    tags = [v for k, v in vars(record).items() if k.startswith("TAG_")]
    assert len(tags) == len(set(tags))
    assert set(record.TRIAL_JSON_REQUIRED_KEYS) <= {"mlflow_run_id", "step", "config_hash"}
