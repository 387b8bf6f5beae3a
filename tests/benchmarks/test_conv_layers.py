"""``python -m benchmarks.gpu.conv_layers --small --json PATH`` (the command ``gpu_bench``
runs): one record per (level, kind, impl), with the shapes of the real U-Net's convs and usable
timings.

The expected layers come from the U-Net itself: every ``conv_general_dilated`` in the jaxpr of
``UNet(conv_impl="lax3d")`` at the ``--small`` size, not from the benchmark's own layer list.
"""

import collections
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from diffseg3d.core.models import UNet

from benchmarks.gpu.conv_layers import SMALL

# Its fixture compiles for several seconds: in make test, not in the edit-test loop.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
IMPLS = ("lax3d", "lax3d_s2d", "slices")
REQUIRED = {"level", "kind", "impl", "dtype", "shape", "fwd_s", "fwd_bwd_s", "bwd_over_fwd",
            "compile_s", "temp_bytes"}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    path = tmp_path_factory.mktemp("conv_layers") / "layers.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "benchmarks.gpu.conv_layers", "--small", "--repeats", "1",
           "--json", str(path)]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "fwd+bwd ms" in run.stdout  # the printed table
    return json.loads(path.read_text())


def _walk(jaxpr, out):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            out.append(eqn)
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                _walk(inner, out)
    return out


def _unet_convs() -> collections.Counter:
    """(op, input shape, kernel shape, output shape) -> count, from the U-Net's jaxpr."""
    shape, classes = SMALL["shape"], SMALL["classes"]
    model = UNet(num_classes=classes, channels=SMALL["channels"], conv_impl="lax3d")
    args = (jax.ShapeDtypeStruct((1, *shape, 1), jnp.float32),
            jax.ShapeDtypeStruct((1, *shape, classes), jnp.float32),
            jax.ShapeDtypeStruct((1,), jnp.float32))
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
    convs = collections.Counter()
    for eqn in _walk(jax.make_jaxpr(model.apply)(params, *args).jaxpr, []):
        if max(eqn.params["window_strides"]) == 2:
            op = "down"
        elif max(eqn.params["lhs_dilation"]) == 2:
            op = "up"
        else:
            op = "same"
        lhs, rhs = (v.aval.shape for v in eqn.invars)
        convs[(op, lhs, rhs, eqn.outvars[0].aval.shape)] += 1
    return convs


@pytest.mark.slow
def test_every_level_kind_and_impl_is_measured_once(records):
    levels = len(SMALL["channels"])
    expected = {(0, "stem")} | {(lv, "conv3") for lv in range(levels)}
    expected |= {(lv, kind) for lv in range(levels - 1) for kind in ("conv3_cat", "down", "up")}
    got = collections.Counter((r["level"], r["kind"], r["impl"]) for r in records)
    assert set(got) == {(lv, kind, impl) for lv, kind in expected for impl in IMPLS}
    assert set(got.values()) == {1}


def test_records_have_the_keys_and_usable_numbers(records):
    for r in records:
        assert REQUIRED <= set(r), sorted(REQUIRED - set(r))
        assert r["dtype"] == "bfloat16" and r["backend"] == "cpu"
        for key in ("fwd_s", "fwd_bwd_s", "compile_s"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["bwd_over_fwd"] == pytest.approx((r["fwd_bwd_s"] - r["fwd_s"]) / r["fwd_s"])
        assert isinstance(r["temp_bytes"], int) and r["temp_bytes"] >= 0


def test_layer_shapes_and_counts_are_the_unets(records):
    # The lax3d records, weighted by count, are exactly the U-Net's convs (shapes and number).
    op = {"stem": "same", "conv3": "same", "conv3_cat": "same", "down": "down", "up": "up"}
    got = collections.Counter()
    for r in records:
        if r["impl"] == "lax3d":
            key = (op[r["kind"]], tuple(r["shape"]), tuple(r["kernel_shape"]),
                   tuple(r["out_shape"]))
            got[key] += r["count"]
    assert got == _unet_convs()
    # Every record's shapes are its level's: down/up map level l to l + 1 (and back).
    for r in records:
        spatial = [n // 2 ** r["level"] for n in SMALL["shape"]]
        assert r["shape"][1:4] == (spatial if r["kind"] != "up" else [n // 2 for n in spatial])
        assert r["out_shape"][1:4] == (spatial if r["kind"] != "down" else
                                       [n // 2 for n in spatial])


def test_forms_with_the_same_ops_share_one_measurement(records):
    by_layer = collections.defaultdict(dict)
    for r in records:
        by_layer[(r["level"], r["kind"])][r["impl"]] = r
    for (_, kind), forms in by_layer.items():
        shared = ("lax3d", "lax3d_s2d") if kind not in ("down", "up") else ("slices", "lax3d_s2d")
        a, b = (forms[i] for i in shared)
        assert a["form"] == b["form"] and a["fwd_bwd_s"] == b["fwd_bwd_s"]
        other = ({"lax3d", "lax3d_s2d", "slices"} - set(shared)).pop()
        assert forms[other]["form"] != a["form"]
