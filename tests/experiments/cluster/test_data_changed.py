"""Prepared data changed in place between two runs of a grid: the rerun is refused before Ray
starts, in one line naming the folder and both digests (the MLflow dataset input's), so the
finished trials, trained on the old data, are neither mixed with new ones nor retrained."""

import pytest
import ray
import yaml
from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom
from diffseg3d.experiments.cluster.manifest import (
    DATA_DIGESTS_KEY,
    check_data_unchanged,
    data_digests,
    write_manifest,
)
from diffseg3d.experiments.cluster.runner import experiment_folder_name, run_grid
from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.grid import expand, grid_hash, load_grid
from diffseg3d.experiments.tracking.dataset_input import dataset_digest

SPEC = PhantomSpec(cases=6, shape=(16, 16, 8))


def test_digests_follow_the_data_and_a_change_is_refused(tmp_path):
    root = str(make_phantom(tmp_path / "phantom", SPEC))
    digests = data_digests([root, root, str(tmp_path / "not_prepared")])
    assert digests == {root: dataset_digest(PreparedDataset.load(root))}
    check_data_unchanged(None, digests, "exp")  # a first run
    check_data_unchanged({DATA_DIGESTS_KEY: dict(digests)}, digests, "exp")  # unchanged
    check_data_unchanged({}, digests, "exp")  # manifests written before digests existed

    make_phantom(root, PhantomSpec(cases=6, shape=(16, 16, 8), seed=1), overwrite=True)
    changed = data_digests([root])
    assert changed[root] != digests[root]
    with pytest.raises(ConfigError) as err:
        check_data_unchanged({DATA_DIGESTS_KEY: digests}, changed, "runs/ray_results/g_1")
    assert str(err.value) == (
        f"{root}: the prepared data changed since this grid's trials ran on it (digest "
        f"{digests[root]} -> {changed[root]}, as the MLflow runs' dataset input shows); its "
        "finished trials were trained and scored on the old data, so runs/ray_results/g_1 is "
        "not resumed: prepare the new data into another folder (or run with another --out), "
        "or put the old data back")


def test_run_grid_refuses_a_rerun_on_changed_data_before_ray_starts(tmp_path):
    root = make_phantom(tmp_path / "phantom", SPEC).resolve()
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "changed", "data_sets": {"phantom": "replaced"},
        "base": {"method": "unet", "train": {"steps": 2}, "optim": {"warmup_steps": 1}},
        "comparisons": [{"table": "1", "axes": {"seed": [0]}}]}))
    trials = expand(load_grid(grid), None, str(root))
    experiment = tmp_path / "runs" / "ray_results" / experiment_folder_name(
        "changed", grid_hash(trials))
    # What the first run recorded, before the data was prepared again in place.
    write_manifest(str(experiment), {DATA_DIGESTS_KEY: {str(root): "0123456789"}})
    assert not ray.is_initialized()
    with pytest.raises(ConfigError, match=r"the prepared data changed since this grid's trials "
                                          r"ran on it \(digest 0123456789 -> "):
        run_grid(grid, profile=None, data_override=root, out_dir=tmp_path / "runs")
    assert not ray.is_initialized()
