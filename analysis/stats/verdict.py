"""One verdict per comparison: what a small study can and cannot say.

- `significant`: the paired t-test p (raw, the paper's criterion) is below alpha.
- `could have seen`: not significant, and the study could have seen an effect of size mde80:
  its (1 - alpha) interval of the difference lies strictly inside (-mde80, +mde80), so effects
  as large as those it had 80% power to detect are ruled out (also when |difference| >= mde80
  without significance, which a raw t-test p from the same differences cannot produce, but the
  definition stays total).
- `too small to tell`: not significant, |difference| < mde80, and the interval reaches past
  +-mde80: the study can neither show the difference nor rule out one it could have detected.
- `no test`: fewer than 3 paired cases or undefined statistics (said, never guessed).
"""

from __future__ import annotations

import math

import numpy as np

SIGNIFICANT = "significant"
COULD_HAVE_SEEN = "not significant, but could have seen an effect of this size"
TOO_SMALL = "too small to tell"
NO_TEST = "no test"
VERDICTS: tuple[str, ...] = (SIGNIFICANT, COULD_HAVE_SEEN, TOO_SMALL, NO_TEST)


def classify(mean_diff: float, p_ttest: float, mde: float, ci_low: float, ci_high: float,
             alpha: float) -> str:
    """One of `VERDICTS` from the mean paired difference, the raw t-test p, mde80 and the
    (1 - alpha) interval of the difference (module docstring)."""
    if np.isfinite(p_ttest) and p_ttest < alpha:
        return SIGNIFICANT
    if not all(np.isfinite(v) for v in (mean_diff, p_ttest, mde, ci_low, ci_high)):
        return NO_TEST
    if abs(mean_diff) >= mde or (-mde < ci_low and ci_high < mde):
        return COULD_HAVE_SEEN
    return TOO_SMALL


def _signed(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else "n/a"


def _plain(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def verdict_sentence(verdict: str, mean_diff: float, mde: float, ci_low: float,
                     ci_high: float, confidence: float) -> str:
    """The verdict in words, with the numbers it rests on (differences in the score's units)."""
    level = f"{100 * confidence:.0f}%"
    interval = f"{level} bootstrap interval [{_signed(ci_low)}, {_signed(ci_high)}]"
    if verdict == SIGNIFICANT:
        return (f"significant: difference {mean_diff:+.3f} ({interval}; the smallest difference "
                f"this study detects with 80% power is {_plain(mde)})")
    if verdict == COULD_HAVE_SEEN:
        return (f"not significant, but the study could have seen an effect of size {mde:.3f} "
                f"(80% power) and its {interval} rules out effects that large; difference "
                f"{mean_diff:+.3f}")
    if verdict == TOO_SMALL:
        return (f"too small to tell: difference {mean_diff:+.3f} is below {mde:.3f}, the "
                f"smallest this study detects with 80% power, and its {interval} does not rule "
                f"out an effect that large")
    what = "difference " + (f"{mean_diff:+.3f}" if math.isfinite(mean_diff) else "n/a")
    return f"no test: {what}; too few paired cases for a test, an interval or a power figure"
