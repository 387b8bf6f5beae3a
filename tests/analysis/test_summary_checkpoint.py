"""summary.md names, per collected trial, the parameters its test split was scored with."""

import pandas as pd
from diffseg3d.analysis.summary import checkpoint_lines, collection_section


def _runs():
    return pd.DataFrame([
        {"run_id": "r2", "trial": "b", "problem": None, "test_checkpoint": "12500 (last)",
         "samplers": None},
        {"run_id": "r1", "trial": "a", "problem": None, "test_checkpoint": "7500 (best_val)",
         "samplers": "ddim, ddpm_fixed_large, ddpm_fixed_small"},
        {"run_id": "r3", "trial": "c", "problem": "status FAILED", "test_checkpoint": None,
         "samplers": None},
        {"run_id": "r4", "trial": "d", "problem": None, "test_checkpoint": None,
         "samplers": None},
    ])


def test_one_line_per_collected_trial_in_name_order():
    lines = checkpoint_lines(_runs())
    assert lines[2:] == [
        "- a (r1): 7500 (best_val); sampled as ddim, ddpm_fixed_large, ddpm_fixed_small",
        "- b (r2): 12500 (last)",
        "- d (r4): not recorded",  # a run logged before the tag existed
    ]


def test_collection_section_carries_the_lines_and_none_without_runs():
    text = collection_section("src", _runs(), [], [])
    assert "- a (r1): 7500 (best_val)" in text and "(r3)" not in text.split("checkpoint")[-1]
    assert checkpoint_lines(_runs().iloc[:0]) == []
