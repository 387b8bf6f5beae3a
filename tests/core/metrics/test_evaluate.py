"""Per-case rows, CSV round trip and NaN-aware summaries."""

import math

import numpy as np
import pandas as pd
import pytest
from diffseg3d.core.metrics import (
    ROW_KEYS,
    evaluate_case,
    read_per_case_csv,
    summarise,
    write_per_case_csv,
)

NAMES = ["liver", "kidney", "pancreas"]


def _case():
    label = np.zeros((6, 6, 4), dtype=np.int32)
    label[0:2, 0:2, 0:2] = 1  # liver: 8 voxels
    label[4:6, 4:6, 2:4] = 2  # kidney: 8 voxels, missed by the prediction
    pred = np.zeros_like(label)
    pred[0:2, 0:2, 0:1] = 1  # 4 voxels inside liver
    return pred, label  # pancreas: in neither


def test_evaluate_case_rows():
    pred, label = _case()
    rows = evaluate_case("c01", pred, label, NAMES, spacing=(1.0, 1.0, 2.0))
    assert [tuple(row) for row in rows] == [ROW_KEYS] * 3
    liver, kidney, pancreas = rows
    assert liver["class"] == "liver" and liver["case"] == "c01"
    assert liver["dice"] == pytest.approx(2 * 4 / 12)
    assert liver["hd95"] == pytest.approx(2.0)  # label's far slice z=1 is one 2 mm slice away
    assert (liver["roi_voxels"], liver["roi_mm3"]) == (8, 16.0)
    assert kidney["dice"] == 0.0 and math.isnan(kidney["hd95"])
    assert kidney["pred_empty"] and not kidney["label_empty"]
    assert math.isnan(pancreas["dice"]) and pancreas["pred_empty"] and pancreas["label_empty"]


def test_evaluate_case_names_the_case_on_bad_input():
    pred, label = _case()
    with pytest.raises(ValueError, match="case 'c02'.*spacing"):
        evaluate_case("c02", pred, label, NAMES, spacing=(1.0, 1.0))


def test_csv_round_trip_keeps_nan_and_types(tmp_path):
    pred, label = _case()
    rows = evaluate_case("c01", pred, label, NAMES, (1.0, 1.0, 2.0))
    path = write_per_case_csv(rows, tmp_path / "sub" / "per_case_metrics.csv")
    back = read_per_case_csv(path)
    for row, again in zip(rows, back, strict=True):
        for key in ROW_KEYS:
            if isinstance(row[key], float) and math.isnan(row[key]):
                assert math.isnan(again[key])
            else:
                assert again[key] == row[key] and type(again[key]) is type(row[key])
    frame = pd.read_csv(path)  # what the analysis package does
    assert frame["hd95"].isna().sum() == 2 and frame["pred_empty"].dtype == bool


def test_summarise_skips_and_counts_nan():
    pred, label = _case()
    rows = evaluate_case("c01", pred, label, NAMES, (1.0, 1.0, 2.0))
    rows += evaluate_case("c02", label, label, NAMES, (1.0, 1.0, 2.0))
    summary = summarise(rows)
    assert summary["n_cases"] == 2 and summary["n_rows"] == 6
    # Dice rows: c01 (2/3, 0, NaN), c02 (1, 1, NaN).
    assert summary["mean_dice"] == pytest.approx((2 / 3 + 0 + 1 + 1) / 4)
    assert summary["n_nan_dice"] == 2 and summary["n_nan_hd95"] == 3
    assert summary["mean_hd95"] == pytest.approx((2.0 + 0.0 + 0.0) / 3)
    assert summary["mean_case_dice"] == pytest.approx(((2 / 3 + 0) / 2 + 1.0) / 2)
    assert summary["dice/liver"] == pytest.approx((2 / 3 + 1) / 2)
    assert math.isnan(summary["dice/pancreas"]) and summary["n_nan_dice/pancreas"] == 2


def test_write_rejects_rows_with_wrong_keys(tmp_path):
    with pytest.raises(ValueError, match="row 0"):
        write_per_case_csv([{"case": "a"}], tmp_path / "x.csv")


def test_mean_case_dice_by_hand_and_as_summarise():
    from diffseg3d.core.metrics.evaluate import mean_case_dice

    a_pred, a_label = np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])  # Dice 2/3 and 2/3
    b_pred, b_label = np.array([0, 1, 1, 0]), np.array([0, 1, 1, 0])  # 1 and NaN (class 2 absent)
    empty = np.zeros(4, dtype=int)  # both classes NaN: the case is skipped
    preds, labels = np.stack([a_pred, b_pred, empty]), np.stack([a_label, b_label, empty])
    assert mean_case_dice(preds, labels, 3) == pytest.approx((2 / 3 + 1) / 2, abs=1e-12)
    assert math.isnan(mean_case_dice(empty[None], empty[None], 3))
    pred, label = _case()
    rows = evaluate_case("c01", pred, label, NAMES, spacing=(1.0, 1.0, 2.0))
    rows += evaluate_case("c02", label, label, NAMES, spacing=(1.0, 1.0, 2.0))
    assert mean_case_dice(np.stack([pred, label]), np.stack([label, label]), 4) == pytest.approx(
        summarise(rows)["mean_case_dice"], abs=1e-12)
