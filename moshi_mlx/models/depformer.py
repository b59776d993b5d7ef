"""Depth transformer ("depformer"): predicts Moshi's dep_q audio codebooks of one frame, one by one.

Reproduces PyTorch moshi's `LMModel.forward_depformer` / `forward_depformer_training`. At step k
of a frame (k = 0..dep_q-1) the input is `linear_in_k(h) + emb_k(prev)`, where h is the temporal
transformer's output (after out_norm), prev is the text token for k = 0 and audio code k-1
otherwise; the step-k transformer runs on that single position with a KV cache holding steps
0..k-1 of this frame only (fresh every frame, so at most dep_q positions, no sliding window; PT
forces the depformer's context to None); `linear_out_k` gives `card` logits.

Kyutai's MLX layout keeps one full weight set per step, `depformer.slices.{k}.{linear_in, emb,
transformer.layers.{L}..., linear_out}`. PyTorch shares some of them between steps (the norms
always; everything when `depformer_weights_per_step` is False; steps with the same entry of
`depformer_weights_per_step_schedule`; `depformer_in` when `depformer_multi_linear` is False): our
key map copies shared tensors into every slice, so one module layout covers every config.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn

from ..config import LmConfig
from ..nn.embedding import ScaledEmbedding
from ..nn.factored_embedding import FactoredEmbedding
from ..nn.kv_cache import ConcatenateKVCache
from ..nn.linear import Linear
from ..nn.transformer import Transformer, TransformerConfig

# sample(logits [B, card], k) -> ids [B]; k is the depformer step (codebook index).
StepSampler = Callable[[mx.array, int], mx.array]


def depformer_config(cfg: LmConfig) -> TransformerConfig:
    """Shape of one slice's transformer (PT builds it from the `depformer_*` kwargs, context None)."""
    return TransformerConfig(
        d_model=cfg.depformer_dim,
        num_heads=cfg.depformer_num_heads,
        num_layers=cfg.depformer_num_layers,
        dim_feedforward=cfg.dep_dim_feedforward,
        causal=cfg.causal,
        context=None,
        norm=cfg.norm,
        gating=cfg.depformer_gating,
        positional_embedding=cfg.depformer_pos_emb,
        max_period=float(cfg.depformer_max_period),
        layer_scale=cfg.depformer_layer_scale,
    )


class DepformerSlice(nn.Module):
    """Weights of depformer step k: `linear_in`, `emb`, `transformer`, `linear_out`."""

    def __init__(self, cfg: LmConfig, in_vocab: int, demux: bool = False):
        super().__init__()
        self.linear_in = Linear(cfg.dim, cfg.depformer_dim, bias=False)
        low_rank = cfg.depformer_low_rank_embeddings
        # TTS: low-rank tables, and slice 0 reads the (packed) text ids of both text streams.
        self.emb = (
            FactoredEmbedding(in_vocab, cfg.depformer_dim, low_rank=low_rank, demux=demux)
            if low_rank is not None or demux else ScaledEmbedding(in_vocab, cfg.depformer_dim)
        )
        self.transformer = Transformer(depformer_config(cfg))
        self.linear_out = Linear(cfg.depformer_dim, cfg.card, bias=False)


class Depformer(nn.Module):
    def __init__(self, cfg: LmConfig):
        super().__init__()
        self.slices = [
            DepformerSlice(cfg, cfg.text_card + 1 if k == 0 else cfg.card + 1,
                           demux=k == 0 and cfg.demux_second_stream)
            for k in range(cfg.dep_q)
        ]
        self.num_layers = cfg.depformer_num_layers
        self.card = cfg.card

    @property
    def dep_q(self) -> int:
        return len(self.slices)

    def make_cache(self) -> list[ConcatenateKVCache]:
        """A fresh per-frame cache (one per layer, shared by all slices)."""
        return [ConcatenateKVCache() for _ in range(self.num_layers)]

    def step(
        self, k: int, h: mx.array, prev: mx.array, cache: list, dtype: mx.Dtype | None = None
    ) -> mx.array:
        """Logits [B, T, card] of step k; h [B, T, D], prev ids [B, T]; the cache holds steps < k."""
        if cache[0].offset != k:
            raise ValueError(f"depformer step {k} needs a cache holding {k} steps, got {cache[0].offset}")
        s = self.slices[k]
        e = s.emb(prev)
        x = s.linear_in(h) + (e if dtype is None else e.astype(dtype))
        return s.linear_out(s.transformer(x, cache))

    def sample(
        self,
        h: mx.array,
        text_token: mx.array,
        sample: StepSampler,
        dtype: mx.Dtype | None = None,
    ) -> mx.array:
        """One frame: h [B, D] or [B, 1, D], text ids [B] -> audio ids [B, dep_q] (int32)."""
        if h.ndim == 2:
            h = h[:, None]
        cache = self.make_cache()
        prev = text_token.reshape(-1, 1)
        out = []
        for k in range(self.dep_q):
            logits = self.step(k, h, prev, cache, dtype)[:, 0]
            tok = sample(logits, k).astype(mx.int32).reshape(-1)
            out.append(tok)
            prev = tok[:, None]
        if not out:
            return mx.zeros((h.shape[0], 0), dtype=mx.int32)
        return mx.stack(out, axis=1)

    def teacher_forced(
        self, h: mx.array, inputs: mx.array, dtype: mx.Dtype | None = None
    ) -> mx.array:
        """h [B, T, D], inputs [B, dep_q, T] (row 0 text, row k audio k-1) -> logits [B, dep_q, T, card].

        Every time step is an independent frame: fold T into the batch and run the dep_q steps
        with a cache, which equals PT's full pass with per-position weights.
        """
        B, T, D = h.shape
        if self.dep_q == 0:
            return mx.zeros((B, 0, T, self.card), dtype=h.dtype)
        if inputs.shape != (B, self.dep_q, T):
            raise ValueError(f"expected depformer inputs [{B}, {self.dep_q}, {T}], got {inputs.shape}")
        hf = h.reshape(B * T, 1, D)
        tok = inputs.transpose(0, 2, 1).reshape(B * T, self.dep_q)
        cache = self.make_cache()
        logits = [self.step(k, hf, tok[:, k:k + 1], cache, dtype)[:, 0] for k in range(self.dep_q)]
        return mx.stack(logits, axis=1).reshape(B, T, self.dep_q, -1).transpose(0, 2, 1, 3)
