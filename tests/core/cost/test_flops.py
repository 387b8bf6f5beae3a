"""`core/cost/flops.py`: FLOPs counted from HLO shapes equal hand counts, on programs compiled
by XLA:CPU and on a hand-written XLA:GPU text (cuDNN and cuBLAS custom calls, a loop)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from diffseg3d.core.cost.flops import compiled_flops, hlo_flops, valid_taps

DN = ("NDHWC", "DHWIO", "NDHWC")


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1, 1), "SAME", dimension_numbers=DN)


def test_a_3x3x3_conv_costs_two_flops_per_input_feature_output_feature_and_tap_on_the_input():
    x, w = jnp.ones((1, 8, 8, 4, 3)), jnp.ones((3, 3, 3, 3, 5))
    cost = compiled_flops(jax.jit(_conv).lower(x, w).compile())
    # Per dimension of size n, a 3-tap SAME window puts 3n - 2 of its 3n taps on the input (the
    # first and last output each have one on the padding).
    taps = (3 * 8 - 2) * (3 * 8 - 2) * (3 * 4 - 2)
    assert cost["conv_flops"] == 2 * 5 * 3 * taps and cost["convolutions"] == 1
    assert cost["conv_flops"] < 2 * (8 * 8 * 4) * 5 * 27 * 3  # every tap, padding included


def test_the_input_and_kernel_gradients_each_cost_one_forward_conv():
    x, w = jnp.ones((2, 8, 8, 4, 3)), jnp.ones((3, 3, 3, 3, 5))
    grad = jax.jit(jax.grad(lambda x, w: _conv(x, w).sum(), argnums=(0, 1)))
    cost = compiled_flops(grad.lower(x, w).compile())
    assert cost["conv_flops"] == 2 * (2 * 2 * 5 * 3 * 22 * 22 * 10)


@pytest.mark.parametrize("form", ["same", "stride 2", "rhs dilation", "transpose", "groups",
                                  "grad of transpose", "grad of stride 2"])
def test_the_count_equals_xla_cpus_own_cost_analysis_for_every_conv_form(form):
    x, w = jnp.ones((2, 8, 8, 4, 6)), jnp.ones((3, 3, 3, 6, 5))
    w2 = jnp.ones((2, 2, 2, 6, 5))

    def conv(strides=(1, 1, 1), **kw):
        return lambda x, w: jax.lax.conv_general_dilated(x, w, strides, "SAME",
                                                         dimension_numbers=DN, **kw)

    def transpose(x, w):
        return jax.lax.conv_transpose(x, w, (2, 2, 2), "SAME", dimension_numbers=DN)

    def grad(f):
        return jax.grad(lambda x, w: f(x, w).sum(), argnums=(0, 1))

    fn, args = {
        "same": (conv(), (x, w)), "stride 2": (conv((2, 2, 2)), (x, w)),
        "rhs dilation": (conv(rhs_dilation=(2, 1, 1)), (x, w)),
        "transpose": (transpose, (x, w2)),
        "groups": (conv(feature_group_count=3), (x, jnp.ones((3, 3, 3, 2, 6)))),
        "grad of transpose": (grad(transpose), (x, w2)),
        "grad of stride 2": (grad(conv((2, 2, 2))), (x, w)),
    }[form]
    cost = compiled_flops(jax.jit(fn).lower(*args).compile())
    # An independent count: XLA's HloCostAnalysis (the programs hold nothing but convs and sums).
    assert cost["conv_flops"] == cost["xla_flops"] > 0


def test_valid_taps_of_padding_strides_and_dilations_by_hand():
    # 1 input element padded by 127 on each side, a 128-wide window, 128 outputs: each output
    # has exactly one tap on the input (the outer product XLA:TPU writes as a convolution).
    assert valid_taps(1, 128, size=128, pad_low=127) == 128
    # 4 inputs, stride 2, 3 taps, pad 1: outputs 0 and 1 read input positions {0,1} and {1,2,3}.
    assert valid_taps(4, 2, size=3, stride=2, pad_low=1) == 5
    # Input dilated by 2, [a, hole, b], 2 taps, no padding: outputs 0, 1, 2 read positions
    # {0, 1}, {1, 2}, {2, 3}, of which only 0 (a), 2 (b) and 2 (b) are input elements.
    assert valid_taps(2, 3, size=2, lhs_dilate=2) == 3
    # Window dilation 2: taps 0 and 2 of a 3-tap window over 5 inputs, 3 outputs: all on input.
    assert valid_taps(5, 3, size=2, rhs_dilate=2) == 6


def test_a_loop_body_counts_once_per_iteration():
    a, b = jnp.ones((4, 16, 8)), jnp.ones((8, 6))

    def total(a, b):
        return jax.lax.scan(lambda c, ai: (c + (ai @ b).sum(), None), 0.0, a)[0]

    cost = compiled_flops(jax.jit(total).lower(a, b).compile())
    assert cost["dot_flops"] == 4 * 2 * 16 * 8 * 6 and cost["dots"] == 4


#: A hand-written XLA:GPU module: a loop of 8 iterations over three cuDNN convs, a cuBLAS
#: GEMM and a Triton GEMM fusion.
_GPU_TEXT = (Path(__file__).parent / "gpu_loop_step.hlo.txt").read_text()


def test_cudnn_convs_of_every_kind_and_cublas_and_triton_gemms_of_a_gpu_text():
    cost = hlo_flops(_GPU_TEXT)
    # forward output 4 features x 8x8x2, c_in 4; a 3-tap pad-1 window, 3n - 2 taps on the input
    conv = 2 * 4 * 4 * (3 * 8 - 2) * (3 * 8 - 2) * (3 * 2 - 2)
    assert cost["conv_flops"] == pytest.approx(8 * 3 * conv)  # three convs, 8 iterations
    assert cost["convolutions"] == 24
    gemm = 2 * 64 * 16 * 32
    assert cost["dot_flops"] == 2 * gemm  # the cuBLAS call and the Triton fusion's dot
    assert cost["flops"] == cost["conv_flops"] + cost["dot_flops"]


#: The outer product XLA:TPU writes as a convolution (seen in the sampler at 256x256x48): a 1x1
#: input padded by 127 and 23 on each side, a 128x24 window, so that each output position has
#: exactly one tap on the input.
_TPU_OUTER_PRODUCT = """HloModule outer

