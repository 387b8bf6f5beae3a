"""A grid expanding to more trial configurations than its `max_trials` is refused before any
config is built, naming the count and every comparison's axes; `max_trials` raises the limit."""

import time

import pytest
import yaml
from diffseg3d.experiments.config.grid_file import DEFAULT_MAX_TRIALS
from diffseg3d.experiments.grid import GridError, expand, load_grid


def _grid(tmp_path, **extra):
    raw = {
        "name": "big", "seeds": [0, 1], "data_sets": {"d": str(tmp_path)},
        "base": {"method": "unet"},
        "comparisons": [{"table": "1", "axes": {"loss.dice": [False, True]}}],
        **extra,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_huge_grid_is_refused_before_any_config_is_built(tmp_path):
    lrs = [round(0.001 * (i + 1), 3) for i in range(30)]
    decays = [round(0.0001 * i, 4) for i in range(30)]
    path = _grid(tmp_path, seeds=list(range(10)), comparisons=[
        {"table": "1", "axes": {"optim.learning_rate": lrs, "optim.weight_decay": decays}},
        {"table": "2", "axes": {"loss.dice": [False, True]}},
    ])
    start = time.perf_counter()
    with pytest.raises(GridError) as err:
        expand(path, profile="smoke")
    assert time.perf_counter() - start < 2.0  # 9,020 configs would take far longer
    assert str(err.value) == (
        f"{path.resolve()}: the grid expands to 9,020 trial configurations, more than max_trials "
        f"{DEFAULT_MAX_TRIALS:,} (table 1: 1 data set x optim.learning_rate 30 x "
        "optim.weight_decay 30 x 10 seeds = 9,000; table 2: 1 data set x loss.dice 2 x 10 seeds "
        "= 20); fix the axes, or set max_trials: 9020 in the grid file to run them all")


def test_max_trials_in_the_grid_file_sets_the_limit(tmp_path):
    with pytest.raises(GridError, match="expands to 4 trial configurations, more than "
                                        "max_trials 3"):
        expand(_grid(tmp_path, max_trials=3))
    assert len(expand(_grid(tmp_path, max_trials=4))) == 4
    with pytest.raises(GridError, match="max_trials"):
        load_grid(_grid(tmp_path, max_trials=0))


def test_seeds_replaced_on_the_command_line_count(tmp_path):
    # `ablate --seeds` replaces the grid's seeds before expansion (runner.run_grid).
    grid = load_grid(_grid(tmp_path, max_trials=10))
    assert len(expand(grid)) == 4
    with pytest.raises(GridError, match=r"big: the grid expands to 12 trial configurations.*"
                                        r"loss\.dice 2 x 6 seeds = 12"):
        expand(grid.model_copy(update={"seeds": list(range(6))}))
