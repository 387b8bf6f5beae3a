"""Which accelerator counts a trial may ask for: the rules of `resources.accelerators_per_trial`
that `sections.ResourcesConfig` checks (Ray's side of the request: `cluster/resources.py`)."""

from __future__ import annotations

import math

#: TPU chip counts Ray accepts for one request (`ray._private.accelerators.tpu`).
TPU_CHIP_COUNTS = (1, 2, 4, 8)


def check_accelerator_count(accelerator: str, count: float | None) -> None:
    """Raise ValueError naming the key unless `count` suits `accelerator` (None = default)."""
    key = "resources.accelerators_per_trial"
    if count is None:
        return
    if isinstance(count, bool) or not isinstance(count, int | float) or math.isnan(count):
        raise ValueError(f"{key}={count!r}: expected a number")
    if accelerator == "cpu":
        raise ValueError(
            f"{key}={count:g} with resources.accelerator=cpu: a CPU trial has no accelerators "
            "(leave it unset, or set resources.accelerator to gpu or tpu)"
        )
    if count <= 0:
        raise ValueError(f"{key}={count:g}: must be > 0 for resources.accelerator={accelerator}")
    if accelerator == "gpu" and count > 1 and not float(count).is_integer():
        raise ValueError(
            f"{key}={count:g}: GPU fractions must be < 1 (several trials per GPU); above 1 use "
            "a whole number of GPUs"
        )
    if accelerator == "tpu" and count not in TPU_CHIP_COUNTS:
        raise ValueError(
            f"{key}={count:g} with resources.accelerator=tpu: Ray accepts {TPU_CHIP_COUNTS} "
            "TPU chips per request (4 = a v4-8 host, 8 = a v5e-8/v6e-8 host)"
        )
