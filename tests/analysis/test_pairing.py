"""Pairing: class mean, then seed mean, per case; unpaired cases reported and excluded."""

import numpy as np
import pandas as pd
import pytest
from diffseg3d.analysis.pairing import count_empty, pair_settings, per_case_scores


def _rows(run_id, values):
    """values: {case: [dice per class]}"""
    return pd.DataFrame([
        {"run_id": run_id, "case": case, "class": f"c{k}", "dice": v}
        for case, dices in values.items() for k, v in enumerate(dices)
    ])


def test_per_case_scores_mean_over_classes_then_seeds_skipping_nan():
    rows = pd.concat([
        _rows("seed0", {"a": [0.6, 0.8], "b": [0.5, np.nan]}),
        _rows("seed1", {"a": [0.4, 0.6], "b": [0.9, 0.7]}),
    ])
    scores = per_case_scores(rows, "dice")
    # a: seed0 0.7, seed1 0.5 -> 0.6; b: seed0 0.5 (NaN class skipped), seed1 0.8 -> 0.65.
    assert scores.to_dict() == {"a": pytest.approx(0.6), "b": pytest.approx(0.65)}
    assert count_empty(rows, "dice") == 1


def test_cases_in_one_setting_only_are_reported_and_excluded():
    ref = _rows("r", {"a": [0.5, 0.7], "b": [0.6, 0.6], "c": [np.nan, np.nan]})
    new = _rows("n", {"b": [0.8, 0.8], "a": [0.7, 0.9], "d": [0.1, 0.1]})
    pairing = pair_settings(ref, new, "dice")
    assert pairing.cases == ("a", "b")
    np.testing.assert_allclose(pairing.a, [0.6, 0.6])
    np.testing.assert_allclose(pairing.b, [0.8, 0.8])
    # c has no finite score at all, so it is in neither setting; d only in the new one.
    assert pairing.only_a == () and pairing.only_b == ("d",)


def test_long_rows_keep_each_seed_on_the_common_cases():
    ref = pd.concat([_rows("r0", {"a": [0.5, 0.7], "b": [0.6, 0.6]}).assign(seed=0),
                     _rows("r1", {"a": [0.3, 0.5], "b": [0.2, 0.4], "x": [0.1, 0.1]})
                     .assign(seed=1)])
    new = _rows("n0", {"a": [0.9, 0.9], "b": [0.8, np.nan]}).assign(seed=0)
    pairing = pair_settings(ref, new, "dice")
    long = pairing.long.set_index(["setting", "seed", "case"])["score"]
    # Per run the class mean (NaN skipped); case x (reference only) is not in the long rows.
    assert long.to_dict() == {("a", 0, "a"): pytest.approx(0.6), ("a", 0, "b"): pytest.approx(0.6),
                              ("a", 1, "a"): pytest.approx(0.4), ("a", 1, "b"): pytest.approx(0.3),
                              ("b", 0, "a"): pytest.approx(0.9), ("b", 0, "b"): pytest.approx(0.8)}
    # The seed-averaged pair is the mean of the long rows per case.
    np.testing.assert_allclose(pairing.a, [0.5, 0.45])
    assert pairing.n_seeds == 1  # the compared setting has one seed
    runs = pairing.long.set_index(["setting", "seed", "case"])["run"]
    assert runs[("a", 1, "a")] == "r1" and runs[("b", 0, "b")] == "n0"
