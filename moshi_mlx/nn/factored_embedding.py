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

Id -1 gives an exact zero vector in every mode (the "zero token"). The table is not quantized by
`nn.quantize` (this module has children, so it is not a leaf); its Linears are.
"""

from __future__ import annotations

import mlx.core as mx

from .embedding import ScaledEmbedding, _mask_zero, _signed
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
        ids = _signed(ids)
        if not self.demux:
            y = _mask_zero(ids, self.weight[mx.maximum(ids, 0)])
            return self.low_rank(y) if "low_rank" in self else y
        n = self.weight.shape[0]
        packed = mx.maximum(ids, 0)
        main = packed % n
        second = packed // n - 1
        y = self.out1(self.weight[main])
        y2 = self.out2(self.weight[mx.maximum(second, 0)])
        y = y + mx.where((second < 0)[..., None], mx.zeros((1,), dtype=y2.dtype), y2)
        return _mask_zero(ids, y)

    def to_quantized(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        raise NotImplementedError("quantize the Linears of a FactoredEmbedding, not its table")
