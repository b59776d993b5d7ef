"""Fast float32 Linear weights on MLX's CPU backend: column-major storage, or a compute copy.

MLX's Linear computes `x @ W.T` with W [out, in] (the checkpoint layout). On the CPU backend
float32 matmuls go through the wheel's reference BLAS, where a matrix-vector product with a
row-major W (the transposed operand) is about 2x slower than with a contiguous [in, out] matrix
(measured here, mlx[cpu] 0.32.4, ms per call: 1536x512 0.63 -> 0.27, 32000x512 13.0 -> 7.9,
12288x4096 42.7 -> 22.6; bf16 `x @ W.T` takes 37.5 on the last one, a quantized matmul with
float32 inputs 43.7). bf16 and quantized matmuls use MLX's own kernels and gain nothing from a
layout, and on Metal `x @ W.T` is already the fast path.

Two tools, both keeping parameter names, shapes and values (outputs within float32 rounding), so
`save_lm`, `nn.quantize` and `load_weights` work as before:
- `relayout_linears(model)`: every float32 Linear weight is stored column-major (a transposed view
  of a contiguous [in, out] buffer), so `W.T` inside `nn.Linear` is contiguous. Same memory.
- `add_compute_copies(model)`: every non-float32 (bf16) `Linear` of this module gets a float32
  column-major copy kept outside the parameter tree (`_compute`, underscore names are not
  parameters in MLX), used for float32 inputs (half inputs: float32 matmul, output rounded back,
  like a half kernel accumulating in float32). The stored bf16 weight stays the parameter, so the
  model still saves and reports as bf16; memory: 4 extra bytes per Linear weight.
  `Linear.update` and `Lm.update` (hence `load_weights`, `set_dtype`) drop the copies, so new
  weights never meet a stale copy; call `add_compute_copies` again afterwards.
  `add_compute_copies(model, dequantize=True)` (opt-in, not used by the loader) does the same for
  quantized Linears with their exact dequantized weights: ~2x faster than MLX's CPU quantized
  matmul, at 4 bytes per weight (the memory a quantized file was meant to save).
Also, `QuantizedLinear` (what `Linear` quantizes into) feeds bf16/fp16 inputs to MLX's float32
CPU kernel and casts the result back: ~6x faster, and more accurate, than MLX's half kernel.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def column_major(w: mx.array) -> mx.array:
    """The same [out, in] matrix, stored as a contiguous [in, out] buffer (a transposed view)."""
    return mx.contiguous(w.T).T


def is_column_major(w: mx.array) -> bool:
    """True when `w` [out, in] is stored column-major (its transpose is row-contiguous)."""
    if w.ndim != 2:
        return False
    mx.eval(w)
    return memoryview(w).strides == (w.itemsize, w.itemsize * w.shape[0])


class _ComputeCopy:
    """Shared by `Linear` and `QuantizedLinear`: an optional float32 column-major `_compute`
    matrix (not a parameter: underscore names are skipped by MLX), used for float inputs."""

    def _float32_weight(self) -> mx.array | None:
        raise NotImplementedError

    def add_compute_copy(self) -> bool:
        """Make the float32 column-major copy; False if not applicable (already float32)."""
        w = self._float32_weight()
        if w is None:
            return False
        self._compute = column_major(w)
        mx.eval(self._compute)
        return True

    def drop_compute_copy(self) -> None:
        self.pop("_compute", None)

    def update(self, parameters: dict, strict: bool = True):
        self.drop_compute_copy()
        return super().update(parameters, strict=strict)

    def __call__(self, x: mx.array) -> mx.array:
        w = self.get("_compute")
        if w is None or x.dtype not in (mx.float32, mx.bfloat16, mx.float16):
            return super().__call__(x)
        # Half inputs: float32 matmul, output rounded back (a half kernel accumulating in float32).
        x32 = x.astype(mx.float32)
        y = mx.addmm(self["bias"].astype(mx.float32), x32, w.T) if "bias" in self else x32 @ w.T
        return y.astype(x.dtype)


class QuantizedLinear(_ComputeCopy, nn.QuantizedLinear):
    """`nn.QuantizedLinear` whose opt-in compute copy is its exact dequantized weight in float32.

    On the CPU, half-precision inputs are upcast to float32 for the kernel and the result cast
    back: MLX's CPU `quantized_matmul` is ~8x (bf16) / ~40x (fp16) slower with half inputs, and the
    result only differs by the accumulation order (activations stay in their dtype, no extra
    memory). Metal keeps its native kernels.
    """

    def __call__(self, x: mx.array) -> mx.array:
        if x.dtype in (mx.bfloat16, mx.float16) and mx.default_device() == mx.cpu:
            return super().__call__(x.astype(mx.float32)).astype(x.dtype)
        return super().__call__(x)

    def _float32_weight(self) -> mx.array | None:
        # float32 scales/biases: the kernel's effective weights (bf16 ones would round s*q + b).
        biases = self.get("biases")
        return mx.dequantize(self["weight"], self["scales"].astype(mx.float32),
                             None if biases is None else biases.astype(mx.float32),
                             group_size=self.group_size, bits=self.bits, mode=self.mode)


class Linear(_ComputeCopy, nn.Linear):
    """`nn.Linear` that uses its float32 compute copy (module docstring) when it has one;
    quantizes into `QuantizedLinear`."""

    def _float32_weight(self) -> mx.array | None:
        w = self["weight"]
        if w.dtype == mx.float32 or not mx.issubdtype(w.dtype, mx.floating):
            return None
        return w.astype(mx.float32)

    def to_quantized(self, group_size: int | None = None, bits: int | None = None,
                     mode: str = "affine", quantize_input: bool = False) -> nn.Module:
        if quantize_input:
            return super().to_quantized(group_size, bits, mode=mode, quantize_input=True)
        return QuantizedLinear.from_linear(self, group_size, bits, mode=mode)


def _copy_targets(model: nn.Module, dequantize: bool) -> list[_ComputeCopy]:
    out: list[_ComputeCopy] = []
    for _, m in model.named_modules():
        if isinstance(m, Linear) and m.weight.dtype in (mx.bfloat16, mx.float16):
            out.append(m)
        elif dequantize and isinstance(m, QuantizedLinear):
            out.append(m)
    return out


def add_compute_copies(model: nn.Module, dequantize: bool = False) -> int:
    """Give every bf16/fp16 `Linear` of `model` a float32 compute copy; returns how many.

    `dequantize=True` also gives each `QuantizedLinear` its exact dequantized float32 weight
    (opt-in: memory becomes 4 bytes per weight, 4x a q8 and 8x a q4 model, for ~2x speed on
    MLX's CPU; outputs equal the quantized kernel's within float32 rounding).
    """
    return sum(m.add_compute_copy() for m in _copy_targets(model, dequantize))


def drop_compute_copies(model: nn.Module) -> None:
    for _, m in model.named_modules():
        if isinstance(m, _ComputeCopy):
            m.drop_compute_copy()


def compute_copy_bytes(model: nn.Module, dequantize: bool = False) -> int:
    """Bytes `add_compute_copies` would add."""
    return sum(4 * m.weight.shape[0] * m.weight.shape[1] * (32 // getattr(m, "bits", 32))
               for m in _copy_targets(model, dequantize))


def relayout_linears(model: nn.Module, only_on_cpu: bool = True) -> int:
    """Store every float32 `nn.Linear` weight of `model` column-major; returns how many.

    With `only_on_cpu` (default) nothing happens unless MLX's default device is the CPU.
    Quantized and non-float32 layers are left alone.
    """
    if only_on_cpu and mx.default_device() != mx.cpu:
        return 0
    n = 0
    for _, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.weight.dtype == mx.float32:
            if not is_column_major(m.weight):
                m.weight = column_major(m.weight)
                mx.eval(m.weight)  # one at a time: peak memory grows by one matrix, not the model
            n += 1
    return n


# Former name (benchmarks/bench_lm.py's "float32T" row).
pretranspose_linears = relayout_linears
