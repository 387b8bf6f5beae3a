"""Config validation, profiles, schema introspection and the config hash."""

import hashlib
import json

import pytest
import yaml
from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.config.layering import available_profiles, load_config
from diffseg3d.experiments.config.schema import Config, config_hash, to_yaml, validate_config
from pydantic import BaseModel


def write(tmp_path, data, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_are_the_paper_settings():
    c = Config()
    assert c.model.channels == [32, 64, 128, 256]
    assert c.model.num_res_blocks == 2
    assert (c.data.batch_size, c.train.steps) == (8, 12500)
    assert c.model.compute_dtype == "bfloat16"
    assert (c.diffusion.output, c.diffusion.recycling, c.loss.dice) == ("x0", True, True)
    assert (c.diffusion.train_steps, c.diffusion.sample_steps) == (5, 5)
    assert c.loss.noise_weight == 0.1


def test_every_field_is_documented():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann)

    walk(Config)


def test_typo_names_dotted_key_value_and_file(tmp_path):
    path = write(tmp_path, {"data": {"batch_siz": 3}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "data.batch_siz" in msg and "unknown key" in msg and "3" in msg


def test_wrong_type_names_key_and_value(tmp_path):
    path = write(tmp_path, {"train": {"steps": "many"}, "diffusion": {"output": "noise"}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "train.steps" in msg and "'many'" in msg
    assert "diffusion.output" in msg and "'noise'" in msg


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"diffusion": {"train_steps": 1001}}, "diffusion.train_steps=1001"),
        ({"diffusion": {"num_timesteps": 4}}, "diffusion.train_steps=5"),
        ({"diffusion": {"sample_steps": 2000}}, "diffusion.sample_steps=2000"),
        ({"optim": {"warmup_steps": 50}, "train": {"steps": 50}}, "optim.warmup_steps=50"),
        ({"data": {"max_scale": [1.2, 0.1, 0.1]}}, "data.max_scale"),
        ({"model": {"channels": [8, 0]}}, "model.channels"),
    ],
)
def test_cross_field_validation(raw, needle):
    with pytest.raises(ConfigError) as err:
        validate_config(raw, source="x.yaml")
    assert needle in str(err.value) and "x.yaml" in str(err.value)


def test_unet_keeps_diffusion_settings_valid():
    c = validate_config({"method": "unet", "diffusion": {"output": "eps"}})
    assert c.method == "unet" and c.diffusion.output == "eps"
    with pytest.raises(ConfigError, match="diffusion.train_steps"):
        validate_config({"method": "unet", "diffusion": {"train_steps": 2000}})


def test_unknown_profile_lists_known_ones(tmp_path):
    path = write(tmp_path, {})
    with pytest.raises(ConfigError) as err:
        load_config(path, profile="fast")
    assert "'fast'" in str(err.value)
    for name in ("smoke", "quick", "paper"):
        assert name in str(err.value)
    assert set(available_profiles()) >= {"smoke", "quick", "paper"}


def test_profile_overrides_file(tmp_path):
    path = write(tmp_path, {"train": {"steps": 999}, "loss": {"dice": False}})
    c = load_config(path, profile="smoke")
    assert c.train.steps == 20  # the profile wins on what it sets
    assert c.loss.dice is False  # the file keeps what the profile leaves alone
    paper = load_config(write(tmp_path, {}, "empty.yaml"), profile="paper")
    assert paper.model.channels == [32, 64, 128, 256] and paper.train.steps == 12500
    assert paper.data.batch_size == 8 and paper.model.compute_dtype == "bfloat16"
    assert (paper.resources.accelerator, paper.resources.accelerators_per_trial) == ("gpu", 1)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listy)


def test_field_type_names_the_unknown_key():
    assert Config.field_type("data.batch_size") is int
    assert Config.field_type("data.max_scale") == tuple[float, float, float]
    with pytest.raises(ConfigError, match="data.batch_siz"):
        Config.field_type("data.batch_siz")
    with pytest.raises(ConfigError, match="data.batch_size.*leaf"):
        Config.field_type("data.batch_size.x")


