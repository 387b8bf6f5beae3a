"""Each verdict from hand-made numbers, and the sentences carry them."""

import math

import pytest
from diffseg3d.analysis.stats.verdict import (
    COULD_HAVE_SEEN,
    NO_TEST,
    SIGNIFICANT,
    TOO_SMALL,
    classify,
    verdict_sentence,
)


@pytest.mark.parametrize("diff, p, mde, low, high, expected", [
    (0.030, 0.001, 0.020, 0.015, 0.045, SIGNIFICANT),
    (0.002, 0.600, 0.020, -0.008, 0.012, COULD_HAVE_SEEN),   # interval inside +-mde80
    (0.012, 0.040, 0.020, -0.001, 0.025, TOO_SMALL),          # interval reaches past mde80
    (-0.012, 0.040, 0.020, -0.026, 0.001, TOO_SMALL),         # ... or below -mde80
    (0.025, 0.020, 0.020, 0.001, 0.049, COULD_HAVE_SEEN),     # |diff| >= mde80, not significant
    (0.010, math.nan, math.nan, math.nan, math.nan, NO_TEST),
    (0.010, 0.300, math.nan, -0.01, 0.03, NO_TEST),
])
def test_classify(diff, p, mde, low, high, expected):
    assert classify(diff, p, mde, low, high, alpha=0.01) == expected


def test_sentences_state_the_numbers():
    text = verdict_sentence(COULD_HAVE_SEEN, 0.002, 0.0204, -0.008, 0.012, 0.99)
    assert "could have seen an effect of size 0.020" in text and "[-0.008, +0.012]" in text
    assert "99% bootstrap interval" in text
    small = verdict_sentence(TOO_SMALL, 0.012, 0.020, -0.001, 0.025, 0.99)
    assert small.startswith("too small to tell") and "+0.012" in small and "0.020" in small
    assert verdict_sentence(SIGNIFICANT, 0.03, math.nan, 0.01, 0.05, 0.99).startswith(
        "significant: difference +0.030")
    assert verdict_sentence(NO_TEST, math.nan, math.nan, math.nan, math.nan, 0.99).startswith(
        "no test")
