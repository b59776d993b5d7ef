"""Inference-only float32 Linear layers with pre-transposed weights, for MLX's CPU backend.

MLX's Linear computes `x @ W.T` with W stored [out, in] (the checkpoint layout). On the CPU
backend float32 matmuls go through the wheel's reference BLAS, where a matrix-vector product with
the transposed operand is ~2x slower than with a contiguous [in, out] matrix (measured here,
mlx[cpu] 0.32.4: 1536x512 0.62 -> 0.27 ms, 32000x512 18 -> 12 ms). bf16 and quantized matmuls use
MLX's own kernels and gain nothing, and on Metal `x @ W.T` is already the fast path.

`pretranspose_linears(model)` swaps every float32 `nn.Linear` for a `PretransposedLinear` holding
`weight_t` [in, out]. Outputs are unchanged up to float32 rounding. The swap changes parameter
names, so a converted model is for inference only: `save_lm` refuses it, and quantize first if
you want both (quantized layers are left alone).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten


class PretransposedLinear(nn.Module):
    """`y = x @ weight_t (+ bias)` with `weight_t` = W.T stored contiguous [in, out]."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight_t = mx.contiguous(linear.weight.T)
        if "bias" in linear:
            self.bias = linear.bias

    def __call__(self, x: mx.array) -> mx.array:
        y = x @ self.weight_t
        return y + self.bias if "bias" in self else y


def pretranspose_linears(model: nn.Module, only_on_cpu: bool = True) -> int:
    """Swap float32 `nn.Linear` layers in place; returns how many were swapped.

    With `only_on_cpu` (default) nothing happens unless MLX's default device is the CPU.
    """
    if only_on_cpu and mx.default_device() != mx.cpu:
        return 0
    swaps = [
        (path, PretransposedLinear(m)) for path, m in model.named_modules()
        if type(m) is nn.Linear and m.weight.dtype == mx.float32
    ]
    if swaps:
        model.update_modules(tree_unflatten(swaps))
        mx.eval(model.parameters())
    return len(swaps)


def has_pretransposed(model: nn.Module) -> bool:
    return any(isinstance(m, PretransposedLinear) for _, m in model.named_modules())
