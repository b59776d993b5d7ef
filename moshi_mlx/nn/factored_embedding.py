"""Embeddings of Kyutai's TTS/STT LMs: low-rank tables and two demuxed text streams.

Reproduces PyTorch moshi's `ScaledEmbedding` (`moshi/models/lm_utils.py`) options that the Moshi
LM does not use, with Kyutai's MLX parameter names:

- `low_rank=r`: the table `weight` is [N, r] and `low_rank` (Linear r -> D, no bias) lifts the
  looked-up row to D (the depformer embeddings of tts-1.6b-en_fr: r = 128);
- `demux=True`: an input id packs two text ids, `(second + 1) * N + main` (N = num_embeddings =
  text_card + 1; second = -1 means "nothing"); the output is `out1(weight[main]) +
  out2(weight[second])`, the second term zero when second = -1. `out1`, `out2` map the table
  width (r, or D without low rank) to D. With `demux` the `low_rank` Linear exists (it is in the
  checkpoints) but is not applied, exactly as in PyTorch.

Id -1 gives an exact zero vector in every mode (the "zero token").

Quantization: the table quantizes like any embedding (`to_quantized` -> `QuantizedFactoredEmbedding`:
`weight` uint32, `scales`, `biases` under the same module path, looked-up rows dequantized, then
lifted by the same child Linears as in float). `nn.quantize` only visits leaf modules and this one
has children, so `moshi_mlx.quant.quantize_lm` converts it itself; its Linears are leaves.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn

from .embedding import QuantizedScaledEmbedding, ScaledEmbedding, _mask_zero, _signed
from .linear import Linear


class FactoredEmbedding(ScaledEmbedding):
    """`ScaledEmbedding` with an optional low-rank table and/or a demuxed second stream."""

    def __init__(self, num_embeddings: int, dims: int, low_rank: int | None = None,
                 demux: bool = False) -> None:
        width = low_rank or dims
        super().__init__(num_embeddings, width)
        self.demux = demux
        if low_rank is not None:
            self.low_rank = Linear(low_rank, dims, bias=False)
        if demux:
            self.out1 = Linear(width, dims, bias=False)
            self.out2 = Linear(width, dims, bias=False)

    def __call__(self, ids: mx.array) -> mx.array:
        return _factored(self, self.weight.__getitem__, ids)

    def to_quantized(
        self, group_size: int | None = None, bits: int | None = None, mode: str = "affine",
        quantize_input: bool = False,
    ) -> QuantizedFactoredEmbedding:
        """The table quantized; the child Linears are carried over as they are (they are leaves,
        which `nn.quantize` converts on its own)."""
        if quantize_input:
            raise ValueError("quantized inputs are not supported for embeddings")
        q = QuantizedFactoredEmbedding.from_embedding(self, group_size, bits, mode=mode)
        q.demux = self.demux
        for name in ("low_rank", "out1", "out2"):
            if name in self:
                setattr(q, name, self[name])
        return q


class QuantizedFactoredEmbedding(QuantizedScaledEmbedding):
    """`FactoredEmbedding` whose table is quantized (rows dequantized as they are looked up)."""

    demux = False

    def __call__(self, ids: mx.array) -> mx.array:
        return _factored(self, lambda i: nn.QuantizedEmbedding.__call__(self, i), ids)


def _factored(m: nn.Module, rows: Callable[[mx.array], mx.array], ids: mx.array) -> mx.array:
    """The module docstring's lookup; `rows(i)` gives the float table rows for ids i >= 0."""
    ids = _signed(ids)
    if not m.demux:
        y = _mask_zero(ids, rows(mx.maximum(ids, 0)))
        return m.low_rank(y) if "low_rank" in m else y
    n = m.weight.shape[0]  # rows of the table (packed or not)
    packed = mx.maximum(ids, 0)
    main = packed % n
    second = packed // n - 1
    y = m.out1(rows(main))
    y2 = m.out2(rows(mx.maximum(second, 0)))
    y = y + mx.where((second < 0)[..., None], mx.zeros((1,), dtype=y2.dtype), y2)
    return _mask_zero(ids, y)
