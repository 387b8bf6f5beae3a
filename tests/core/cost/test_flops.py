"""`core/cost/flops.py`: FLOPs counted from HLO shapes equal hand counts, on programs compiled
by XLA:CPU and on a hand-written XLA:GPU text (cuDNN and cuBLAS custom calls, a loop)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from diffseg3d.core.cost.flops import compiled_flops, hlo_flops

DN = ("NDHWC", "DHWIO", "NDHWC")


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1, 1), "SAME", dimension_numbers=DN)


def test_a_3x3x3_conv_costs_two_flops_per_tap_input_feature_and_output_voxel():
    x, w = jnp.ones((1, 8, 8, 4, 3)), jnp.ones((3, 3, 3, 3, 5))
    cost = compiled_flops(jax.jit(_conv).lower(x, w).compile())
    hand = 2 * (8 * 8 * 4) * 5 * 27 * 3  # 2 * voxels * c_out * k^3 * c_in
    assert cost["conv_flops"] == hand and cost["convolutions"] == 1
    # XLA:CPU's own count leaves out the taps that fall on the zero padding: fewer.
    assert cost["xla_flops"] < hand and cost["flops"] == hand


def test_the_input_and_kernel_gradients_each_cost_one_forward_conv():
    x, w = jnp.ones((2, 8, 8, 4, 3)), jnp.ones((3, 3, 3, 3, 5))
    grad = jax.jit(jax.grad(lambda x, w: _conv(x, w).sum(), argnums=(0, 1)))
    cost = compiled_flops(grad.lower(x, w).compile())
    assert cost["conv_flops"] == 2 * (2 * 2 * 8 * 8 * 4 * 5 * 27 * 3)


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
    conv = 2 * (4 * 8 * 8 * 2) * 27 * 4  # forward output 4 features x 8x8x2, c_in 4
    assert cost["conv_flops"] == pytest.approx(8 * 3 * conv)  # three convs, 8 iterations
    assert cost["convolutions"] == 24
    gemm = 2 * 64 * 16 * 32
    assert cost["dot_flops"] == 2 * gemm  # the cuBLAS call and the Triton fusion's dot
    assert cost["flops"] == cost["conv_flops"] + cost["dot_flops"]


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
