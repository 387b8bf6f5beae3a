"""The test means a trial logs: `test_dice_std` / `test_hd95_std` are the std over cases of the
per-case class means (as the tables), not over (case, class) rows; hand-computed values."""

import math

import numpy as np
import pytest
from diffseg3d.experiments.trial import scoring

NAN = math.nan
# case -> [(class, dice, hd95)]: per-case Dice means 0.8 (NaN skipped), 0.5, 0.2.
CASES = {
    "a": [("k1", 0.8, 1.0), ("k2", NAN, NAN)],
    "b": [("k1", 0.4, 3.0), ("k2", 0.6, 5.0)],
    "c": [("k1", 0.2, 8.0), ("k2", 0.2, 8.0)],
}


def _rows():
    return [{"case": case, "class": cls, "dice": dice, "hd95": hd95, "nsd": dice,
             "roi_voxels": 10, "roi_mm3": 10.0, "pred_empty": False, "label_empty": False}
            for case, entries in CASES.items() for cls, dice, hd95 in entries]


def test_std_is_over_per_case_means_with_ddof_1():
    means = scoring.test_means(_rows(), "test", ["k1", "k2"])
    # Dice case means 0.8, 0.5, 0.2: mean 0.5, sample std sqrt((0.09 + 0 + 0.09) / 2) = 0.3.
    assert means["test_dice"] == pytest.approx(0.5)
    assert means["test_dice_std"] == pytest.approx(0.3)
    # HD95 case means 1, 4, 8: mean 13/3, sample std of (1, 4, 8).
    assert means["test_hd95"] == pytest.approx(13 / 3)
    assert means["test_hd95_std"] == pytest.approx(np.std([1.0, 4.0, 8.0], ddof=1))
    # Not the std over the five finite (case, class) rows.
    rows_std = np.std([0.8, 0.4, 0.6, 0.2, 0.2])
    assert not np.isclose(means["test_dice_std"], rows_std)


def test_std_is_nan_for_one_case_and_prefixed_by_split():
    rows = [r for r in _rows() if r["case"] == "b"]
    means = scoring.test_means(rows, "valid", ["k1", "k2"])
    assert means["valid_dice"] == pytest.approx(0.5)
    assert math.isnan(means["valid_dice_std"]) and math.isnan(means["valid_hd95_std"])
