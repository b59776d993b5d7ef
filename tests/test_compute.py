"""The compute policy (`moshi_mlx.compute`): same values, names and shapes; nothing beside the
parameters, so new weights are always used; the policy chosen per platform and memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from moshi_mlx import compute
from moshi_mlx.compute import (
    ComputePolicy,
    apply_policy,
    decide_policy,
    dequantize_linears,
    is_contiguous,
    matmul_layout,
)
from moshi_mlx.nn.conv import StreamingConv1d, StreamingConvTranspose1d
from moshi_mlx.nn.linear import Linear, QuantizedLinear

LAYOUT = ComputePolicy(dtype=None, linear_layout=True, quantized_input_dtype=None)


def _ref(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    y = x.astype(np.float64) @ w.astype(np.float64).T
    return y if b is None else y + b


def test_linear_layout_keeps_values_names_and_follows_new_weights():
    lin = Linear(48, 80, bias=True)
    x = mx.random.normal((2, 3, 48), key=mx.random.key(1))
    w, b = np.array(lin.weight), np.array(lin.bias)
    assert not is_contiguous(lin.weight.T)
    apply_policy(lin, LAYOUT)
    assert is_contiguous(lin.weight.T) and lin.weight.shape == (80, 48)
    assert [k for k, _ in tree_flatten(lin.parameters())] == ["weight", "bias"]
    np.testing.assert_array_equal(np.array(lin.weight), w)
    for y in (lin(x), mx.compile(lin, inputs=lin.state)(x)):
        np.testing.assert_allclose(np.array(y), _ref(np.array(x), w, b), rtol=1e-5, atol=1e-5)
    # New weights (row-major again) are simply used: there is no copy that could be stale.
    lin.update({"weight": mx.zeros((80, 48))})
    np.testing.assert_array_equal(np.array(lin(x)), np.broadcast_to(b, (2, 3, 80)))


@pytest.mark.parametrize("k, stride, depthwise", [(4, 2, False), (7, 1, False), (5, 2, False),
                                                  (4, 2, True)])
def test_conv_layouts_keep_outputs(k, stride, depthwise):
    cin = 6
    conv = StreamingConv1d(cin, 5, k, stride)
    tr = StreamingConvTranspose1d(cin, cin if depthwise else 4, k, stride,
                                  groups=cin if depthwise else 1)
    x = mx.random.normal((1, 4 * stride, cin), key=mx.random.key(k))
    want = [np.array(m(x, m.init_state(1))[0]) for m in (conv, tr)]
    shapes = [{k: v.shape for k, v in tree_flatten(m.parameters())} for m in (conv, tr)]
    for m in (conv, tr):
        apply_policy(m, LAYOUT)
    assert [{k: v.shape for k, v in tree_flatten(m.parameters())} for m in (conv, tr)] == shapes
    holder = conv.conv.conv
    # Stored as the matrix reads it ([k, in, out] / [in, k, out]): `matmul_view` is a free view.
    assert holder.weight.shape == (5, k, cin) and is_contiguous(holder.weight.transpose(1, 2, 0))
    if not depthwise:
        assert is_contiguous(tr.convtr.convtr.weight.transpose(2, 1, 0))
    for m, y in zip((conv, tr), want, strict=True):
        np.testing.assert_allclose(np.array(m(x, m.init_state(1))[0]), y, rtol=1e-5, atol=1e-5)


def test_layout_only_touches_matmul_weights():
    norm = nn.LayerNorm(8)
    before = norm.weight
    assert matmul_layout(norm, norm.weight) is before


def test_policy_casts_unquantized_and_sets_quantized_inputs():
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = Linear(64, 32, bias=False)
            self.b = Linear(64, 96, bias=False)
            self.norm = nn.RMSNorm(64)

    h = Holder()
    h.set_dtype(mx.bfloat16)
    h.b = h.b.to_quantized(group_size=32, bits=4)
    assert isinstance(h.b, QuantizedLinear)
    apply_policy(h, decide_policy("float32"))
    assert h.a.weight.dtype == mx.float32 and h.norm.weight.dtype == mx.float32
    assert h.b.weight.dtype == mx.uint32 and h.b.scales.dtype == mx.bfloat16  # packed, as stored
    assert h.b.input_dtype == mx.float32  # the test machines compute on the CPU
    assert sys.platform == "darwin" or is_contiguous(h.a.weight.T)


def test_half_inputs_use_the_float32_quantized_kernel():
    """bf16 activations stay bf16, but the kernel gets float32 inputs: the only error left is
    the bf16 rounding of the output (MLX's bf16 CPU kernel itself is off by ~6% here)."""
    lin = Linear(512, 256, bias=False)
    lin.set_dtype(mx.bfloat16)
    q = lin.to_quantized(group_size=64, bits=8)
    q.input_dtype = mx.float32
    x = mx.random.normal((1, 1, 512), key=mx.random.key(4)).astype(mx.bfloat16)
    y = q(x)
    assert y.dtype == mx.bfloat16
    f32 = mx.float32
    w = mx.dequantize(q.weight, q.scales.astype(f32), q.biases.astype(f32), group_size=64, bits=8)
    ref = _ref(np.array(x.astype(f32)), np.array(w), None)
    np.testing.assert_allclose(np.array(y.astype(f32)), ref, rtol=2 ** -8, atol=1e-6)


def test_dequantize_linears_is_exact():
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [Linear(64, 96, bias=False), Linear(96, 32, bias=True)]

    h = Holder()
    h.set_dtype(mx.bfloat16)
    h.layers = [lin.to_quantized(group_size=32, bits=4) for lin in h.layers]
    apply_policy(h, decide_policy("float32"))
    x = mx.random.normal((1, 2, 64), key=mx.random.key(3))
    want = np.array(h.layers[1](h.layers[0](x)))
    ws = [mx.dequantize(q.weight, q.scales.astype(mx.float32), q.biases.astype(mx.float32),
                        group_size=32, bits=4) for q in h.layers]
    assert dequantize_linears(h) == 2
    assert all(type(m) is Linear and m.weight.dtype == mx.float32 for m in h.layers)
    for m, w in zip(h.layers, ws, strict=True):
        np.testing.assert_array_equal(np.array(m.weight), np.array(w))
    np.testing.assert_allclose(np.array(h.layers[1](h.layers[0](x))), want, rtol=1e-4, atol=1e-4)


def test_auto_is_float32_on_the_cpu_only_when_it_fits(monkeypatch):
    m = Linear(1024, 1024, bias=False)  # 4 MB in float32
    m.set_dtype(mx.bfloat16)
    assert compute.float32_bytes(m) == 4 << 20
    assert decide_policy(None, m, ram=1 << 30).dtype == mx.float32
    assert decide_policy("auto", m, ram=6 << 20).dtype is None  # 4 MB > half of 6 MB: as stored
    with pytest.raises(ValueError, match="dtype must be one of"):
        decide_policy("fp32")
    monkeypatch.setattr(mx, "default_device", lambda: mx.Device(mx.gpu))
    metal = decide_policy(None, m, ram=1 << 40)
    assert metal == ComputePolicy(dtype=None, linear_layout=False, quantized_input_dtype=None)


def _run(code: str) -> str:
    """stderr + stdout of a fresh interpreter (import order only matters in a new process)."""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return p.stderr + p.stdout


@pytest.mark.skipif(sys.platform != "linux" or not any(
    Path(c).exists() for c in compute.OPENBLAS_CANDIDATES), reason="needs a system OpenBLAS")
def test_import_order_decides_the_blas():
    """`import moshi_mlx` first: OpenBLAS is mapped and MLX uses it; `mlx.core` first: the
    bundled BLAS stays, and loading says so."""
    maps = "print('openblas' in open('/proc/self/maps').read())"
    first = _run(f"import moshi_mlx, mlx.core; {maps}")
    assert first.endswith("True\n")
    late = _run("import logging, mlx.core, moshi_mlx; logging.basicConfig(); "
                "from moshi_mlx.compute import decide_policy; decide_policy('float32'); " + maps)
    assert "mlx.core was imported before moshi_mlx" in late and late.endswith("False\n")


def test_prefer_system_blas_is_a_no_op_once_mlx_is_imported(monkeypatch):
    monkeypatch.setattr(compute, "_system_blas", None)
    assert "mlx.core" in sys.modules
    assert compute.prefer_system_blas() is None
    monkeypatch.setenv("MOSHI_MLX_BLAS", "reference")
    assert compute.prefer_system_blas() is None


@pytest.mark.skipif(sys.platform == "darwin", reason="Linear layout: Linux's reference BLAS")
def test_loaded_mimi_multiplies_by_contiguous_matrices(tiny_repo):
    """Convolutions everywhere, Linears on Linux CPUs (the tests' platform)."""
    from moshi_mlx.codec import load_mimi
    from moshi_mlx.nn.conv import Conv1d, ConvTranspose1d

    model = load_mimi(tiny_repo).model
    convs = [m for _, m in model.named_modules() if isinstance(m, (Conv1d, ConvTranspose1d))]
    linears = [m for _, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert len(convs) > 10 and len(linears) > 4
    assert all(is_contiguous(m.weight.transpose(1, 2, 0)) for m in convs if isinstance(m, Conv1d))
    assert all(is_contiguous(m.weight.transpose(2, 1, 0)) for m in convs
               if isinstance(m, ConvTranspose1d) and not m.depthwise)
    assert all(is_contiguous(m.weight.T) for m in linears)