def test_yaml_round_trip(tmp_path):
    c = validate_config({"name": "x", "model": {"channels": [4, 8]}, "seed": 3})
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(c))
    assert load_config(path) == c


def test_config_hash_is_sha_of_canonical_json_without_labels():
    c = Config()
    data = c.model_dump(mode="json")
    del data["name"], data["tables"], data["overridden"], data["nnunet"]
    del data["eval"]["batch_size"]  # null: left out (test below)
    expected = hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    assert config_hash(c) == expected
    relabelled = c.model_copy(update={"name": "other", "tables": ["2"]})
    assert config_hash(relabelled) == config_hash(c)
    assert config_hash(validate_config({"seed": 1})) != config_hash(c)
    moved = validate_config({"data": {"max_translation": [2.0, 3.0, 3.0]}})
    assert config_hash(moved) != config_hash(c)


def test_the_nnunet_section_is_hashed_for_nnunet_trials_only():
    # Configs written before the section existed keep their hash (a grid resumes them).
    before = Config().model_dump(mode="json")
    del before["name"], before["tables"], before["overridden"], before["nnunet"]
    del before["eval"]["batch_size"]
    assert config_hash(Config()) == hashlib.sha256(json.dumps(
        before, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    unet = validate_config({"method": "unet"})
    assert config_hash(unet) == config_hash(validate_config(
        {"method": "unet", "nnunet": {"budget": "published"}}))
    nnunet = validate_config({"method": "nnunet"})
    assert config_hash(nnunet) != config_hash(validate_config(
        {"method": "nnunet", "nnunet": {"budget": "published"}}))


def test_eval_batch_size_is_hashed_only_where_it_changes_the_batches():
    # Null (data.batch_size) keeps the hashes of configs written before the key existed, and
    # naming data.batch_size itself evaluates the same batches: same hash. Another size
    # evaluates other batches (batch j is keyed fold_in(key, j)): another trial.
    default = validate_config({"data": {"batch_size": 4}})
    assert default.eval.batch_size is None
    same = validate_config({"data": {"batch_size": 4}, "eval": {"batch_size": 4}})
    other = validate_config({"data": {"batch_size": 4}, "eval": {"batch_size": 2}})
    assert default.eval_batch_size == same.eval_batch_size == 4 and other.eval_batch_size == 2
    assert config_hash(same) == config_hash(default)
    assert config_hash(other) != config_hash(default)
    with pytest.raises(ConfigError, match="eval.batch_size"):
        validate_config({"eval": {"batch_size": 0}})


def test_nnunet_refuses_tpus_best_val_and_unknown_settings():
    with pytest.raises(ConfigError, match="nnU-Net runs on PyTorch"):
        validate_config({"method": "nnunet", "resources": {"accelerator": "tpu"}})
    with pytest.raises(ConfigError, match="checkpoint_final.pth"):
        validate_config({"method": "nnunet", "eval": {"checkpoint": "best_val"}})
    with pytest.raises(ConfigError, match="nnunet.configuration"):
        validate_config({"method": "nnunet", "nnunet": {"configuration": "3d_cascade"}})
    with pytest.raises(ConfigError, match="nnunet.workers"):
        validate_config({"method": "nnunet", "nnunet": {"workers": -1}})
    with pytest.raises(ConfigError, match="nnU-Net's own 1000 x 250"):
        validate_config({"method": "nnunet",
                         "nnunet": {"budget": "published", "iterations_per_epoch": 5}})


@pytest.mark.parametrize(("raw", "key"), [
    ({"name": "../../EVIL"}, "name"),
    ({"name": "a/b"}, "name"),
    ({"name": ".hidden"}, "name"),
    ({"name": "x" * 129}, "name"),
    ({"data": {"name": "../../EVILNAME"}}, "data.name"),
])
def test_names_that_become_paths_must_be_safe(tmp_path, raw, key):
    # The trial folder is <out>/trials/<name>_<hash>; data.name is part of trial names.
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: invalid config:\n  - {key}: ")
    with pytest.raises(ConfigError, match=f"  - {key}: "):
        load_config(path, profile="smoke")  # a profile does not change that
    assert load_config(write(tmp_path, {"name": "ok_name-1.2"})).name == "ok_name-1.2"
