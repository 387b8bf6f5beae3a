"""The nnU-Net raw layout (links, dataset.json, splits_final.json) and the budget arithmetic."""

from __future__ import annotations

import json

import pytest
from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom
from diffseg3d.experiments.trial.nnunet import budget, layout


def test_budget_steps_is_exact_and_keeps_nnunet_epoch_size():
    b = budget.budget_for("steps", 600)
    assert (b.epochs, b.iterations_per_epoch, b.iterations) == (3, 200, 600)
    assert b.val_iterations_per_epoch == 40 and b.save_every == 1
    assert budget.budget_for("steps", 4).iterations == 4
    assert budget.budget_for("steps", 251).iterations >= 251  # prime: rounded up, said so


def test_budget_published_is_nnunets_own():
    b = budget.budget_for("published", 4)
    assert (b.epochs, b.iterations_per_epoch, b.val_iterations_per_epoch) == (1000, 250, 50)
    with pytest.raises(ValueError, match="nnunet.budget"):
        budget.budget_for("epochs", 4)


def test_dataset_json_and_splits():
    content = layout.dataset_json(["liver", "kidney"], 5)
    assert content["labels"] == {"background": 0, "liver": 1, "kidney": 2}
    assert content["channel_names"] == {"0": "image"} and content["file_ending"] == ".nii.gz"
    assert layout.splits_final(["a", "b"], ["c"]) == [{"train": ["a", "b"], "val": ["c"]}]
    with pytest.raises(ValueError, match="valid"):
        layout.splits_final(["a"], [])
    assert layout.dataset_folder_name("prostate-mr") == "Dataset001_prostate_mr"


def test_raw_layout_links_train_valid_to_imagesTr_and_the_scored_split_to_imagesTs(tmp_path):
    dataset = PreparedDataset.load(make_phantom(tmp_path / "ph", PhantomSpec(cases=6,
                                                                           shape=(8, 8, 8))))
    lay = layout.RawLayout(tmp_path / "nn", layout.dataset_folder_name(dataset.name))
    layout.write_raw_layout(dataset, lay, "test")
    layout.write_splits(dataset, lay)
    trained = dataset.case_ids("train") + dataset.case_ids("valid")
    images_tr = sorted(p.name for p in (lay.dataset_raw / "imagesTr").iterdir())
    assert images_tr == sorted(f"{c}_0000.nii.gz" for c in trained)
    assert sorted(p.name for p in lay.images_ts.iterdir()) == sorted(
        f"{c}_0000.nii.gz" for c in dataset.case_ids("test"))
    link = lay.dataset_raw / "labelsTr" / f"{trained[0]}.nii.gz"
    assert link.is_symlink() and link.resolve() == dataset.label_path(trained[0]).resolve()
    meta = json.loads((lay.dataset_raw / "dataset.json").read_text())
    assert meta["numTraining"] == len(trained)
    assert json.loads(lay.splits_file.read_text()) == [
        {"train": dataset.case_ids("train"), "val": dataset.case_ids("valid")}]


def test_fixed_epochs_reach_the_steps_in_whole_epochs():
    b = budget.budget_for("steps", 7, iterations_per_epoch=3)
    assert (b.epochs, b.iterations_per_epoch, b.iterations, b.save_every) == (3, 3, 9, 1)
    assert budget.budget_for("steps", 500, iterations_per_epoch=250).epochs == 2
    assert budget.budget_for("steps", 500, 250).val_iterations_per_epoch == 50
    with pytest.raises(ValueError, match="iterations_per_epoch must be >= 1"):
        budget.budget_for("steps", 5, iterations_per_epoch=0)
