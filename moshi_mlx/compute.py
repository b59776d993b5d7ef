"""The compute policy: how a loaded model computes on this platform, decided and applied once.

Models are written once for every platform: they multiply by their parameters and never ask
where they run. What differs per platform is decided here, at load time, and applied to the
parameters themselves, so there is no state beside them that could go stale:

- dtype: unquantized float parameters are cast to the compute dtype (or kept as stored) and the
  LM's activations follow (`Lm.act_dtype`). Quantized weights stay packed as stored.
- matmul layout: a float32 matmul weight is stored as the contiguous matrix its product reads,
  seen through a strided view with the checkpoint's shape (`matmul_layout`). Same names, shapes
  and values, so saving, quantizing and strict loading work as before; weights loaded later
  simply arrive row-major (correct, only slower) until `apply_policy` runs again.
  * Convolution weights, everywhere: their matrix (`matmul_view`) is a reshape of the
    checkpoint's `[out, k, in]`, which MLX can only take without a copy from this layout; with
    the checkpoint's layout every call would copy the weights first.
  * Linear weights, on Linux CPUs: the `mlx[cpu]` wheel computes float32 matmuls with the netlib
    reference BLAS, which multiplies by a transposed operand (`x @ W.T`, how `nn.Linear` reads its
    weight) markedly slower than by a contiguous one (`benchmarks/results/lm.md`). On macOS
    (Accelerate, Metal) a transposed operand costs nothing and Linear weights stay as loaded.
  bf16 and quantized matmuls use MLX's own kernels, for which the layout does not matter.
- quantized matmul inputs: MLX's CPU `quantized_matmul` is several times slower with bf16/fp16
  inputs than with float32 ones (and less accurate), so on the CPU quantized Linears are given
  float32 inputs and their outputs cast back (`QuantizedLinear.input_dtype`).
- BLAS: on Linux, a system OpenBLAS (Debian's `libopenblas0-pthread`) loaded before MLX makes all
  float32 matmuls several times faster (`prefer_system_blas`). The dynamic linker binds MLX's
  `cblas_*` calls when `mlx.core` is imported, so this only works before that import:
  `import moshi_mlx` does it (the package imports MLX lazily), and an application that imports
  `mlx.core` first keeps the bundled BLAS unless it sets `LD_PRELOAD` (a warning says so).

`decide_policy` picks the policy (per platform and, for "auto", per memory); `apply_policy` is the
one place that changes a model for it. `dequantize_linears` is an opt-in extra for quantized models
on the CPU with memory to spare (float32 weights, exact, 4 bytes per weight).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # MLX is imported lazily: `prefer_system_blas` must be able to run before it
    import mlx.core as mx
    import mlx.nn as nn

log = logging.getLogger(__name__)

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",
)
DTYPE_NAMES = ("float32", "bfloat16", "float16")
DTYPE_CHOICES = (None, "auto", "stored", *DTYPE_NAMES)
# "auto" computes in float32 on the CPU only if the float32 model fits in this share of the RAM.
AUTO_RAM_FRACTION = 0.5

_system_blas: str | None = None  # what `prefer_system_blas` loaded
_warned = False


# BLAS ------------------------------------------------------------------------------------------
def prefer_system_blas() -> str | None:
    """On Linux, route MLX's float32 matmuls to a system OpenBLAS; only effective before MLX loads.

    Loading OpenBLAS with RTLD_GLOBAL before `mlx.core` puts its `cblas_*` symbols first in the
    lookup scope, so MLX calls it (the same as `LD_PRELOAD`). Returns the library in use, or None
    (not Linux, `MOSHI_MLX_BLAS=reference`, MLX already imported, or none installed). Results stay
    within float32 rounding of the reference BLAS. Idempotent.
    """
    global _system_blas
    if _system_blas is not None:
        return _system_blas
    if sys.platform != "linux" or os.environ.get("MOSHI_MLX_BLAS", "") == "reference":
        return None
    if "mlx.core" in sys.modules:
        return None
    import ctypes

    for cand in OPENBLAS_CANDIDATES:
        if Path(cand).exists():
            try:
                ctypes.CDLL(cand, mode=os.RTLD_GLOBAL)
            except OSError:
                continue
            _system_blas = cand
            return cand
    return None


def warn_if_reference_blas() -> None:
    """Log once, on Linux, when an installed OpenBLAS is not in use because MLX came first."""
    global _warned
    if _warned or sys.platform != "linux" or _system_blas is not None:
        return
    _warned = True
    if os.environ.get("MOSHI_MLX_BLAS", "") == "reference" or "blas" in os.environ.get(
            "LD_PRELOAD", ""):
        return
    found = [c for c in OPENBLAS_CANDIDATES if Path(c).exists()]
    if found:
        log.warning("mlx.core was imported before moshi_mlx, so MLX keeps its bundled reference "
                    "BLAS (float32 matmuls, e.g. Mimi, several times slower): import moshi_mlx "
                    "first or run with LD_PRELOAD=%s", found[0])



# Policy ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ComputePolicy:
    """How a model computes. `dtype`: unquantized float parameters and activations (None: as
    stored); `linear_layout`: store float32 Linear weights as the contiguous matrix their product
    reads (convolution weights always are); `quantized_input_dtype`: inputs of quantized matmuls (None: the activation dtype)."""

    dtype: mx.Dtype | None
    linear_layout: bool
    quantized_input_dtype: mx.Dtype | None


def on_cpu() -> bool:
    import mlx.core as mx

    return mx.default_device() == mx.cpu


def ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def float32_bytes(model: nn.Module) -> int:
    """Parameter bytes once unquantized float tensors are float32 (packed weights as they are)."""
    import mlx.core as mx

    from .quant import QUANTIZED_TYPES

    total = 0
    for _, m in model.named_modules():
        quantized = isinstance(m, QUANTIZED_TYPES)
        for v in _own_params(m).values():
            floating = mx.issubdtype(v.dtype, mx.floating)
            total += v.size * 4 if floating and not quantized else v.nbytes
    return total


def _own_params(m: nn.Module) -> dict[str, Any]:
    """The arrays held directly by module `m` (not by its children)."""
    import mlx.core as mx

    return {k: v for k, v in m.items() if isinstance(v, mx.array)}


def check_dtype(dtype: str | None) -> None:
    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {list(DTYPE_CHOICES)}, got {dtype!r}")


def decide_policy(dtype: str | None, model: nn.Module | None = None,
                  ram: int | None = None) -> ComputePolicy:
    """The policy for `load_lm(dtype=...)` (Mimi: "stored", its weights are float32).

    "auto" / None: on the CPU float32 (bf16 activations are slower there; MLX's CPU kernels are
    float32 ones) when the float32 model fits in `AUTO_RAM_FRACTION` of the RAM, else (or
    without a `model` to measure) "stored"; on Metal "stored" (bf16 is its fast path).
    """
    import mlx.core as mx

    check_dtype(dtype)
    cpu = on_cpu()
    if cpu:
        warn_if_reference_blas()
    if dtype in (None, "auto"):
        dtype = "stored"
        if cpu and model is not None:
            size = float32_bytes(model)
            ram = ram_bytes() if ram is None else ram
            if ram is None or size <= AUTO_RAM_FRACTION * ram:
                dtype = "float32"
            else:
                log.info("dtype auto: the float32 model needs %.1f GB, more than %.0f%% of the "
                         "RAM (%.1f GB); computing as stored", size / 1e9,
                         100 * AUTO_RAM_FRACTION, ram / 1e9)
        log.info("compute dtype auto (%s): %s", mx.default_device(), dtype)
    return ComputePolicy(
        dtype=None if dtype == "stored" else getattr(mx, dtype),
        linear_layout=cpu and sys.platform != "darwin",
        quantized_input_dtype=mx.float32 if cpu else None,
    )


# Apply -----------------------------------------------------------------------------------------
def apply_policy(model: nn.Module, policy: ComputePolicy) -> nn.Module:
    """Cast, lay out and configure `model`'s modules for `policy` (module docstring); returns it.

    One module at a time and evaluated as it goes, so the peak memory grows by one matrix, not
    by the model.
    """
    import mlx.core as mx
    import mlx.nn as nn

    from .models.lm import Lm
    from .nn.linear import QuantizedLinear
    from .quant import QUANTIZED_TYPES

    # Arrays shared by several modules (depformer slices of one weight set) stay shared: each
    # is converted once. The cache holds the originals, so their ids stay unique.
    done: dict[tuple[int, type], tuple[mx.array, mx.array]] = {}
    for _, m in model.named_modules():
        if isinstance(m, QUANTIZED_TYPES):
            if isinstance(m, QuantizedLinear):
                m.input_dtype = policy.quantized_input_dtype
            continue
        new = {}
        for k, v in _own_params(m).items():
            key = (id(v), type(m))
            if key in done:
                w = done[key][1]
            else:
                w = v
                if policy.dtype is not None and mx.issubdtype(w.dtype, mx.floating):
                    w = w.astype(policy.dtype)
                if k == "weight" and w.dtype == mx.float32 and (
                        policy.linear_layout or not isinstance(m, nn.Linear)):
                    w = matmul_layout(m, w)
                done[key] = (v, w)
            if w is not v:
                new[k] = w
        if new:
            m.update(new)
            mx.eval(list(new.values()))
    if isinstance(model, Lm):
        model.act_dtype = policy.dtype
    return model


def matmul_layout(module: nn.Module, w: mx.array) -> mx.array:
    """`w` with the same shape and values, stored as the contiguous matrix `module` multiplies
    by (its `matmul_view`), or `w` itself for modules without a matmul weight."""
    import mlx.core as mx
    import mlx.nn as nn

    from .nn.conv import Conv1d, ConvTranspose1d

    if isinstance(module, nn.Linear):  # y = x @ W.T
        to_matrix, from_matrix = (lambda a: a.T), (lambda a: a.T)
    elif isinstance(module, (Conv1d, ConvTranspose1d)):  # the streaming convolutions' weights
        to_matrix, from_matrix = module.matmul_view, module.from_matmul_view
    else:
        return w
    if w.ndim < 2:
        return w
    return from_matrix(mx.contiguous(to_matrix(w)))


def is_contiguous(a: mx.array) -> bool:
    """True when `a` is stored row-contiguous (its strides are those of a fresh array)."""
    import mlx.core as mx

    mx.eval(a)
    expected, step = [], a.itemsize
    for n in reversed(a.shape):
        expected.append(step)
        step *= n
    strides = memoryview(a).strides
    return all(s == e for s, e, n in zip(strides, reversed(expected), a.shape, strict=True)
               if n > 1)


def dequantize_linears(model: nn.Module) -> int:
    """Opt-in: every `QuantizedLinear` becomes a float32 `Linear` with its exact dequantized weight
    (in the CPU matmul layout). MLX's CPU quantized matmul is slower than a float32 one; the
    price is 4 bytes per weight (4 times a q8 model, 8 times a q4 one). Returns how many."""
    import mlx.core as mx
    from mlx.utils import tree_unflatten

    from .nn.linear import Linear, QuantizedLinear

    policy = decide_policy("float32")
    swaps = []
    for path, m in model.named_modules():
        if not isinstance(m, QuantizedLinear):
            continue
        f32 = mx.float32
        biases = m.get("biases")
        # float32 scales/biases: the kernel's effective weights (bf16 ones would round s*q + b).
        w = mx.dequantize(m["weight"], m["scales"].astype(f32),
                          None if biases is None else biases.astype(f32),
                          group_size=m.group_size, bits=m.bits, mode=m.mode)
        lin = Linear(w.shape[1], w.shape[0], bias="bias" in m)
        params = {"weight": w}
        if "bias" in m:
            params["bias"] = m["bias"].astype(f32)
        lin.update(params)
        swaps.append((path, apply_policy(lin, policy)))
    if swaps:
        model.update_modules(tree_unflatten(swaps))
    return len(swaps)
