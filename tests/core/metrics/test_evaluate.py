"""Per-case rows, CSV round trip and NaN-aware summaries."""

import math

import numpy as np
import pandas as pd
import pytest
from diffseg3d.core.metrics import (
    ROW_KEYS,
    case_mean_dice,
    evaluate_case,
    mean_case_dice_per_step,
    nsd_per_class,
    read_per_case_csv,
    summarise,
    write_per_case_csv,
)
from scipy import ndimage

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


def _random_case(seed, shape=(12, 10, 6), classes=4):
    rng = np.random.default_rng(seed)
    fields = ndimage.gaussian_filter(rng.standard_normal((2, classes, *shape)), (0, 0, 2, 2, 1))
    return np.argmax(fields[0] + 0.7 * fields[1], axis=0), np.argmax(fields[0], axis=0)


@pytest.mark.parametrize("tolerance", [0.0, 1.0, 2.0, 3.5])
def test_nsd_column_equals_nsd_per_class(tolerance):
    pred, label = _random_case(3)
    spacing = (0.8, 1.1, 2.5)
    rows = evaluate_case("c01", pred, label, ["a", "b", "c"], spacing, nsd_tolerance_mm=tolerance)
    expected = nsd_per_class(pred, label, 4, spacing, tolerance)
    np.testing.assert_array_equal([row["nsd"] for row in rows], expected)
    assert 0.0 < np.nanmin(expected) and np.nanmax(expected) <= 1.0


def test_nsd_default_tolerance_and_empty_masks():
    pred, label = _case()
    rows = evaluate_case("c01", pred, label, NAMES, spacing=(1.0, 1.0, 2.0))
    liver, kidney, pancreas = rows
    # Liver: the label's 8 voxels are all surface; its far slice (z=1) is 2 mm from the
    # prediction's slice, within the default 2 mm, so every surface voxel counts.
    assert liver["nsd"] == 1.0
    assert kidney["nsd"] == 0.0  # empty prediction: no surface voxel within any tolerance
    assert math.isnan(pancreas["nsd"])  # empty in both: NaN, counted by summarise
    tight = evaluate_case("c01", pred, label, NAMES, (1.0, 1.0, 2.0), nsd_tolerance_mm=1.0)
    assert tight[0]["nsd"] == pytest.approx(8 / 12)  # the 4 voxels of the far slice miss


def test_nsd_tolerance_must_be_finite_and_not_negative():
    pred, label = _case()
    with pytest.raises(ValueError, match="case 'c01'.*tolerance"):
        evaluate_case("c01", pred, label, NAMES, (1.0, 1.0, 2.0), nsd_tolerance_mm=-1.0)


def test_nsd_csv_round_trip_and_summary(tmp_path):
    rows = []
    for seed in range(3):
        pred, label = _random_case(seed)
        rows += evaluate_case(f"c{seed}", pred, label, ["a", "b", "c"], (1.0, 1.0, 2.0))
    back = read_per_case_csv(write_per_case_csv(rows, tmp_path / "m.csv"))
    np.testing.assert_array_equal([r["nsd"] for r in back], [r["nsd"] for r in rows])
    summary = summarise(back)
    values = np.array([r["nsd"] for r in rows])
    assert summary["mean_nsd"] == pytest.approx(np.nanmean(values), abs=1e-12)
    assert summary["n_nan_nsd"] == int(np.isnan(values).sum())
    assert summary["nsd/b"] == pytest.approx(np.nanmean(values[1::3]), abs=1e-12)


def test_read_rejects_a_csv_without_the_nsd_column(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text(",".join(ROW_KEYS[:-1]) + "\nc,a,1.0,0.0,8,8.0,False,False\n")
    with pytest.raises(ValueError, match="old.csv.*columns"):
        read_per_case_csv(path)


def test_dice_per_step_last_step_is_the_prediction_and_hand_values():
    label = np.array([[0, 1, 1, 2], [0, 1, 2, 2]])
    step_preds = np.stack([
        np.zeros_like(label),  # no foreground: Dice 0 for both classes in both cases
        np.array([[0, 1, 1, 1], [0, 1, 2, 2]]),  # case 0: (1, 0) -> 0.5; case 1: 1
        label,  # perfect
    ])
    per_step = mean_case_dice_per_step(step_preds, label, 3)
    assert len(per_step) == 3 and per_step[0] == 0.0 and per_step[2] == 1.0
    case0 = (2 * 2 / 5 + 0.0) / 2  # class 1: 2 of pred 3 vs label 2 -> 4/5; class 2: 0
    assert per_step[1] == pytest.approx((case0 + 1.0) / 2, abs=1e-12)
    np.testing.assert_allclose(case_mean_dice(step_preds[1], label, 3), [case0, 1.0])
    rows = evaluate_case("a", step_preds[1][0], label[0], ["x", "y"], (1.0,))
    rows += evaluate_case("b", step_preds[1][1], label[1], ["x", "y"], (1.0,))
    assert per_step[1] == summarise(rows)["mean_case_dice"]  # exactly, not approximately
