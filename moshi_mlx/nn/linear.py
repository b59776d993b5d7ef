"""Linear layers of the LM and the shared transformer: `nn.Linear` and a configurable quantized one.

`Linear` is `nn.Linear` (weight [out, in], Kyutai's names) that quantizes into our
`QuantizedLinear`, which can give its kernel inputs in another dtype than the activations:
`input_dtype` (None: as they come) is set by the compute policy (`moshi_mlx.compute`), which
asks for float32 inputs on the CPU, where MLX's quantized matmul is fast and exact only for
those. The output is cast back, so activations keep their dtype and the only difference from a
half-precision kernel is the accumulation order. How the weights are laid out in memory is also
the policy's business; these classes compute the same thing whatever the layout.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class QuantizedLinear(nn.QuantizedLinear):
    """`nn.QuantizedLinear` whose inputs are cast to `input_dtype` (when set) for the kernel."""

    input_dtype: mx.Dtype | None = None

    def __call__(self, x: mx.array) -> mx.array:
        dt = self.input_dtype
        if dt is None or x.dtype == dt or not mx.issubdtype(x.dtype, mx.floating):
            return super().__call__(x)
        return super().__call__(x.astype(dt)).astype(x.dtype)


class Linear(nn.Linear):
    """`nn.Linear` that quantizes into `QuantizedLinear`."""

    def to_quantized(self, group_size: int | None = None, bits: int | None = None,
                     mode: str = "affine", quantize_input: bool = False) -> nn.Module:
        if quantize_input:
            return super().to_quantized(group_size, bits, mode=mode, quantize_input=True)
        return QuantizedLinear.from_linear(self, group_size, bits, mode=mode)
