"""CPU layouts of Linear weights (`moshi_mlx.nn.cpu_linear`): same values, names and shapes."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from moshi_mlx.nn.cpu_linear import (
    Linear,
    add_compute_copies,
    column_major,
    is_column_major,
    relayout_linears,
)


def _ref(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    y = x.astype(np.float64) @ w.astype(np.float64).T
    return y if b is None else y + b


def test_column_major_is_the_same_matrix():
    w = mx.random.normal((6, 5), key=mx.random.key(0))
    v = column_major(w)
    assert is_column_major(v) and not is_column_major(w)
    np.testing.assert_array_equal(np.array(v), np.array(w))


def test_compute_copy_matches_float32_and_works_compiled():
    lin = Linear(48, 80, bias=True)
    lin.set_dtype(mx.bfloat16)
    x = mx.random.normal((2, 3, 48), key=mx.random.key(1))
    w = np.array(lin.weight.astype(mx.float32))
    b = np.array(lin.bias.astype(mx.float32))
    plain = np.array(lin(x))  # float32 inputs, bf16 weight promoted: the reference path
    assert add_compute_copies(lin) == 1
    assert lin["_compute"].dtype == mx.float32 and is_column_major(lin["_compute"])
    assert [k for k, _ in tree_flatten(lin.parameters())] == ["weight", "bias"]
    fast = np.array(lin(x))
    compiled = np.array(mx.compile(lin, inputs=lin.state)(x))
    for y in (plain, fast, compiled):
        np.testing.assert_allclose(y, _ref(np.array(x), w, b), rtol=1e-5, atol=1e-5)
    # bf16 inputs: float32 matmul, bf16 output (rounding only); new weights drop the copy.
    xb = x.astype(mx.bfloat16)
    yb = lin(xb)
    assert yb.dtype == mx.bfloat16
    np.testing.assert_allclose(np.array(yb.astype(mx.float32)),
                               _ref(np.array(xb.astype(mx.float32)), w, b), rtol=2 ** -8, atol=1e-6)
    lin.update({"weight": mx.zeros((80, 48), dtype=mx.bfloat16)})
    assert "_compute" not in lin
    np.testing.assert_array_equal(np.array(lin(x)), np.broadcast_to(b, (2, 3, 80)))


def test_relayout_keeps_float32_outputs():
    lin = Linear(32, 16, bias=False)
    x = mx.random.normal((1, 1, 32), key=mx.random.key(2))
    want = np.array(lin(x))
    assert relayout_linears(lin, only_on_cpu=False) == 1 and is_column_major(lin.weight)
    np.testing.assert_allclose(np.array(lin(x)), want, rtol=1e-6, atol=1e-6)
    assert add_compute_copies(lin) == 0  # float32 weights need no copy


def test_dequantized_compute_copy_is_opt_in_and_exact():
    from moshi_mlx.nn.cpu_linear import QuantizedLinear, compute_copy_bytes
    from moshi_mlx.quant import quantize_lm

    lin = Linear(64, 96, bias=False)
    lin.set_dtype(mx.bfloat16)
    q = lin.to_quantized(group_size=32, bits=4)
    assert isinstance(q, QuantizedLinear)
    x = mx.random.normal((1, 1, 64), key=mx.random.key(3))
    want = np.array(q(x))  # MLX's quantized kernel, float32 inputs
    assert add_compute_copies(q) == 0 and "_compute" not in q  # default: memory as stored
    assert compute_copy_bytes(q, dequantize=True) == 4 * 64 * 96
    assert add_compute_copies(q, dequantize=True) == 1
    f32 = mx.float32
    w = mx.dequantize(q.weight, q.scales.astype(f32), q.biases.astype(f32), group_size=32, bits=4)
    np.testing.assert_array_equal(np.array(q["_compute"]), np.array(w))
    np.testing.assert_allclose(np.array(q(x)), want, rtol=1e-5, atol=1e-5)
    # nn.quantize (through quantize_lm) builds the same class.
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = Linear(64, 32, bias=False)

    h = quantize_lm(Holder(), {"group_size": 64, "bits": 8})
    assert isinstance(h.proj, QuantizedLinear)


def test_half_inputs_use_the_float32_quantized_kernel_on_cpu():
    """bf16 activations stay bf16, but the CPU kernel runs in float32: the only error left is the
    bf16 rounding of the output (MLX's bf16 CPU kernel itself is off by ~6% here)."""
    lin = Linear(512, 256, bias=False)
    lin.set_dtype(mx.bfloat16)
    q = lin.to_quantized(group_size=64, bits=8)
    x = mx.random.normal((1, 1, 512), key=mx.random.key(4)).astype(mx.bfloat16)
    y = q(x)
    assert y.dtype == mx.bfloat16
    f32 = mx.float32
    w = mx.dequantize(q.weight, q.scales.astype(f32), q.biases.astype(f32), group_size=64, bits=8)
    ref = _ref(np.array(x.astype(f32)), np.array(w), None)
    np.testing.assert_allclose(np.array(y.astype(f32)), ref, rtol=2 ** -8, atol=1e-6)
