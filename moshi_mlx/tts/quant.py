"""Quantize a loaded TTS LM in memory ("q8" / "q4"), as `cli.py speak --quant` does.

Which modules (`moshi_mlx.quant.uniform_decisions`, the same rule as the offline recipes, so an
in-memory q8 model and a `cli.py quantize --recipe q8` repository hold the same tensors):

- quantized: every temporal layer's self-attention, cross-attention (`in_proj` [3D, D], as big as
  self-attention's, only its q rows run per step) and gated MLP; the output heads (`text_linear`,
  each depformer slice's `linear_out`); the depformer slices' `linear_in` and transformers; the
  audio embeddings; the demuxed text table and the depformer's low-rank tables [N, 128] (a
  quantized lookup whose rows then go through the float-or-quantized `low_rank` / `out1` /
  `out2` Linears: `moshi_mlx.nn.factored_embedding`).
- float: the conditioners (`moshi_mlx.quant.KEEP_FLOAT`: run once per utterance, tiny) and the
  norms (not Linear or Embedding). Kyutai's own MLX TTS quantizes less (the depformer and the
  temporal self-attention and MLP only), leaving ~20% of tts-1.6b's weights in bf16.

At the real shape (dim 2048, depformer 1024, low rank 128, hidden 5632, speaker input 512) group
64 (q8) and 32 (q4) divide every quantized width; on toy models the modules they do not divide
stay float (logged). The weights are quantized from the dtype they are stored in (bf16 in Kyutai's
files), before the compute policy casts what stays float, so that the result equals the offline
conversion's bit for bit.
"""

from __future__ import annotations

import mlx.core as mx

from ..checkpoint.spec import Decisions, block_from_decisions
from ..compute import apply_policy, decide_policy
from ..models.lm import Lm
from ..quant import PRESETS, quantize_lm, quantized_modules, uniform_decisions

QUANT_CHOICES = (None, "bf16", *PRESETS)


def check_quant(quant: str | None) -> None:
    if quant not in QUANT_CHOICES:
        raise ValueError(f"unknown quantization {quant!r}; choose bf16, q8 or q4")


def quantize_tts_lm(lm: Lm, quant: str, dtype: str | None = None) -> Decisions:
    """Quantize `lm` in place with the preset `quant` ("q8": 8 bits, group 64; "q4": 4 bits,
    group 32), then apply the compute policy for `dtype` (as `load_lm`'s). Returns the per-module
    decisions (None: kept float). An already quantized LM is an error.

    For results equal to an offline-quantized repository, pass an LM loaded with
    `dtype="stored"` (its float weights as stored); an LM already cast to float32 quantizes from
    those float32 weights (float32 scales, slightly different rounding).
    """
    check_quant(quant)
    if quant in (None, "bf16"):
        raise ValueError(f"quantize_tts_lm needs q8 or q4, got {quant!r}")
    if quantized_modules(lm):
        raise ValueError("this LM is already quantized; --quant applies to float checkpoints")
    decisions = uniform_decisions(lm, PRESETS[quant])
    block = block_from_decisions(decisions)
    if block is not None:
        quantize_lm(lm, block)
    mx.eval(lm.parameters())
    apply_policy(lm, decide_policy(dtype, lm))
    return decisions
