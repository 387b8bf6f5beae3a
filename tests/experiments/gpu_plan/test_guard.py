"""The GPU program's conv guard (`experiments/gpu_plan/guard.py`): the paper profile's diffusion
train step compiled for an H100 without a GPU holds no pathological conv in the ``auto`` form,
and the guard catches it in ``lax3d`` (the up-conv kernel gradients over interior-padded
inputs)."""

import json
import subprocess
import sys

import pytest
from diffseg3d.experiments.gpu_plan.plan import subprocess_env

from tests.conftest import GPU_PLAN_SITE


def _guard(conv_impl: str) -> tuple[int, dict]:
    out = subprocess.run(
        [sys.executable, "-m", "diffseg3d.experiments.gpu_plan.guard", "--card", "h100_sxm",
         "--conv-impl", conv_impl], env=subprocess_env(GPU_PLAN_SITE), capture_output=True,
        text=True, timeout=600)
    assert out.stdout.strip(), out.stderr[-2000:]
    return out.returncode, json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.requires("gpu-plan")
def test_the_auto_form_compiles_for_an_h100_with_no_flagged_conv_and_lax3d_is_caught():
    rc, auto = _guard("auto")
    assert (rc, auto["healthy"], auto["flagged"], auto["padded_inputs"]) == (0, True, [], [])
    assert auto["convolutions"] > 20  # the U-Net's 3x3x3 convs went to cuDNN
    rc, lax3d = _guard("lax3d")
    assert rc == 1 and not lax3d["healthy"]
    # imgx_v010's four up-convs: each kernel gradient is a forward conv over a zero-interleaved
    # input whose window is a whole level.
    assert len(lax3d["flagged"]) == 4
    assert all("transpose(" in op and "up" in op and "_conv" in op
               for op in lax3d["flagged_ops"])
    assert all(max(w) > 3 for w in lax3d["flagged_windows"])
