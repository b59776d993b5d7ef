"""Moshi's multi-stream LM: Helium temporal transformer + depformer, with Kyutai's MLX key names.

Parameters (equal to Kyutai's MLX checkpoint keys, so their bf16/q8/q4 files load as they are):
`text_emb` [text_card+1, D], `audio_embs.{i}` [card+1, D] (i < n_q), `transformer.layers.{L}...`,
`out_norm`, `text_linear` [text_card (text_card_out if set), D], `depformer.slices.{k}.{linear_in,
emb, transformer, linear_out}` (k < dep_q). Embeddings give exact zeros for id -1, quantized or not.

Whole-sequence API (tests, quantization reports):

    text_logits, audio_logits = lm.forward(codes)
        codes int [B, 1+n_q, T], aligned (undelayed): row 0 text, rows 1..dep_q Moshi's audio,
        the rest the user's. Returns text_logits [B, 1, T, text_card] and audio_logits
        [B, dep_q, T, card], aligned with `codes` exactly as torch `LMModel.forward`: logits at
        [.., k, t] predict codes[:, k(+1), t]. Positions the delays leave undefined (the last
        delays[k] steps of row k) hold NaN, as in PT; `moshi_mlx.delays.undelay_mask` marks them.

Step API (the streaming engine codes against it; B = batch, D = dim):

    cache = lm.make_cache()                 # temporal KV caches: rotating, exactly cfg.context
    x = lm.embed(tokens)                    # tokens [B, 1+n_q, T] delayed-layout input ids -> [B, T, D]
    h = lm.temporal(x, cache)               # [B, T, D], after out_norm; positions continue cache
    logits = lm.text_logits(h)              # [B, T, text_card]
    probs = lm.extra_head_probs(h)          # [B, n_extra_heads, T, extra_heads_dim] (STT VAD)
    audio = lm.sample_depformer(h[:, -1], text_ids, sample)   # [B, dep_q] int32
        sample(logits [B, card], k) -> ids [B], e.g. `lambda l, k: sampler(l, key=keys[k])`
    # or step by step:
    dcache = lm.make_depformer_cache()      # fresh every frame
    logits_k = lm.depformer_step(k, h, prev_ids [B, T], dcache)   # [B, T, card], k = 0..dep_q-1
    # teacher forcing:
    lm.depformer_logits(h, inputs)          # inputs [B, dep_q, T]: row 0 text, row k audio k-1

TTS checkpoints (tts-1.6b-en_fr) add a demuxed text embedding (`text_emb.out1/out2`), low-rank
depformer embeddings, `condition_provider.conditioners.*` and cross-attention in the temporal
layers; their conditions are explicit state: `cond = lm.conditions(values)` once per stream
(see `models/conditioning.py`), then `lm.embed(tokens, cond)`, `lm.temporal(x, cache, cond)`,
`lm.forward(codes, cond)`.

`lm.act_dtype` (None, or an mx dtype set by the compute policy, `moshi_mlx.compute`) is the
activation dtype: embeddings are cast to it, so float32 activations with quantized weights are
possible (the fast recipe on MLX's CPU, chosen by `load_lm(dtype=None)`). The model holds no state
beside its parameters: how they are stored (dtype, memory layout) is decided at load time.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..config import LmConfig
from ..delays import delay_codes, initial_tokens, undelay
from ..nn.embedding import ScaledEmbedding
from ..nn.factored_embedding import FactoredEmbedding
from ..nn.linear import Linear
from ..nn.transformer import Transformer, make_norm
from .conditioning import Conditions, make_condition_provider, prepare_conditions
from .depformer import Depformer, StepSampler
from .helium import embed_streams, run_temporal, temporal_config


class Lm(nn.Module):
    def __init__(self, cfg: LmConfig):
        super().__init__()
        self.cfg = cfg
        self.act_dtype: mx.Dtype | None = None
        self.text_emb = (
            FactoredEmbedding(cfg.text_card + 1, cfg.dim, demux=True)
            if cfg.demux_second_stream else ScaledEmbedding(cfg.text_card + 1, cfg.dim)
        )
        self.audio_embs = [ScaledEmbedding(cfg.card + 1, cfg.dim) for _ in range(cfg.n_q)]
        self.transformer = Transformer(temporal_config(cfg))
        self.out_norm = make_norm(cfg.norm, cfg.dim)
        self.text_linear = Linear(cfg.dim, cfg.text_out_card, bias=False)
        self.depformer = Depformer(cfg)
        provider = make_condition_provider(cfg)
        if provider is not None:
            self.condition_provider = provider
        # STT checkpoints: `extra_heads.{i}` (VAD), PT and Kyutai MLX use the same names.
        self.extra_heads = [
            Linear(cfg.dim, cfg.extra_heads_dim, bias=False)
            for _ in range(cfg.extra_heads_num_heads)
        ]

    # Sizes -----------------------------------------------------------------------------------
    @property
    def n_q(self) -> int:
        return self.cfg.n_q

    @property
    def dep_q(self) -> int:
        return self.cfg.dep_q

    # Step API --------------------------------------------------------------------------------
    def make_cache(self) -> list:
        """Temporal KV caches, one per layer (rotating with exactly `cfg.context` entries)."""
        return self.transformer.make_cache()

    def make_depformer_cache(self) -> list:
        return self.depformer.make_cache()

    def conditions(self, values: dict) -> Conditions:
        """Conditioner inputs -> fused `Conditions` for embed / temporal / forward (TTS)."""
        if "condition_provider" not in self:
            raise ValueError("this LM has no conditioners")
        return prepare_conditions(self.condition_provider, self.transformer, values, self.act_dtype)

    def embed(self, tokens: mx.array, cond: Conditions | None = None) -> mx.array:
        """tokens [B, 1+n_q, T] (input ids, delayed layout) -> [B, T, D] in `act_dtype`."""
        x = embed_streams(self.text_emb, self.audio_embs, tokens, self.act_dtype)
        return x if cond is None or cond.sum is None else x + cond.sum.astype(x.dtype)

    def temporal(
        self, x: mx.array, cache: list | None = None, cond: Conditions | None = None
    ) -> mx.array:
        """Embeddings [B, T, D] -> hidden state after out_norm [B, T, D]."""
        cross = None if cond is None else cond.cross
        return run_temporal(self.transformer, self.out_norm, x, cache, cross)

    def text_logits(self, h: mx.array) -> mx.array:
        return self.text_linear(h)

    def extra_head_probs(self, h: mx.array) -> mx.array:
        """Softmax of every extra head on h [B, T, D] -> [B, n_heads, T, extra_heads_dim] float32
        (PT `LMGen.step_with_extra_heads`); n_heads = 0 for checkpoints without them."""
        if not self.extra_heads:
            return mx.zeros((h.shape[0], 0, h.shape[1], self.cfg.extra_heads_dim), mx.float32)
        return mx.stack([mx.softmax(head(h).astype(mx.float32), axis=-1)
                         for head in self.extra_heads], axis=1)

    def depformer_step(self, k: int, h: mx.array, prev: mx.array, cache: list) -> mx.array:
        """Logits [B, T, card] of codebook k; prev = text ids (k = 0) or audio k-1 ids, [B, T]."""
        return self.depformer.step(k, h, prev, cache, self.act_dtype)

    def sample_depformer(self, h: mx.array, text_token: mx.array, sample: StepSampler) -> mx.array:
        """h [B, D] (or [B, 1, D]), text ids [B] -> Moshi's audio ids [B, dep_q] for this frame."""
        return self.depformer.sample(h, text_token, sample, self.act_dtype)

    def depformer_logits(self, h: mx.array, inputs: mx.array) -> mx.array:
        """Teacher-forced depformer: h [B, T, D], inputs [B, dep_q, T] -> [B, dep_q, T, card]."""
        return self.depformer.teacher_forced(h, inputs, self.act_dtype)

    # Whole sequence --------------------------------------------------------------------------
    def delayed_inputs(self, codes: mx.array) -> mx.array:
        """Aligned codes [B, K, T] -> model input sequence [B, K, T+1] (PT `LMModel.forward`):
        column 0 holds the initial tokens, column s+1 the delayed codes of step s."""
        cfg = self.cfg
        init = initial_tokens(cfg.text_card, cfg.card, cfg.n_q)
        codes = codes.astype(mx.int32)
        B = codes.shape[0]
        delayed = delay_codes(codes, cfg.delays, pad=init)
        first = mx.broadcast_to(mx.array(init, dtype=mx.int32)[None, :, None], (B, len(init), 1))
        return mx.concatenate([first, delayed], axis=2)

    def forward(self, codes: mx.array, cond: Conditions | None = None) -> tuple[mx.array, mx.array]:
        """Teacher-forced logits aligned with `codes`; see the module docstring."""
        cfg = self.cfg
        if not isinstance(codes, mx.array):
            codes = mx.array(codes)
        if codes.ndim != 3 or codes.shape[1] != cfg.num_codebooks:
            raise ValueError(
                f"expected codes [B, {cfg.num_codebooks}, T], got shape {tuple(codes.shape)}"
            )
        seq = self.delayed_inputs(codes)
        h = self.temporal(self.embed(seq[:, :, :-1], cond), cond=cond)
        text = self.text_logits(h)[:, None]
        audio = self.depformer_logits(h, seq[:, : cfg.dep_q, 1:])
        text = undelay(text, cfg.delays[:1])
        if cfg.dep_q > 0:
            audio = undelay(audio, cfg.delays[1 : 1 + cfg.dep_q])
        return text, audio

    __call__ = forward
