"""Helium, Moshi's temporal transformer: stream embeddings in, normalized hidden state out.

Per 80 ms step the input is `text_emb(text) + sum_k audio_embs[k](audio_k)` (a plain sum, no
positional add: positions come from RoPE), then the pre-norm transformer (rms_norm_f32, silu
gating, interleaved RoPE, causal with a sliding window of `context` steps), then `out_norm`.
This reproduces `LMModel.forward_text` of PyTorch moshi.

The modules live directly on `Lm` (`text_emb`, `audio_embs`, `transformer`, `out_norm`) so that the
parameter names equal Kyutai's MLX checkpoint keys; this file holds the functions that build and
run them, shared by `Lm` and anything else that needs the temporal stack.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn

from ..config import LmConfig
from ..nn.embedding import ScaledEmbedding
from ..nn.transformer import TransformerConfig


def temporal_config(cfg: LmConfig) -> TransformerConfig:
    """The temporal transformer's shape, from Kyutai's LM kwargs."""
    return TransformerConfig(
        d_model=cfg.dim,
        num_heads=cfg.num_heads,
        num_layers=cfg.num_layers,
        dim_feedforward=cfg.dim_feedforward,
        causal=cfg.causal,
        context=cfg.context,
        norm=cfg.norm,
        gating=cfg.gating,
        positional_embedding=cfg.positional_embedding,
        max_period=float(cfg.max_period),
        layer_scale=cfg.layer_scale,
        cross_attention=cfg.cross_attention,
    )


def embed_streams(
    text_emb: ScaledEmbedding,
    audio_embs: Sequence[ScaledEmbedding],
    tokens: mx.array,
    dtype: mx.Dtype | None = None,
) -> mx.array:
    """tokens [B, 1 + n_q, T] (delayed layout, input ids) -> summed embeddings [B, T, D].

    Sums audio codebooks first, then text, in PT's order. `dtype` casts each embedding before
    the sum (the activation dtype; None keeps the weights' dtype).
    """
    if tokens.ndim != 3 or tokens.shape[1] != 1 + len(audio_embs):
        raise ValueError(
            f"expected tokens [B, {1 + len(audio_embs)}, T], got shape {tuple(tokens.shape)}"
        )

    def cast(y: mx.array) -> mx.array:
        return y if dtype is None else y.astype(dtype)

    x = None
    for k, emb in enumerate(audio_embs):
        y = cast(emb(tokens[:, 1 + k]))
        x = y if x is None else x + y
    y = cast(text_emb(tokens[:, 0]))
    return y if x is None else x + y


def run_temporal(
    transformer: nn.Module, out_norm: nn.Module, x: mx.array, cache: list | None = None,
    cross: list | None = None,
) -> mx.array:
    """x [B, T, D] -> hidden state after `out_norm` [B, T, D] (positions continue the cache);
    `cross`: per-layer cross-attention keys/values (TTS), see `Transformer.cross_kv`."""
    return out_norm(transformer(x, cache, cross))
