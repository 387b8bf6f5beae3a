"""`experiments/gpu_plan/targets.py`: the kept target configs say what their cards are, and each
parses as the pinned jaxlib's GPU compiler reads it (a deviceless topology names the card)."""

import json
import os
import subprocess
import sys

import pytest
from diffseg3d.experiments.gpu_plan import targets
from diffseg3d.experiments.gpu_plan.plan import subprocess_env

from tests.conftest import GPU_PLAN_SITE


def test_each_card_reads_its_name_memory_bandwidth_and_bf16_peak():
    a100, h100, h200 = (targets.card(k) for k in ("a100_sxm_80", "h100_sxm", "h200"))
    assert (a100.name, h100.name, h200.name) == (
        "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "NVIDIA H200 141GB HBM3e")
    assert h100.memory_bytes == 84942979072 and h200.memory_bytes == 151397597184
    assert h100.bandwidth == 3.35232e12 and h200.bandwidth == 4.8e12
    assert a100.bandwidth == 2.03904e12
    # Hopper's matrix units: 2 x 1.8295 GHz x 4 units x 512 bf16 FMA/clock x 132 SMs = 989 TFLOP/s,
    # NVIDIA's dense bf16 figure; the A100 config has no rates, so its data sheet's 312 TFLOP/s.
    assert h100.bf16_peak == pytest.approx(989.4e12, rel=1e-3) and h100.peak_source == (
        "target config")
    assert a100.bf16_peak == 312e12 and a100.peak_source == "data sheet"
    assert (a100.compute_capability, h100.compute_capability) == ("8.0", "9.0")


def test_an_unknown_card_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown GPU card 'v100'.*h100_sxm"):
        targets.card("v100")


_TOPOLOGY = """
import json
from diffseg3d.experiments.gpu_plan import targets
print(json.dumps({k: targets.device(k).device_kind for k in targets.CARDS}))
"""


@pytest.mark.requires("gpu-plan")
def test_every_target_config_parses_into_a_device_that_names_its_card():
    out = subprocess.run([sys.executable, "-c", _TOPOLOGY], env=subprocess_env(GPU_PLAN_SITE),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    kinds = json.loads(out.stdout.strip().splitlines()[-1])
    assert kinds == {k: targets.card(k).name for k in targets.CARDS}


def test_without_the_plugin_the_error_gives_the_install_command(tmp_path):
    env = {**os.environ, **targets.DEVICELESS_ENV, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", _TOPOLOGY], env=env, capture_output=True,
                         text=True, timeout=300)
    if "jax_plugins" in sys.modules or out.returncode == 0:
        pytest.skip("the CUDA plugin is installed in this environment itself")
    assert "make gpu-plan-deps" in out.stderr and "jax-cuda12-plugin==" in out.stderr
