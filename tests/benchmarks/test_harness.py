"""The benchmark harness maths and contracts (never timed): peak/FLOP-rate arithmetic, the
summary keys of latest.json, the config round trip, and the reference U-Net against the core
U-Net (same parameter tree, same function)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.models import UNet
from diffseg3d.core.models.conv import conv_lax

from benchmarks.cpu.configs import PAIRS, BenchConfig, plan
from benchmarks.cpu.machine import cpu_peak_flops
from benchmarks.cpu.measure import RESULT_PREFIX
from benchmarks.cpu.paired import paired_ratios
from benchmarks.cpu.reference_unet import ReferenceUNet, flip_upsample_kernels
from benchmarks.cpu.summary import summarise, verdicts
from benchmarks.probes.profile_step import conv_flops_from_hlo, hlo_opcodes
from benchmarks.run import parse_child_output, select
from benchmarks.throughput import (
    fraction_of_peak,
    gflops_per_second,
    median_seconds,
    ratio,
    xla_flops,
)

CONTRACT_KEYS = {
    "recycling_over_plain", "speedup_vs_reference_64x64x16", "speedup_vs_reference_96x96x32",
    "fraction_of_peak_96x96x32", "compile_s", "inference_over_forward",
    "peak_rss_gib_256x256x48",
}


def test_peak_of_two_cores_is_166_gflops():
    assert cpu_peak_flops(2) == pytest.approx(2 * 2.6e9 * 32)
    assert cpu_peak_flops(2) / 1e9 == pytest.approx(166.4)
    with pytest.raises(ValueError, match="cores"):
        cpu_peak_flops(0)


def test_flop_rate_and_fraction_of_peak():
    # 41.6 GFLOP in 0.5 s = 83.2 GFLOP/s = half of 166.4.
    gflops = gflops_per_second(41.6e9, 0.5)
    assert gflops == pytest.approx(83.2)
    assert fraction_of_peak(gflops, 166.4) == pytest.approx(0.5)
    assert gflops_per_second(None, 1.0) is None
    assert fraction_of_peak(None, 166.4) is None
    with pytest.raises(ValueError, match="step time"):
        gflops_per_second(1e9, 0.0)


def test_median_ignores_one_slow_step():
    assert median_seconds([1.0, 1.2, 9.0, 1.1, 0.9]) == pytest.approx(1.1)
    with pytest.raises(ValueError, match="no timed steps"):
        median_seconds([])


def test_xla_flops_reads_dict_or_list():
    assert xla_flops({"flops": 12.0, "bytes accessed": 3.0}) == 12.0
    assert xla_flops([{"flops": 5.0}]) == 5.0
    assert xla_flops(None) is None
    assert xla_flops({"flops": -1.0}) is None


def test_xla_flops_of_a_matmul_is_2mnk():
    a = jnp.ones((8, 16))
    b = jnp.ones((16, 4))
    compiled = jax.jit(jnp.matmul).lower(a, b).compile()
    assert xla_flops(compiled.cost_analysis()) == pytest.approx(2 * 8 * 16 * 4)


def _rec(name, step_s, **extra):
    return {"name": name, "status": "ok", "step_s": step_s, "workload": "train",
            "model": "ours", "compile_s": 10.0, **extra}


def test_summary_ratios_and_keys():
    records = {r["name"]: r for r in [
        _rec("train_diffusion_64x64x16", 2.0, compile_s=12.0),
        _rec("train_recycling_64x64x16", 2.6),
        _rec("reference_train_diffusion_64x64x16", 6.0, model="reference"),
        _rec("train_diffusion_96x96x32", 10.0, fraction_of_peak=0.4, compile_s=20.0),
        _rec("reference_train_diffusion_96x96x32", 35.0, model="reference"),
        _rec("forward_64x64x16", 0.5, workload="forward"),
        _rec("sample5_64x64x16", 2.5, workload="sample"),
        _rec("memory_remat_256x256x48", 100.0, peak_rss_gib=6.5,
             xla_memory_gib={"planned_peak": 7.0}),
    ]}
    paired = {"recycling_over_plain": {"status": "ok", "b_over_a": 1.25}}
    s = summarise(records, paired)
    assert CONTRACT_KEYS <= set(s)
    # The contract ratio is the interleaved one; the separate-process ratio rides along.
    assert s["recycling_over_plain"] == pytest.approx(1.25)
    assert s["recycling_over_plain_separate"] == pytest.approx(1.3)
    assert s["speedup_vs_reference_64x64x16"] == pytest.approx(3.0)
    assert s["speedup_vs_reference_96x96x32"] == pytest.approx(3.5)
    assert s["fraction_of_peak_96x96x32"] == pytest.approx(0.4)
    assert s["compile_s"] == pytest.approx(12.0)
    assert s["compile_s_max"] == pytest.approx(20.0)
    assert s["inference_over_forward"] == pytest.approx(5.0)
    assert s["peak_rss_gib_256x256x48"] == pytest.approx(6.5)
    assert s["planned_peak_gib_256x256x48"] == pytest.approx(7.0)
    v = verdicts(s)
    assert v["recycling_over_plain"] == "pass"
    assert v["fraction_of_peak_96x96x32"] == "FAIL"


def test_summary_is_none_for_failed_configs():
    records = {
        "train_diffusion_64x64x16": _rec("train_diffusion_64x64x16", 2.0),
        "train_recycling_64x64x16": {"name": "train_recycling_64x64x16", "status": "timeout"},
    }
    s = summarise(records, {"recycling_over_plain": {"status": "timeout"}})
    assert s["recycling_over_plain"] is None
    assert s["recycling_over_plain_separate"] is None
    assert verdicts(s)["recycling_over_plain"] == "missing"
    assert ratio(None, 2.0) is None


def test_plan_names_feed_the_summary_and_are_unique():
    configs = plan()
    names = [c.name for c in configs]
    assert len(names) == len(set(names))
    needed = {"train_diffusion_64x64x16", "train_recycling_64x64x16",
              "reference_train_diffusion_64x64x16", "train_diffusion_96x96x32",
              "reference_train_diffusion_96x96x32", "forward_64x64x16", "sample5_64x64x16",
              "memory_remat_256x256x48"}
    default = {c.name for c in select(configs, [], ["contract", "memory"])}
    assert needed <= default
    assert {c.size for c in plan(quick=True)} == {(32, 32, 16)}
    gpu_sizes = {c.size for c in plan(gpu=True)}
    assert (192, 128, 128) in gpu_sizes and (256, 256, 48) in gpu_sizes
    assert (192, 128, 128) not in {c.size for c in configs}
    with pytest.raises(SystemExit, match="nope"):
        select(configs, ["nope"], [])
    for a_name, b_name in PAIRS.values():
        assert {a_name, b_name} <= default


def test_config_round_trip_and_bad_values():
    cfg = BenchConfig("x", size=(64, 64, 16), conv_channels=(64, 64), xla_flags="--a=1")
    assert BenchConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="dtype='float16'"):
        BenchConfig("bad", dtype="float16")
    with pytest.raises(ValueError, match="recycling"):
        BenchConfig("bad", method="unet", recycling=True)


def test_child_output_parsing():
    rec = {"name": "a", "step_s": 1.5}
    out = "noise\n" + RESULT_PREFIX + json.dumps(rec) + "\n"
    assert parse_child_output(out) == rec
    assert parse_child_output("no result here") is None


@pytest.mark.slow
@pytest.mark.parametrize("diffusion", [True, False])
def test_reference_is_the_same_network(diffusion):
    """Same parameter tree (so the same size and FLOPs) and, with the up-sampling kernels
    flipped, the same outputs as the core UNet in its lax3d form."""
    key = jax.random.PRNGKey(0)
    image = jax.random.normal(key, (1, 8, 8, 4, 1))
    x_t = jax.random.normal(jax.random.PRNGKey(1), (1, 8, 8, 4, 3))
    args = (image, x_t, jnp.array([0.3])) if diffusion else (image,)
    ours = UNet(num_classes=3, channels=(4, 8), conv_impl="lax3d", diffusion=diffusion)
    ref = ReferenceUNet(num_classes=3, channels=(4, 8), diffusion=diffusion)
    params = ours.init(key, *args)["params"]
    ref_params = ref.init(key, *args)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(ref_params)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, ref_params)
    expected = ours.apply({"params": params}, *args)
    got = ref.apply({"params": flip_upsample_kernels(params)}, *args)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Without the flip the up-sampling differs: the comparison above can fail.
    unflipped = ref.apply({"params": params}, *args)
    assert float(jnp.max(jnp.abs(unflipped - expected))) > 1e-3


def test_reference_param_count_matches_paper_unet():
    key = jax.random.PRNGKey(0)
    shape = (1, 16, 16, 8)
    args = (jnp.zeros((*shape, 1)), jnp.zeros((*shape, 9)), jnp.zeros((1,)))
    count = lambda m: sum(x.size for x in jax.tree.leaves(
        jax.eval_shape(lambda: m.init(key, *args))))
    n_ref = count(ReferenceUNet(num_classes=9))
    assert n_ref == count(UNet(num_classes=9))
    assert n_ref > 10_000_000  # four levels 32..256, two blocks each: ~13.4 M parameters


def test_conv_flops_from_hlo_counts_forward_and_both_gradients():
    """fwd, input-grad and kernel-grad convs each cost 2 * cin * cout per tap on the input: a
    3-tap SAME window has 3n - 2 of them along a dimension of size n."""
    x = jnp.ones((1, 8, 8, 4, 3))
    w = jnp.ones((3, 3, 3, 3, 5))
    loss = lambda x, w: jnp.sum(conv_lax(x, w) ** 2)
    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()
    flops = conv_flops_from_hlo(hlo)
    assert len(flops) == 3
    assert sum(flops.values()) == pytest.approx(3 * 2 * 3 * 5 * 22 * 22 * 10)
    opcodes = hlo_opcodes(hlo)
    assert all(opcodes[name] == "convolution" for name in flops)


def test_paired_ratio_is_per_round():
    # Round 2 ran under a neighbour's burst (both sides 2x slower): the ratio stays 1.5.
    assert paired_ratios([1.0, 2.0, 1.0], [1.5, 3.0, 1.5]) == pytest.approx([1.5, 1.5, 1.5])
    with pytest.raises(ValueError, match="equal"):
        paired_ratios([1.0], [1.0, 2.0])
