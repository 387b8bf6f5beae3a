"""Grid expansion: the paper grids' trials, de-duplication, names, hashes and errors."""

import json

import pytest
import yaml
from diffseg3d.experiments.config.schema import config_hash
from diffseg3d.experiments.grid import (
    GRIDS_DIR,
    GridError,
    expand,
    grid_hash,
    resolve_grid_path,
    training_key,
    trial_name,
)

PAPER = GRIDS_DIR / "paper.yaml"

# (data set, method-specific name part) -> tables, written out by hand from the paper.
EXPECTED_PAPER = {
    "prostate-mr_diffusion_x0_recycle-N_dice-Y_k5_s0": ("1",),
    "prostate-mr_diffusion_x0_recycle-Y_dice-Y_k5_s0": ("1", "2", "3a", "3b", "3c", "4"),
    "amos-ct_diffusion_x0_recycle-N_dice-Y_k5_s0": ("1",),
    "amos-ct_diffusion_x0_recycle-Y_dice-Y_k5_s0": ("1", "2", "4"),
    "prostate-mr_unet_dice-Y_s0": ("2",),
    "amos-ct_unet_dice-Y_s0": ("2",),
    "prostate-mr_diffusion_eps_recycle-Y_dice-Y_k5_s0": ("3a",),
    "prostate-mr_diffusion_x0_recycle-Y_dice-N_k5_s0": ("3b",),
    "prostate-mr_diffusion_x0_recycle-Y_dice-Y_k1000_s0": ("3c",),
}


def test_paper_grid_has_every_comparison_once():
    trials = expand(PAPER, profile="smoke")
    assert {t.name: t.tables for t in trials} == EXPECTED_PAPER
    assert len({t.hash for t in trials}) == len(trials) == 9
    for t in trials:
        assert t.hash == config_hash(t.config) and t.config.name == t.name
        assert tuple(t.config.tables) == t.tables
        assert t.config.train.steps == 20  # the smoke profile reached every trial


def test_table4_resamples_the_default_model_without_training_another():
    # Table 4's trials are the default models of Tables 1-2, same hashes: nothing retrains.
    table4 = expand(GRIDS_DIR / "table4_sampling_variance.yaml", profile="quick")
    paper = {t.hash: t for t in expand(PAPER, profile="quick")}
    assert [t.name for t in table4] == ["prostate-mr_diffusion_x0_recycle-Y_dice-Y_k5_s0",
                                        "amos-ct_diffusion_x0_recycle-Y_dice-Y_k5_s0"]
    for t in table4:
        assert t.hash in paper and "4" in paper[t.hash].tables
        assert t.config.eval.samplers == ["ddpm_fixed_large", "ddpm_fixed_small", "ddim"]
        assert (t.config.diffusion.variance, t.config.diffusion.sampler) == ("fixed_large",
                                                                             "ddpm")


def test_configs_differing_only_in_samplers_are_one_trial_sampling_the_union(tmp_path):
    base = {"method": "diffusion", "data": {"root": str(tmp_path)}}
    grid = {
        "name": "merge", "seeds": [0], "data_sets": {"d": str(tmp_path)},
        "base": base,
        "comparisons": [
            {"table": "A", "axes": {"eval.samplers": [["ddim"]]}},
            {"table": "B", "axes": {"eval.samplers": [[], ["ddpm_fixed_small", "ddim"]],
                                     "diffusion.recycling": [True]}},
            {"table": "C", "axes": {"diffusion.recycling": [False]}},
        ],
    }
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump(grid))
    trials = expand(path, profile="smoke")
    assert [t.tables for t in trials] == [("A", "B"), ("C",)]
    merged, other = trials
    assert merged.config.eval.samplers == ["ddim", "ddpm_fixed_small"]  # first appearance
    assert other.config.eval.samplers == []
    assert merged.hash == config_hash(merged.config) != training_key(merged.config)
    assert training_key(merged.config) == training_key(
        merged.config.model_copy(update={"eval": merged.config.eval.model_copy(
            update={"samplers": []})}))


def test_each_table_compares_exactly_its_axis():
    trials = {t.name: t.config for t in expand(PAPER, profile="quick")}
    default = trials["prostate-mr_diffusion_x0_recycle-Y_dice-Y_k5_s0"]
    pairs = {
        "diffusion.output": trials["prostate-mr_diffusion_eps_recycle-Y_dice-Y_k5_s0"],
        "loss.dice": trials["prostate-mr_diffusion_x0_recycle-Y_dice-N_k5_s0"],
        "diffusion.train_steps": trials["prostate-mr_diffusion_x0_recycle-Y_dice-Y_k1000_s0"],
        "diffusion.recycling": trials["prostate-mr_diffusion_x0_recycle-N_dice-Y_k5_s0"],
        "method": trials["prostate-mr_unet_dice-Y_s0"],
    }
    # Only the default model samples the Table 4 variants and only the noise model (Table 3a)
    # fixed_small besides; apart from that, one axis differs.
    exclude = {"name": True, "tables": True, "eval": {"samplers"}}
    base = default.model_dump(exclude=exclude)
    assert default.eval.samplers == ["ddpm_fixed_large", "ddpm_fixed_small", "ddim"]
    for key, other in pairs.items():
        expected = (["ddpm_fixed_large", "ddpm_fixed_small"] if key == "diffusion.output"
                    else [])
        assert other.eval.samplers == expected, key
        diff = {k for k, v in other.model_dump(exclude=exclude).items() if v != base[k]}
        section = key.split(".")[0]
        assert diff == {section}, (key, diff)
        assert other.train.steps == default.train.steps == 600
        assert other.data.batch_size == default.data.batch_size


