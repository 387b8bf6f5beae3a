"""`benchmarks/gpu/hlo_summary.py` tells a healthy conv from the pathological one, on
hand-written optimized modules in XLA:GPU's syntax (one per case, beside this file) and on a
real XLA:CPU dump.

- ``gpu_hlo_snippet.txt``: cuDNN conv custom calls of each kind (forward, input and filter
  gradients), a cuBLAS gemm, a Triton gemm fusion, and one plain convolution left inside a
  fusion (XLA's own emitter);
- ``gpu_hlo_pathological.txt``: the kernel gradient of a transposed conv as XLA:GPU runs it
  when it cannot match a backward-filter conv: a cuDNN *forward* conv with a whole-volume
  window in the backward pass over an interior-padded ``pad`` (reached through a loop fusion
  whose root is the pad, and through a bitcast), beside healthy convs that must not be flagged
  (a 3x3x3 forward conv, backward-input and backward-filter convs, a 5x5x5 forward-pass conv);
- ``gpu_hlo_cudnn_fusion.txt``: convs inside ``__cudnn$fusion`` fusions (a fused forward 3x3x3
  conv, a fused whole-volume forward conv in the backward pass over a padded fusion parameter,
  a fused conv whose config says WGRAD).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks.gpu.hlo_summary import (
    format_summary,
    summarise_dir,
    summarise_path,
    summarise_text,
)

HERE = Path(__file__).parent
GPU_SNIPPET = (HERE / "gpu_hlo_snippet.txt").read_text()
PATHOLOGICAL = (HERE / "gpu_hlo_pathological.txt").read_text()
CUDNN_FUSION = (HERE / "gpu_hlo_cudnn_fusion.txt").read_text()


def _by_name(summary: dict) -> dict:
    return {c["name"]: c for c in summary["convs"]}


def test_cudnn_conv_custom_calls_have_their_kind_and_the_plain_fallback_is_counted():
    s = summarise_text(GPU_SNIPPET)
    assert s["convolutions"] == {
        "plain": 1, "total": 5, "cudnn_fusion": 0,
        "custom_call": {"__cudnn$convForward": 1, "__cudnn$convBackwardInput": 1,
                        "__cudnn$convBackwardFilter": 2},
    }
    assert s["by_kind"] == {"plain": 1, "forward": 1, "backward-input": 1, "backward-filter": 2}
    assert s["custom_calls"]["__cublas$gemm"] == 1
    assert s["fusions"] == {"kLoop": 1, "__triton_gemm": 1}
    by_name = _by_name(s)
    fwd = by_name["cudnn-conv.1"]
    assert fwd["kind"] == "forward" and fwd["cudnn"] and fwd["window_size"] == [3, 3, 3]
    assert fwd["dtype"] == "bf16" and fwd["shape"] == [1, 32, 8, 8, 4] and fwd["in_entry"]
    assert fwd["window"] == "size=3x3x3 pad=1_1x1_1x1_1"
    assert fwd["operand_shapes"] == [[1, 32, 8, 8, 4], [32, 32, 3, 3, 3]]
    # Operands printed without types take their shapes from their definitions.
    assert by_name["cudnn-conv-bw-input.2"]["operand_shapes"] == [[1, 32, 8, 8, 4],
                                                                  [32, 32, 3, 3, 3]]
    assert by_name["cudnn-conv-bw-input.2"]["kind"] == "backward-input"
    assert by_name["cudnn-conv-bw-filter.4"]["kind"] == "backward-filter"
    assert by_name["cudnn-conv-bw-filter.4"]["window"] == "size=4x4x2 stride=2x2x2"
    plain = by_name["convolution.9"]
    assert plain["form"] == "plain" and plain["kind"] == "plain" and not plain["cudnn"]
    assert plain["computation"] == "fused_computation.2" and not plain["in_entry"]
    assert plain["lhs_dilate"] == [2, 2, 2] and plain["backward_pass"]
    assert s["plain_by_window"] == {"size=3x3x3 pad=1_1x1_1x1_1 lhs_dilate=2x2x2": 1}
    # A 3x3x3 window is healthy even lhs-dilated; nothing here is flagged.
    assert s["flagged"] == [] and s["dilated_volume"] == []


def test_a_whole_volume_forward_conv_in_the_backward_pass_over_an_interior_pad_is_flagged():
    s = summarise_text(PATHOLOGICAL)
    by_name = _by_name(s)
    assert s["flagged"] == ["cudnn-conv.7", "cudnn-conv.8"]
    assert s["dilated_volume"] == ["cudnn-conv.7", "cudnn-conv.8"]
    up0, up1 = by_name["cudnn-conv.7"], by_name["cudnn-conv.8"]
    assert up0["window_size"] == [32, 32, 16] and up1["window_size"] == [16, 16, 8]
    assert up0["kind"] == up1["kind"] == "forward" and up0["backward_pass"]
    # up0's input is a loop fusion whose root is the pad; up1's a bitcast of the pad itself.
    assert up0["input_interior_padded"] and up1["input_interior_padded"]
    assert "up0_upsample" in up0["op_name"]
    healthy = {n: c for n, c in by_name.items() if n not in s["flagged"]}
    assert {c["kind"] for c in healthy.values()} == {"forward", "backward-input",
                                                     "backward-filter"}
    # A pad without interior padding (the 3x3x3 filter gradient's input) is not the dilation.
    assert not by_name["cudnn-conv.11"]["input_interior_padded"]
    # A large window in the forward pass is not the gradient pathology.
    assert not by_name["cudnn-conv.12"]["flagged"]
    text = format_summary({"file": "x.txt", **s})
    assert "flagged (cuDNN forward conv, window > 3, backward pass, dilated input): 2" in text
    assert text.count("FLAGGED") == 2 and "input=interior-padded pad" in text


def test_convs_inside_cudnn_fusions_count_as_cudnn_and_are_flagged_the_same_way():
    s = summarise_text(CUDNN_FUSION)
    assert s["convolutions"] == {"plain": 0, "custom_call": {}, "cudnn_fusion": 3, "total": 3}
    assert s["fusions"] == {"__cudnn$fusion": 3, "kLoop": 1}
    by_name = _by_name(s)
    fprop, big, wgrad = (by_name[f"convolution.{i}"] for i in (1, 2, 3))
    assert all(c["form"] == "cudnn-fusion" and c["target"] == "__cudnn$fusion" and c["cudnn"]
               for c in (fprop, big, wgrad))
    assert fprop["kind"] == big["kind"] == "forward" and wgrad["kind"] == "backward-filter"
    # The fused conv's input is the fusion's parameter 0: followed to the padded fusion outside.
    assert big["input_interior_padded"] and not fprop["input_interior_padded"]
    assert s["flagged"] == ["convolution.2"]
    assert s["plain_by_window"] == {}


def test_the_plain_convolutions_of_a_real_cpu_dump_and_one_text_file(tmp_path):
    program = textwrap.dedent("""
        import jax, jax.numpy as jnp
        from jax import lax
        def train_step(x, w, w2):
            def loss(x, w, w2):
                dn = ("NDHWC", "DHWIO", "NDHWC")
                y = lax.conv_general_dilated(x, w, (1, 1, 1), "SAME", dimension_numbers=dn)
                z = lax.conv_general_dilated(y, w2, (2, 2, 2), "VALID", dimension_numbers=dn)
                return jnp.sum(z ** 2)
            return jax.grad(loss, argnums=(0, 1, 2))(x, w, w2)
        args = (jnp.ones((1, 8, 8, 4, 3)), jnp.ones((3, 3, 3, 3, 5)), jnp.ones((2, 2, 2, 5, 6)))
        c = jax.jit(train_step).lower(*args).compile()
        open(__import__("sys").argv[1], "w").write(c.as_text())
        """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_dump_to={tmp_path} --xla_dump_hlo_as_text "
                        "--xla_dump_hlo_module_re=jit_train_step"}
    text_file = tmp_path / "as_text.txt"
    subprocess.run([sys.executable, "-c", program, str(text_file)], env=env, check=True,
                   timeout=120)
    s = summarise_dir(tmp_path, "jit_train_step")
    assert s["file"].endswith("after_optimizations.txt") and "jit_train_step" in s["file"]
    # Two forward convs and, for each, the input and the filter gradient; XLA:CPU keeps every
    # one a plain convolution (no custom call), none flagged.
    assert s["convolutions"]["plain"] == s["convolutions"]["total"] >= 5
    assert s["convolutions"]["custom_call"] == {} and s["flagged"] == []
    windows = [c["window"] for c in s["convs"]]
    assert "size=2x2x2 stride=2x2x2" in windows
    assert any("lhs_dilate=2x2x2" in w for w in windows)  # input gradient of the strided conv
    assert all(c["dtype"] == "f32" and len(c["shape"]) == 5 for c in s["convs"])
    # compiled.as_text() (what the benchmark's steps write) reads the same.
    one = summarise_path(text_file)
    assert one["file"] == "as_text.txt"
    assert one["convolutions"]["total"] == s["convolutions"]["total"]
    with pytest.raises(ValueError, match="no \\*after_optimizations"):
        summarise_dir(tmp_path, "no_such_module")
