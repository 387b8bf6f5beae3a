"""`diffseg3d train` / `ablate` on bad input: one `error: ...` line naming the key, exit 2
(a trial that runs is tested in tests/experiments/trial/test_run.py and tests/e2e)."""

import json

import pytest
import yaml
from diffseg3d.cli.main import main
from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom


def test_train_bad_config_is_one_line_naming_key(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"optim": {"learning_rat": 0.1}}))
    assert main(["train", str(path), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "optim.learning_rat" in err and str(path) in err
    assert main(["train", str(path), "--profile", "nope"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err


def test_ablate_unknown_grid_names_the_shipped_grids(tmp_path, capsys):
    assert main(["ablate", "no_such_grid", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no_such_grid: no such grid file") and "paper" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("flag", ["--max-concurrent", "--max-failures"])
def test_ablate_counts_must_be_integers(flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["ablate", "paper", flag, "two"])
    assert exit_.value.code == 2
    assert f"argument {flag}: invalid int value: 'two'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Names that would steer writes outside --out, and checks before any trial starts


def _tree(root):
    return {p.relative_to(root) for p in root.rglob("*")}


def _write(path, data):
    path.write_text(yaml.safe_dump(data) if path.suffix == ".yaml" else json.dumps(data))
    return path


def test_train_refuses_a_config_name_that_leaves_out(tmp_path, capsys):
    config = _write(tmp_path / "c.yaml", {"name": "../../EVIL"})
    before = _tree(tmp_path)
    assert main(["train", str(config), "--profile", "smoke", "--out", str(tmp_path / "OUT")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {config}: invalid config:\n  - name: name '../../EVIL' must "
                          "not start with '.' or contain '..'")
    assert "Traceback" not in err and _tree(tmp_path) == before


def test_ablate_refuses_a_grid_name_that_leaves_out(tmp_path, capsys):
    grid = _write(tmp_path / "g.yaml", {"name": "../x", "data_sets": {"phantom": "data/phantom"},
                                        "comparisons": [{"table": "1", "axes": {"seed": [0]}}]})
    before = _tree(tmp_path)
    assert main(["ablate", str(grid), "--profile", "smoke", "--out", str(tmp_path / "OUT")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {grid.resolve()}: invalid grid:\n  - name: name '../x' must")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("command", ["train", "ablate"])
def test_profile_path_is_refused_listing_the_profiles(tmp_path, capsys, command):
    _write(tmp_path / "x.yaml", {"train": {"steps": 1}})  # what ../../x would have loaded
    target = _write(tmp_path / "c.yaml", {}) if command == "train" else "paper"
    before = _tree(tmp_path)
    rc = main([command, str(target), "--profile", str(tmp_path / "x"),
               "--out", str(tmp_path / "OUT")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "(a profile is a name, not a path); available profiles: paper, paper_tpu, quick, " \
           "smoke" in err
    assert main([command, str(target), "--profile", "../../x"]) == 2
    assert "unknown profile '../../x'" in capsys.readouterr().err
    assert _tree(tmp_path) == before


@pytest.fixture
def evil_data(tmp_path):
    """A prepared phantom whose dataset.json name and one test case id point outside --out."""
    root = make_phantom(tmp_path / "data", PhantomSpec(cases=3, shape=(16, 16, 8)))
    meta = json.loads((root / "dataset.json").read_text())
    meta["name"] = "../../EVILNAME"
    good = meta["splits"]["test"][0]
    meta["splits"]["test"] = ["../../../EVILCASE"]
    meta["cases"]["../../../EVILCASE"] = meta["cases"].pop(good)
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_train_with_evil_dataset_name_exits_2_with_one_line(tmp_path, capsys, evil_data):
    config = _write(tmp_path / "c.yaml", {})
    before = _tree(tmp_path)
    rc = main(["train", str(config), "--profile", "smoke", "--data", str(evil_data),
               "--out", str(tmp_path / "OUT")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == (f"error: {evil_data}/dataset.json: key 'name' '../../EVILNAME' must not start "
                   "with '.' or contain '..'\n")
    assert _tree(tmp_path) == before  # not even OUT


@pytest.mark.parametrize("evil", ["name", "case id"])
def test_train_from_config_root_with_evil_dataset_writes_nothing(tmp_path, capsys, evil_data,
                                                                  evil):
    # data.root in the config (no --data): the data set is loaded (read only) before --out.
    if evil == "case id":
        meta = json.loads((evil_data / "dataset.json").read_text())
        (evil_data / "dataset.json").write_text(json.dumps({**meta, "name": "phantom"}))
    config = _write(tmp_path / "c.yaml", {"data": {"root": str(evil_data)}})
    before = _tree(tmp_path)
    rc = main(["train", str(config), "--profile", "smoke", "--out", str(tmp_path / "OUT")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {evil_data}") and err.count("\n") == 1
    shown = "key 'name' '../../EVILNAME'" if evil == "name" else "case id '../../../EVILCASE'"
    assert shown in err and "Traceback" not in err
    assert _tree(tmp_path) == before  # not even OUT


def test_train_checks_levels_against_the_prepared_shape_before_writing(tmp_path, capsys):
    data = make_phantom(tmp_path / "data", PhantomSpec(cases=3, shape=(16, 16, 12)))
    config = _write(tmp_path / "c.yaml", {"name": "mine", "train": {"steps": 500},
                                          "data": {"root": str(data)}})
    before = _tree(tmp_path)
    rc = main(["train", str(config), "--profile", "quick", "--out", str(tmp_path / "OUT")])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2
    assert err == [
        "profile quick overrides train.steps: 500 -> 600",
        f"error: {config}: trial mine: the prepared data's spatial shape [16, 16, 12] ({data}) "
        "is not divisible by 8 = 2**(levels-1) for model.channels [8, 16, 32, 64] (4 levels); "
        "prepare the data with sizes divisible by 8 or use fewer levels",
    ]
    assert _tree(tmp_path) == before