@pytest.mark.parametrize("data_override", [False, True])
def test_quick_profile_draws_four_samples_without_splitting_the_default_model(
        tmp_path, data_override):
    # The quick profile's eval.samples reaches every table's default model alike: still one
    # default trial per data set (9 trials, 6 with --data), and it and the no-recycling model
    # draw 4 samples; the other profiles draw one.
    data = None
    if data_override:
        data = tmp_path / "phantom"
        data.mkdir()
        (data / "dataset.json").write_text(json.dumps({"name": "phantom"}))
    quick = expand(PAPER, profile="quick", data_override=data)
    names = ["phantom"] if data_override else ["prostate-mr", "amos-ct"]
    assert len(quick) == len({training_key(t.config) for t in quick}) == (6 if data else 9)
    by_name = {t.name: t for t in quick}
    for ds in names:
        default = by_name[f"{ds}_diffusion_x0_recycle-Y_dice-Y_k5_s0"]
        no_recycling = by_name[f"{ds}_diffusion_x0_recycle-N_dice-Y_k5_s0"]
        assert default.config.eval.samples == no_recycling.config.eval.samples == 4
        assert "1" in default.tables and "2" in default.tables and "4" in default.tables
    assert [t.name for t in quick if "3a" in t.tables] == [
        f"{names[0]}_diffusion_x0_recycle-Y_dice-Y_k5_s0",
        f"{names[0]}_diffusion_eps_recycle-Y_dice-Y_k5_s0"]
    for profile in ("smoke", "paper", None):
        assert {t.config.eval.samples
                for t in expand(PAPER, profile=profile, data_override=data)} == {1}


def test_single_table_grids_and_paper_union():
    # The paper grid trains exactly the models of the three tables; only its default models
    # (which Table 4 re-samples) differ from their single-table twins, in eval.samplers.
    paper = expand(PAPER)
    parts: dict[str, str] = {}
    for name, count in [("table1_recycling", 4), ("table2_diffusion_vs_unet", 4),
                        ("table3_ablations", 4)]:
        trials = expand(GRIDS_DIR / f"{name}.yaml")
        assert len(trials) == count
        parts |= {training_key(t.config): t.hash for t in trials}
    assert set(parts) == {training_key(t.config) for t in paper}
    resampled = {t.name for t in paper if parts[training_key(t.config)] != t.hash}
    assert resampled == {"prostate-mr_diffusion_x0_recycle-Y_dice-Y_k5_s0",
                         "amos-ct_diffusion_x0_recycle-Y_dice-Y_k5_s0"}


def test_data_override_collapses_data_sets(tmp_path):
    data = tmp_path / "mydata"
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps({"name": "phantom"}))
    trials = expand(PAPER, profile="smoke", data_override=data)
    assert len(trials) == 6
    names = {t.name: t.tables for t in trials}
    assert names["phantom_diffusion_x0_recycle-Y_dice-Y_k5_s0"] == ("1", "2", "3a", "3b", "3c",
                                                                  "4")
    assert names["phantom_unet_dice-Y_s0"] == ("2",)
    assert all(t.config.data.root == str(data) for t in trials)


def test_expansion_is_deterministic():
    a, b = expand(PAPER, profile="quick"), expand(PAPER, profile="quick")
    assert [(t.name, t.hash) for t in a] == [(t.name, t.hash) for t in b]
    assert grid_hash(a) == grid_hash(b) != grid_hash(expand(PAPER, profile="smoke"))


def test_seeds_multiply_trials(tmp_path):
    grid = yaml.safe_load((GRIDS_DIR / "table1_recycling.yaml").read_text())
    grid["seeds"] = [0, 1, 2]
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(grid))
    trials = expand(path)
    assert len(trials) == 12
    assert [t.config.seed for t in trials[:3]] == [0, 1, 2]
    assert trials[1].name.endswith("_s1")