ENTRY %main (a: f32[2,3,1,1], b: f32[128,4,24,2]) -> f32[128,4,24,3] {
  %a = f32[2,3,1,1]{3,2,1,0} parameter(0)
  %b = f32[128,4,24,2]{3,2,1,0} parameter(1)
  ROOT %convolution.7 = f32[128,4,24,3]{3,2,1,0} convolution(%a, %b), """ \
    """window={size=128x24 pad=127_127x23_23}, dim_labels=fb01_0o1i->0f1b
}
"""


def test_an_outer_product_written_as_a_padded_conv_costs_one_tap_per_output():
    cost = hlo_flops(_TPU_OUTER_PRODUCT)
    # batch 3 x 4 output features x 2 input features, one tap per each of 128 x 24 outputs
    assert cost["conv_flops"] == 2 * 3 * 4 * 2 * (128 * 24)
    # Every window tap of every output would be 3,072 (= 128 x 24) times as much.


def test_bytes_count_each_kernel_reading_its_operands_and_writing_its_output():
    cost = hlo_flops(_GPU_TEXT)
    x = 2 * 4 * 8 * 8 * 2  # bf16 bytes of one (1,4,8,8,2) array
    w = 2 * 4 * 4 * 27
    per_iteration = (x + w + x) + (x + x + w) + (x + w + x)  # fwd, bw-filter, bw-input
    gemm = 2 * 64 * 32 + 2 * 32 * 16
    entry = (gemm + 4 * 64 * 16 + 1024) + (gemm + 2 * 64 * 16)  # cuBLAS (+workspace), fusion
    assert cost["bytes"] == 8 * per_iteration + entry


def test_a_text_without_an_entry_or_arithmetic_costs_nothing():
    assert hlo_flops("")["flops"] == 0
    assert hlo_flops("HloModule m\n\nENTRY %main () -> f32[] {\n  ROOT %c = f32[] constant(1)\n}\n"
                     )["flops"] == 0
