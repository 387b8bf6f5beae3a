"""Layering a profile over the user's config / grid base: each user layer is
validated on its own (a profile cannot hide a bad value), profile overrides of user values are
printed and recorded (MLflow tag `diffseg3d.overridden`), and a GPU/TPU request is never turned
into a CPU run by a profile. `--set KEY=VALUE` items layer last."""

import pytest
import yaml
from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.config.layering import (
    apply_profile,
    available_profiles,
    check_layer,
    load_config,
    load_profile,
    parse_set,
)
from diffseg3d.experiments.grid import GridError, expand, load_grid
from diffseg3d.experiments.tracking import mlflow_runs as tracking
from diffseg3d.experiments.tracking.record import TAG_OVERRIDDEN
from mlflow.tracking import MlflowClient


def _config(tmp_path, raw):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(("raw", "key", "shown"), [
    ({"data": {"batch_size": "eight"}}, "data.batch_size", "'eight'"),
    ({"train": {"steps": -5}}, "train.steps", "-5"),
    ({"model": {"channels": [4, 0]}}, "model.channels", "[4, 0]"),
    ({"data": {"max_scale": [1.5, 1.5, 1.5]}}, "data.max_scale", "1.5"),
])
def test_bad_user_value_is_an_error_although_the_profile_replaces_it(tmp_path, raw, key, shown):
    path = _config(tmp_path, raw)
    # smoke sets data.batch_size, train.steps and model.channels: before, the bad value vanished.
    with pytest.raises(ConfigError) as err:
        load_config(path, profile="smoke")
    message = str(err.value)
    assert message.startswith(f"{path}: invalid config")
    assert key in message and shown in message


def test_rules_over_several_keys_are_judged_on_the_merged_config(tmp_path):
    # decay_steps 50 <= the default warmup 100 is invalid alone, valid under quick (warmup 20).
    path = _config(tmp_path, {"optim": {"decay_steps": 50}})
    with pytest.raises(ConfigError, match=r"optim.decay_steps=50 must be 0 or > "
                                          r"optim.warmup_steps=100"):
        load_config(path)
    config = load_config(path, profile="quick")
    assert (config.optim.decay_steps, config.optim.warmup_steps) == (50, 20)
    check_layer({"optim": {"decay_steps": 50}}, "layer")  # not an error on its own


def test_profile_override_of_a_user_value_is_printed_and_recorded(tmp_path, capsys):
    smoke = load_profile("smoke")
    path = _config(tmp_path, {"train": {"steps": 500}, "data": {"batch_size": 2},
                              "model": {"num_res_blocks": 2}})
    config = load_config(path, profile="smoke")
    err = capsys.readouterr().err.splitlines()
    # batch_size 2 equals smoke's value: nothing is replaced, nothing said.
    assert smoke["data"]["batch_size"] == 2
    assert err == ["profile smoke overrides model.num_res_blocks: 2 -> 1",
                   "profile smoke overrides train.steps: 500 -> 20"]
    assert config.train.steps == 20
    assert config.overridden == ["model.num_res_blocks: 2 -> 1 (profile smoke)",
                                 "train.steps: 500 -> 20 (profile smoke)"]
    # Without a profile nothing is overridden, and a hand-written `overridden` is replaced.
    assert load_config(_config(tmp_path, {"overridden": ["x"]})).overridden == []


