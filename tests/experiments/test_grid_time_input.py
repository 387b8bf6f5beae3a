"""The Table 3c by time input grid: four distinct trials under every profile (the time input
is an axis, so the paper profile's `index` does not replace `fraction`), and the data-size check
for the released network (every size divisible by 2**levels)."""

import json

import pytest
from diffseg3d.experiments.config.errors import GridError
from diffseg3d.experiments.config.layering import deep_merge, load_profile
from diffseg3d.experiments.config.schema import validate_config
from diffseg3d.experiments.grid import GRIDS_DIR, check_levels_fit, expand, trial_name


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_four_trials_each_time_input_with_both_step_counts(profile):
    trials = expand(GRIDS_DIR / "table3c_time_input.yaml", profile)
    got = {(t.config.diffusion.time_input, t.config.diffusion.train_steps): t for t in trials}
    assert set(got) == {("index", 1000), ("index", 5), ("fraction", 1000), ("fraction", 5)}
    assert len({t.name for t in trials}) == 4
    assert all(t.config.diffusion.sample_steps == 5 for t in trials)
    assert got[("index", 5)].config.tables == ["3c-index"]
    assert got[("fraction", 1000)].config.tables == ["3c-fraction"]
    assert got[("index", 1000)].name.endswith("_k1000_tindex_s0")
    assert got[("fraction", 5)].name.endswith("_k5_s0")


def test_trial_names_of_fraction_configs_are_unchanged():
    config = validate_config({"method": "diffusion"}, source="test")
    assert trial_name(config) == "phantom_diffusion_x0_recycle-Y_dice-Y_k5_s0"


def _prepared(tmp_path, shape):
    (tmp_path / "dataset.json").write_text(json.dumps({"shape": shape}))
    return str(tmp_path)


def test_released_network_needs_sizes_divisible_by_2_to_the_levels(tmp_path):
    root = _prepared(tmp_path, [32, 32, 8])
    paper = validate_config(deep_merge(load_profile("paper"), {"data": {"root": root}}),
                            source="test")
    with pytest.raises(GridError, match=r"divisible by 16 = 2\*\*levels for model.architecture "
                                        r"imgx_v010"):
        check_levels_fit(paper, "trial t")
    diffseg3d = paper.model_copy(update={"model": paper.model.model_copy(
        update={"architecture": "diffseg3d"})})
    check_levels_fit(diffseg3d, "trial t")  # 8 = 2**(4 - 1) divides 32, 32, 8
