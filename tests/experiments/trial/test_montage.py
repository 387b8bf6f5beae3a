"""The PNG slice montage of a prediction."""

import numpy as np
import pytest
from diffseg3d.experiments.trial.montage import pick_slices, save_montage


def test_pick_slices_spans_the_foreground():
    label = np.zeros((4, 4, 10), np.int32)
    label[1, 1, 2:6] = 1
    assert pick_slices(label, 4) == [2, 3, 4, 5]
    assert pick_slices(label, 2) == [2, 5]
    assert pick_slices(np.zeros((2, 2, 5), np.int32), 3) == [0, 2, 4]


def test_save_montage_writes_one_row_per_slice(tmp_path):
    import matplotlib.image as mpimg

    label = np.zeros((8, 8, 6), np.int32)
    label[2:6, 2:6, 1:5] = 1
    image = label.astype(np.float32) + 0.1
    one = mpimg.imread(save_montage(image, label, label, tmp_path / "a.png", ["x"], num_slices=1))
    three = mpimg.imread(save_montage(image, label, label, tmp_path / "b.png", ["x"],
                                      num_slices=3))
    assert three.shape[0] > 2 * one.shape[0] * 0.8  # rows grow with the slice count
    with pytest.raises(ValueError, match=r"prediction \(8, 8, 5\)"):
        save_montage(image, label, label[..., :5], tmp_path / "c.png", ["x"])