def test_overridden_becomes_the_mlflow_tag(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.ensure_experiment("e", tracking.default_artifact_location(tmp_path, uri), uri)
    config = load_config(_config(tmp_path, {"train": {"steps": 500}}), profile="smoke")
    run = tracking.TrialRun.start(config, experiment="e", tracking_uri=uri)
    tags = MlflowClient(uri).get_run(run.run_id).data.tags
    assert tags[TAG_OVERRIDDEN] == "train.steps: 500 -> 20 (profile smoke)"
    run.finish()
    plain = tracking.TrialRun.start(load_config(_config(tmp_path, {})), experiment="e",
                                    tracking_uri=uri)
    assert TAG_OVERRIDDEN not in MlflowClient(uri).get_run(plain.run_id).data.tags
    plain.finish()


@pytest.mark.parametrize("resources", [
    {"accelerator": "gpu", "accelerators_per_trial": 0.5},
    {"gpus_per_trial": 0.5},  # the legacy spelling of the same request
])
def test_a_cpu_profile_keeps_the_users_gpu_request(tmp_path, capsys, resources):
    path = _config(tmp_path, {"resources": resources})
    config = load_config(path, profile="smoke")
    assert config.resources.accelerator == "gpu"
    assert config.resources.accelerators_per_trial == 0.5
    assert config.resources.cpus_per_trial == 1  # the profile's other resources still apply
    err = capsys.readouterr().err
    assert (f"profile smoke asks for resources.accelerator: cpu; keeping "
            f"resources.accelerator: gpu from {path}") in err


def test_a_tpu_profile_over_a_gpu_request_is_an_announced_override(tmp_path, capsys):
    if "paper_tpu" not in available_profiles():
        pytest.skip("no paper_tpu profile")
    layered = apply_profile({"resources": {"accelerator": "gpu"}}, "paper_tpu", "c.yaml")
    assert layered.raw["resources"]["accelerator"] == "tpu"
    assert "resources.accelerator: gpu -> tpu (profile paper_tpu)" in layered.overridden


@pytest.mark.parametrize("name", ["../../x", "smoke/../smoke", "/etc/passwd", "smoke.yaml",
                                  "SMOKE"])
def test_profile_is_a_shipped_name_never_a_path(tmp_path, name):
    with pytest.raises(ConfigError) as err:
        load_profile(name)
    assert f"unknown profile {name!r}" in str(err.value)
    assert "available profiles: " + ", ".join(available_profiles()) in str(err.value)


def test_a_yaml_file_given_as_profile_is_not_opened(tmp_path):
    other = tmp_path / "evil.yaml"
    other.write_text("train: {steps: 3}\n")
    relative = str(other.with_suffix(""))  # what PROFILES_DIR / f"{name}.yaml" would reach
    with pytest.raises(ConfigError, match="a profile is a name, not a path"):
        load_profile(relative)


def _grid(tmp_path, **fields):
    grid = {"name": "g", "data_sets": {"phantom": str(tmp_path / "nodata")},
            "comparisons": [{"table": "1", "axes": {"diffusion.recycling": [False, True]}}]}
    grid.update(fields)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_bad_grid_base_value_is_an_error_under_a_profile(tmp_path):
    path = _grid(tmp_path, base={"data": {"batch_size": "eight"}})
    with pytest.raises(GridError) as err:
        expand(path, profile="smoke")
    assert f"{path.resolve()} base: invalid config" in str(err.value)
    assert "data.batch_size" in str(err.value) and "'eight'" in str(err.value)


def test_bad_comparison_base_and_axis_values_name_table_and_key(tmp_path):
    path = _grid(tmp_path, comparisons=[{"table": "3a", "base": {"train": {"steps": -5}},
                                         "axes": {"diffusion.recycling": [True]}}])
    with pytest.raises(GridError, match=r"table 3a base: invalid config:\n  - train.steps"):
        load_grid(path)
    path = _grid(tmp_path, comparisons=[{"table": "2", "axes": {"data.batch_size": [2, "x"]}}])
    with pytest.raises(GridError, match=r"table 2 axis data.batch_size='x': invalid config"):
        expand(path, profile="smoke")


def test_grid_base_gpu_request_survives_a_cpu_profile_and_overrides_print_once(tmp_path,
                                                                               capsys):
    path = _grid(tmp_path, base={"resources": {"accelerator": "gpu"}, "train": {"steps": 500}})
    trials = expand(path, profile="smoke")
    assert len(trials) == 2
    assert {t.config.resources.accelerator for t in trials} == {"gpu"}
    assert all(t.config.overridden == ["train.steps: 500 -> 20 (profile smoke)"] for t in trials)
    err = capsys.readouterr().err.splitlines()
    assert err.count("profile smoke overrides train.steps: 500 -> 20") == 1
    assert sum("keeping resources.accelerator: gpu" in line for line in err) == 1


# ---------------------------------------------------------------------------------------------
# --set KEY=VALUE: the last layer of `load_config`


@pytest.mark.parametrize(("item", "expected"), [
    ("train.steps=2", ("train.steps", 2)),
    ("model.channels=[8, 16, 32, 64]", ("model.channels", [8, 16, 32, 64])),
    ("diffusion.clip_x0=false", ("diffusion.clip_x0", False)),
    ("diffusion.variance=fixed_small", ("diffusion.variance", "fixed_small")),
    ("optim.learning_rate=0.0001", ("optim.learning_rate", 1e-4)),
    (" name =a=b", ("name", "a=b")),  # only the first '=' splits; the key is stripped
])
def test_set_items_are_dotted_keys_with_yaml_values(item, expected):
    assert parse_set(item) == expected


@pytest.mark.parametrize("item", ["train.steps", "=2", "train..steps=2", ".steps=2", "a.=1"])
def test_a_set_item_without_a_dotted_key_and_value_is_refused(item):
    with pytest.raises(ConfigError, match=r"expected KEY=VALUE with a dotted key"):
        parse_set(item)


def test_set_wins_over_the_profile_and_is_printed_and_recorded(tmp_path, capsys):
    path = _config(tmp_path, {"train": {"steps": 500}})
    config = load_config(path, profile="smoke", sets=["train.steps=3", "train.eval_every=0",
                                                       "model.channels=[8, 8, 16, 32]"])
    assert (config.train.steps, config.train.eval_every) == (3, 0)
    assert config.model.channels == [8, 8, 16, 32]
    smoke = load_profile("smoke")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "profile smoke overrides train.steps: 500 -> 20"
    assert f"--set overrides train.steps: {smoke['train']['steps']} -> 3" in err
    assert "train.steps: 20 -> 3 (--set)" in config.overridden
    assert "train.steps: 500 -> 20 (profile smoke)" in config.overridden
    # Items apply in order: a later item wins over an earlier one.
    again = load_config(path, profile="smoke", sets=["train.steps=7", "train.steps=9"])
    tiny_lr = load_config(path, profile="smoke", sets=["optim.learning_rate=1e-4"])
    assert again.train.steps == 9 and again.overridden[-1] == "train.steps: 7 -> 9 (--set)"
    # YAML 1.1 reads 1e-4 as a string, as in a config file; the schema turns it into the float.
    assert tiny_lr.optim.learning_rate == 1e-4


@pytest.mark.parametrize(("item", "named"), [
    ("train.stepz=2", "train.stepz"),                 # a typo in the key
    ("train.steps=two", "train.steps"),               # a value of the wrong type
    ("model.architecture=unet9", "model.architecture"),
])
def test_a_bad_set_item_names_itself_and_the_key(tmp_path, item, named):
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, {}), profile="smoke", sets=[item])
    assert f"--set {item}" in str(err.value) and named in str(err.value)


def test_set_cannot_break_a_rule_over_several_keys_unseen(tmp_path):
    # warmup must stay below the steps: judged on the merged config, naming the --set items.
    with pytest.raises(ConfigError, match=r"--set train.steps=5"):
        load_config(_config(tmp_path, {}), profile="quick", sets=["train.steps=5"])
