"""A prepared data set in nnU-Net v2's raw layout, with the project's split as nnU-Net's fold 0.

    <nnUNet_raw>/Dataset001_<name>/
        dataset.json                      channel names, labels, numTraining, file ending
        imagesTr/<case>_0000.nii.gz       train + valid cases (links to the prepared images)
        labelsTr/<case>.nii.gz            their label maps (links)
        imagesTs/<case>_0000.nii.gz       the scored split (eval.split), never trained on
    <nnUNet_preprocessed>/Dataset001_<name>/splits_final.json  (`write_splits`)
        [{"train": <train split>, "val": <valid split>}]: nnU-Net's fold 0 is exactly the
        project's train/valid split, so it never draws its own 5-fold split.

Pure functions (paths and JSON) and one writer; no PyTorch. The prepared volumes are already on
the prepared grid (spacing, shape) and normalised, so nnU-Net sees the same voxels as the other
methods; its own preprocessing (resampling to its target spacing, z-score per case) runs on top.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from diffseg3d.core.data.dataset import PreparedDataset

#: One data set per trial folder, so one fixed id: nnU-Net's names are `Dataset<3 digits>_<name>`.
DATASET_ID = 1
FILE_ENDING = ".nii.gz"
#: nnU-Net's channel suffix of the single (first) input channel.
CHANNEL_SUFFIX = "_0000"
#: The input channel's name in dataset.json. Not "CT": the prepared CT volumes are already clipped
#: and normalised, so nnU-Net's HU-based CT normalisation would be wrong; any other name gives
#: its per-case z-score.
CHANNEL_NAME = "image"
SPLITS_FINAL = "splits_final.json"


@dataclass(frozen=True)
class RawLayout:
    """Where one trial's nnU-Net folders are (`nnUNet_raw`, `nnUNet_preprocessed`,
    `nnUNet_results` under the trial's work folder) and its data set's name."""

    root: Path
    dataset_name: str

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.root / "nnUNet_results"

    @property
    def dataset_raw(self) -> Path:
        return self.raw / self.dataset_name

    @property
    def images_ts(self) -> Path:
        return self.dataset_raw / "imagesTs"

    @property
    def splits_file(self) -> Path:
        return self.preprocessed / self.dataset_name / SPLITS_FINAL

    def env(self) -> dict[str, str]:
        """The environment variables nnU-Net reads its three folders from."""
        return {"nnUNet_raw": str(self.raw), "nnUNet_preprocessed": str(self.preprocessed),
                "nnUNet_results": str(self.results)}


def dataset_folder_name(name: str, dataset_id: int = DATASET_ID) -> str:
    """`Dataset001_phantom`: nnU-Net's folder name; characters other than letters and digits
    in the data set's name become `_` (nnU-Net splits its names on the first `_`)."""
    return f"Dataset{dataset_id:03d}_{re.sub(r'[^A-Za-z0-9]', '_', name)}"


def dataset_json(class_names: list[str], num_training: int) -> dict:
    """nnU-Net's dataset.json: one input channel, background 0 and the classes 1..C-1 in the
    prepared order (label value i + 1 is `class_names[i]`), the number of training cases
    (imagesTr: train + valid) and the file ending."""
    labels = {"background": 0, **{name: i + 1 for i, name in enumerate(class_names)}}
    return {"channel_names": {"0": CHANNEL_NAME}, "labels": labels,
            "numTraining": num_training, "file_ending": FILE_ENDING}


def splits_final(train: list[str], valid: list[str]) -> list[dict[str, list[str]]]:
    """nnU-Net's splits_final.json with one fold, fold 0 = the project's train/valid split."""
    if not train or not valid:
        raise ValueError(f"nnU-Net needs train and valid cases, got {len(train)} train and "
                         f"{len(valid)} valid")
    return [{"train": list(train), "val": list(valid)}]


def link_or_copy(source: Path, target: Path) -> None:
    """`target` -> `source` as a symbolic link (nothing copied); a copy where the file system
    has no links. An existing target is replaced (a rerun writes the same layout)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        os.symlink(source.resolve(), target)
    except OSError:
        shutil.copyfile(source, target)


def write_raw_layout(dataset: PreparedDataset, layout: RawLayout, scored_split: str) -> None:
    """Write the raw data set: links and dataset.json (see module doc).

    `scored_split` (eval.split, normally test) goes to imagesTs only; imagesTr holds the train
    and valid cases, the only ones nnU-Net plans and trains on.
    """
    train, valid = dataset.case_ids("train"), dataset.case_ids("valid")
    folder = layout.dataset_raw
    for case_id in train + valid:
        link_or_copy(dataset.image_path(case_id),
                     folder / "imagesTr" / f"{case_id}{CHANNEL_SUFFIX}{FILE_ENDING}")
        link_or_copy(dataset.label_path(case_id), folder / "labelsTr" / f"{case_id}{FILE_ENDING}")
    for case_id in dataset.case_ids(scored_split):
        link_or_copy(dataset.image_path(case_id),
                     layout.images_ts / f"{case_id}{CHANNEL_SUFFIX}{FILE_ENDING}")
    write_json(folder / "dataset.json", dataset_json(dataset.class_names, len(train + valid)))


def write_splits(dataset: PreparedDataset, layout: RawLayout) -> Path:
    """splits_final.json in the preprocessed folder: fold 0 = the project's train/valid split.
    Written after nnU-Net's preprocessing (which creates that folder) and before training, where
    nnU-Net would otherwise draw its own 5-fold split."""
    return write_json(layout.splits_file,
                      splits_final(dataset.case_ids("train"), dataset.case_ids("valid")))


def write_json(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path
