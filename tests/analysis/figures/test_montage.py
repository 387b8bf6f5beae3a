"""The trial's per-case PNG and the paper figure draw one case with identical pixels."""

import matplotlib.image as mpimg
import numpy as np
from diffseg3d.analysis.figures.montage import prediction_montage
from diffseg3d.experiments.trial.montage import pick_slices, save_montage


def test_trial_png_and_paper_figure_are_the_same_pixels(tmp_path):
    rng = np.random.default_rng(3)
    label = np.zeros((12, 10, 5), np.int32)
    label[2:7, 1:4, 2] = 1   # an asymmetric blob: a flip in either axis would show
    label[8:11, 5:9, 2] = 2
    pred = np.roll(label, 1, axis=0)
    image = rng.random(label.shape).astype(np.float32) + label
    names, title = ["organ a", "organ b"], "case 7"
    [z] = pick_slices(label, 1)
    trial = mpimg.imread(save_montage(image, label, pred, tmp_path / "trial.png", names,
                                      num_slices=1, title=title))
    paper, _ = prediction_montage(
        image[..., z], [("label", label[..., z]), ("prediction", pred[..., z])], names,
        tmp_path / "paper", title=title, z=z)
    np.testing.assert_array_equal(trial, mpimg.imread(paper))