def _grid(tmp_path, **over):
    grid = {"name": "g", "data_sets": {"d": "data/d"}, "base": {},
            "comparisons": [{"table": "x", "axes": {"loss.dice": [False, True]}}]}
    grid.update(over)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_unequal_budget_is_rejected(tmp_path):
    path = _grid(tmp_path, comparisons=[{"table": "x", "axes": {"train.steps": [300, 500]}}])
    with pytest.raises(GridError, match=r"table x .*train.steps takes values \[300, 500\]"):
        expand(path)


def test_grid_errors_name_file_and_key(tmp_path):
    with pytest.raises(GridError, match="comparisons.0.axis"):
        expand(_grid(tmp_path, comparisons=[{"table": "x", "axis": {}}]))
    path = _grid(tmp_path, comparisons=[{"table": "x", "axes": {"loss.dice": ["maybe"]}}])
    with pytest.raises(ValueError) as err:
        expand(path)
    assert "loss.dice" in str(err.value) and "'maybe'" in str(err.value)
    path = _grid(tmp_path, comparisons=[{"table": "x", "data_sets": ["nope"],
                                         "axes": {"loss.dice": [True]}}])
    with pytest.raises(GridError, match="'nope'"):
        expand(path)
    path = _grid(tmp_path, comparisons=[{"table": "x", "axes": {"loss.dcie": [True]}}])
    with pytest.raises(ValueError, match="loss.dcie"):
        expand(path)
    with pytest.raises(GridError, match="no such grid"):
        resolve_grid_path(tmp_path / "absent.yaml")
    assert resolve_grid_path("paper") == PAPER


def test_name_collisions_get_a_hash_suffix(tmp_path):
    path = _grid(tmp_path, comparisons=[{"table": "x",
                                         "axes": {"optim.learning_rate": [0.001, 0.002]}}])
    trials = expand(path)
    assert trials[0].name == trial_name(trials[0].config) == "d_diffusion_x0_recycle-Y_dice-Y_k5_s0"
    assert trials[1].name == f"{trials[0].name}_{trials[1].hash[:6]}"


def test_data_roots_are_absolute_so_hashes_survive_other_working_dirs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trials = expand(GRIDS_DIR / "table1_recycling.yaml")
    roots = {t.config.data.name: t.config.data.root for t in trials}
    assert roots == {"prostate-mr": str(tmp_path / "data" / "prostate-mr"),
                     "amos-ct": str(tmp_path / "data" / "amos-ct")}
    assert all(t.hash == config_hash(t.config) for t in trials)


def _prepared(folder, name, shape):
    # The expansion reads only dataset.json's `name` and `shape` (the loader checks the rest).
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps({"name": name, "shape": shape}))
    return folder


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ""])
def test_grid_name_must_be_a_safe_file_name(tmp_path, name):
    path = _grid(tmp_path, **{"name": name, "data_sets": {"phantom": "data/phantom"},
                                  "comparisons": [{"table": "1", "axes": {"seed": [0]}}]})
    with pytest.raises(GridError) as err:
        expand(path, profile="smoke")
    assert str(err.value).startswith(f"{path.resolve()}: invalid grid:\n  - name: ")


def test_data_set_label_from_dataset_json_must_be_safe(tmp_path):
    root = _prepared(tmp_path / "d", "../../EVILNAME", [16, 16, 8])
    path = _grid(tmp_path, **{"name": "g", "data_sets": {"phantom": "data/phantom"},
                                  "comparisons": [{"table": "1", "axes": {"seed": [0]}}]})
    with pytest.raises(GridError, match=r"d/dataset.json: key 'name' '../../EVILNAME' must not"):
        expand(path, profile="smoke", data_override=root)


def test_overlong_trial_name_is_refused_naming_it(tmp_path):
    label = "x" * 120  # a safe data set name, but the trial name built from it is too long
    root = _prepared(tmp_path / "d", label, [16, 16, 8])
    path = _grid(tmp_path, **{"name": "g", "data_sets": {label: str(root)},
                                  "comparisons": [{"table": "1", "axes": {"seed": [0]}}]})
    with pytest.raises(GridError, match=r"trial name 'xxxx.*characters long \(at most 128\)"):
        expand(path, profile="smoke")


def test_levels_must_divide_the_prepared_shape_before_any_trial_starts(tmp_path):
    root = _prepared(tmp_path / "d", "phantom", [16, 16, 12])
    path = _grid(tmp_path, **{"name": "g", "data_sets": {"phantom": str(root)},
                                  "comparisons": [{"table": "1", "axes": {"seed": [0]}}]})
    # smoke: 2 levels -> divisor 2, fine; quick: 4 levels -> 12 is not divisible by 8.
    assert len(expand(path, profile="smoke")) == 1
    with pytest.raises(GridError) as err:
        expand(path, profile="quick")
    message = str(err.value)
    assert f"{path}: trial phantom_diffusion_x0_recycle-Y_dice-Y_k5_s0:" in message
    assert "[16, 16, 12]" in message and "not divisible by 8 = 2**(levels-1)" in message
    assert "model.channels [8, 16, 32, 64] (4 levels)" in message
