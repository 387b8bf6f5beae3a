"""Config and grid YAML is loaded safely and strictly: an alias bomb, a `!!python/...` tag, a
duplicate key, a recursive alias or too deep a nesting is refused with one line naming the
file (and the line), before anything is built from it."""

import time

import pytest
from diffseg3d.cli.main import main
from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.config.layering import (
    MAX_YAML_VALUES,
    YamlRefused,
    load_config,
    load_yaml_text,
    parse_set,
    read_yaml,
)
from diffseg3d.experiments.grid import GridError, expand, load_grid

#: "Billion laughs": 10**9 values from nine lines of aliases.
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True))

GRID = """\
name: g
data_sets: {{d: {root}}}
base: {{method: unet}}
comparisons:
  - table: "1"
    axes:
      loss.dice: [false, true]
{extra}"""


def _one_line(message: str) -> str:
    assert "\n" not in message, message
    return message


def test_alias_bomb_in_a_config_is_refused_quickly_naming_the_file(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert time.perf_counter() - start < 1.0
    message = _one_line(str(err.value))
    assert message.startswith(f"{path}: line ")
    assert f"more than {MAX_YAML_VALUES:,} values (an alias bomb?)" in message


def test_alias_bomb_in_a_grid_is_a_grid_error_naming_the_file(tmp_path):
    path = tmp_path / "bomb grid.yaml"
    path.write_text(GRID.format(root=tmp_path, extra="") + "junk:\n" + "".join(
        "  " + line + "\n" for line in BOMB.splitlines()))
    start = time.perf_counter()
    with pytest.raises(GridError) as err:
        load_grid(path)
    assert time.perf_counter() - start < 1.0
    assert _one_line(str(err.value)).startswith(f"{path.resolve()}: line ")
    assert "alias bomb" in str(err.value)


def test_a_few_aliases_and_merge_keys_still_load(tmp_path):
    text = ("base: &b {steps: 2, lr: 0.1}\n"
            "one: *b\n"
            "two:\n  <<: *b\n  steps: 5\n")
    assert load_yaml_text(text) == {"base": {"steps": 2, "lr": 0.1}, "one": {"steps": 2, "lr": 0.1},
                                    "two": {"steps": 5, "lr": 0.1}}


def test_python_tag_is_refused_naming_file_and_line_and_runs_nothing(tmp_path):
    made = tmp_path / "made_by_yaml"
    path = tmp_path / "evil.yaml"
    path.write_text(f"seed: 1\ntrain:\n  steps: !!python/object/apply:os.mkdir [{made}]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = _one_line(str(err.value))
    assert message.startswith(f"{path}: line 3: tag !!python/object/apply:os.mkdir is not "
                              "allowed")
    assert not made.exists()


@pytest.mark.parametrize("tag", ["!!python/object:os.system", "!!python/name:os.system",
                                 "!custom"])
def test_any_non_data_tag_is_refused(tag):
    with pytest.raises(YamlRefused, match=f"line 2: tag {tag} is not allowed"):
        load_yaml_text(f"a: 1\nb: {tag} x\n")


def test_duplicate_key_is_refused_naming_key_file_and_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  steps: 10\nseed: 3\ntrain:\n  steps: 500\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert _one_line(str(err.value)) == (
        f"{path}: line 4: duplicate key 'train' (first at line 1); each key may appear once "
        "in a mapping")


def test_duplicate_axis_in_a_grid_is_refused(tmp_path):
    path = tmp_path / "dup_axis.yaml"
    path.write_text(GRID.format(root=tmp_path, extra="      loss.dice: [true]\n"))
    with pytest.raises(GridError, match=r"dup_axis.yaml: line 8: duplicate key 'loss.dice' "
                                        r"\(first at line 7\)"):
        expand(path)


def test_duplicate_key_in_a_flow_mapping_and_in_set_values():
    with pytest.raises(YamlRefused, match="line 1: duplicate key 'a'"):
        load_yaml_text("{a: 1, b: 2, a: 3}")
    with pytest.raises(ConfigError, match=r"--set 'model=\{x: 1, x: 2\}'.*duplicate key 'x'"):
        parse_set("model={x: 1, x: 2}")
    with pytest.raises(ConfigError, match="--set.*tag !!python/name:os.system is not allowed"):
        parse_set("train.steps=!!python/name:os.system")


def test_recursive_alias_and_deep_nesting_are_refused(tmp_path):
    with pytest.raises(YamlRefused, match="line 2: a recursive alias"):
        load_yaml_text("a: 1\nb: &x [1, *x]\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(ConfigError, match=r"deep.yaml: .*nested deeper than 100 levels"):
        read_yaml(deep)


def test_syntax_error_is_one_line_with_its_position(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 1\ndata: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    message = _one_line(str(err.value))
    assert message.startswith(f"{path}: not valid YAML: ")
    assert message.endswith("(line 3, column 1)")


def test_the_command_line_prints_one_error_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text("seed: 1\nseed: 2\n")
    assert main(["train", str(path), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {path}: line 2: duplicate key 'seed' (first at line 1); each key "
                   "may appear once in a mapping\n")
    assert not (tmp_path / "runs").exists()
