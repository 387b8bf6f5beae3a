"""The nnU-Net baseline in the grids: paper_nnunet.yaml is the paper grid plus one nnU-Net trial
per data set, sharing Table 2's diffusion and U-Net trials; nnU-Net trials are named by their
configuration and need no U-Net level rule."""

import json

import yaml
from diffseg3d.experiments.config.schema import config_hash
from diffseg3d.experiments.grid import GRIDS_DIR, expand, trial_name


def test_paper_nnunet_is_the_paper_grid_plus_one_nnunet_trial_per_data_set():
    paper = {t.name: config_hash(t.config) for t in expand(GRIDS_DIR / "paper.yaml")}
    both = {t.name: t for t in expand(GRIDS_DIR / "paper_nnunet.yaml")}
    added = sorted(set(both) - set(paper))
    assert added == ["amos-ct_nnunet_3d_fullres_s0", "prostate-mr_nnunet_3d_fullres_s0"]
    # The paper's trials are the same trials (same hashes): one run each when both grids run.
    assert {name: config_hash(both[name].config) for name in paper} == paper
    nnunet = both["prostate-mr_nnunet_3d_fullres_s0"].config
    assert nnunet.method == "nnunet" and nnunet.nnunet.budget == "steps"
    assert "2" in both["prostate-mr_nnunet_3d_fullres_s0"].tables
    table2 = {t.name for t in expand(GRIDS_DIR / "table2_nnunet.yaml")}
    assert table2 == {"prostate-mr_diffusion_x0_recycle-Y_dice-Y_k5_s0",
                      "prostate-mr_unet_dice-Y_s0", "prostate-mr_nnunet_3d_fullres_s0",
                      "amos-ct_diffusion_x0_recycle-Y_dice-Y_k5_s0", "amos-ct_unet_dice-Y_s0",
                      "amos-ct_nnunet_3d_fullres_s0"}


def test_nnunet_names_and_no_level_rule(tmp_path):
    trial = next(t for t in expand(GRIDS_DIR / "table2_nnunet.yaml")
                 if t.config.method == "nnunet")
    published = trial.config.model_copy(update={"nnunet": trial.config.nnunet.model_copy(
        update={"budget": "published"})})
    assert trial_name(published).endswith("_nnunet_3d_fullres_published_s0")
    # 12 is not divisible by the quick profile's 2**3: refused for the U-Net and diffusion
    # trials (test_grid.py), not for nnU-Net, which plans (and pads) its own network.
    data = tmp_path / "d"
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps({"name": "phantom", "shape": [16, 16, 12]}))
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "g", "data_sets": {"phantom": str(data)}, "base": {"method": "nnunet"},
        "comparisons": [{"table": "2", "axes": {"seed": [0]}}]}))
    assert [t.name for t in expand(grid, profile="quick")] == ["phantom_nnunet_3d_fullres_s0"]
