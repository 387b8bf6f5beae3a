"""Trials of a grid without a usable run are listed (never silently absent)."""

import pandas as pd
from diffseg3d.analysis.expected import expected_trial_names, missing_trials

GRID = """
name: tiny
seeds: [0, 1]
data_sets:
  phantom: data/phantom
base:
  method: diffusion
comparisons:
  - table: "1"
    axes:
      diffusion.recycling: [false, true]
"""


def test_expected_trials_come_from_the_grid_definition(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(GRID)
    names = expected_trial_names(path)
    assert len(names) == 4  # 2 recycling values x 2 seeds
    assert "phantom_diffusion_x0_recycle-N_dice-Y_k5_s1" in names


def test_missing_trials_distinguishes_absent_and_failed():
    runs = pd.DataFrame({
        "trial": ["a", "b", "b", "c"], "run_id": ["r1", "r2", "r3", "r4"],
        "status": ["FINISHED", "FAILED", "FINISHED", "FAILED"],
        "problem": [None, "status FAILED", None, "status FAILED"],
    })
    assert missing_trials(["a", "b", "c", "d"], runs) == [
        "c: no usable run (r4 FAILED)",
        "d: no run in the experiment",
    ]


def test_seeds_replace_the_grids_seeds_as_ablate_seeds_does(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(GRID)
    names = expected_trial_names(path, seeds=[0, 1, 2])
    assert len(names) == 6  # 2 recycling values x 3 seeds
    assert {n.rsplit("_", 1)[1] for n in names} == {"s0", "s1", "s2"}
    assert len(expected_trial_names(path, seeds=[5])) == 2
