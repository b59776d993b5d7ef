"""Streaming speech-to-text step: PyTorch `LMGen` for a text-only LM (Kyutai's STT checkpoints).

Kyutai's STT models are the Moshi LM with `dep_q = 0` (no depformer: the model only emits text),
`n_q` user audio codebooks (32) and all `delays` 0; the text trails the audio by a delay learned
in training (0.5 s or 2.5 s), not by `delays`. `SttGen` reproduces PT `LMGen._step` for such a
model, with PT's input convention: the user frame passed to `step` at step t is read at step t.
As in PT (`is_init = offset <= delay`), step 0 reads the initial tokens for every stream (text
`text_card`, audio `card`) and ignores the frame given to it; step t > 0 reads the text token
sampled at step t - 1 and the audio of frame t. Every step returns the text token it sampled
(PT returns it at once: `max_delay` is 0), with the softmax of the extra heads (VAD) on the same
hidden state (PT `step_with_extra_heads`).

A batch of B streams advances together (one `step` per 80 ms frame for all of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from ..sampling import Sampler


@dataclass
class SttStep:
    """What one step produced, as NumPy: `tokens` [B] int32, `extra_heads` [B, n_heads,
    extra_heads_dim] float32 (n_heads = 0 without VAD heads), and `text_logits` [B, text_card]
    float32 when the generator was made with `keep_logits=True` (else None: copying them out
    every step costs time a transcriber does not need)."""

    step: int
    tokens: np.ndarray
    text_logits: np.ndarray | None
    extra_heads: np.ndarray


def check_stt_model(cfg: Any) -> None:
    """Raise ValueError unless `cfg` (an LmConfig) is a text-only STT LM that `SttGen` can run."""
    if cfg.dep_q != 0:
        raise ValueError(f"not a speech-to-text model: dep_q = {cfg.dep_q} (STT models have no "
                         "depformer, dep_q = 0); use `chat` or `run` for Moshi")
    if any(cfg.delays):
        raise ValueError(f"STT models have all stream delays 0; this config has {list(cfg.delays)}")
    if cfg.demux_second_stream or cfg.cross_attention or cfg.extra.get("conditioners"):
        raise ValueError("not a speech-to-text model: it has TTS features (second text stream, "
                         "conditioners or cross-attention); use `speak`")


class SttGen:
    """Greedy (or sampled) streaming transcription over `lm` (an `Lm` with dep_q = 0).

        gen = SttGen(lm, batch_size=B)
        out = gen.step(codes)      # codes int [B, >= n_q] (Mimi codes of one frame) -> SttStep
    """

    def __init__(self, lm: Any, batch_size: int = 1, sampler: Sampler | None = None,
                 seed: int | None = None, keep_logits: bool = False) -> None:
        check_stt_model(lm.cfg)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lm = lm
        self.batch_size = batch_size
        self.sampler = sampler or Sampler(0.0)
        self.cache = lm.make_cache()
        self.offset = 0
        self.keep_logits = keep_logits
        self._key = mx.random.key(seed) if seed is not None else None
        self._text = mx.full((batch_size,), lm.cfg.text_card, dtype=mx.int32)

    def _keys(self) -> mx.array | None:
        if self._key is None or self.sampler.greedy:
            return None
        self._key, sub = mx.random.split(self._key)
        return sub

    def step(self, codes: Any) -> SttStep:
        cfg = self.lm.cfg
        codes = mx.array(np.asarray(codes)).astype(mx.int32)
        if codes.ndim != 2 or codes.shape[0] != self.batch_size or codes.shape[1] < cfg.n_q:
            raise ValueError(f"expected codes [{self.batch_size}, >= {cfg.n_q}], "
                             f"got {tuple(codes.shape)}")
        audio = codes[:, :cfg.n_q]  # PT keeps the first n_q codebooks it is given
        if self.offset == 0:  # PT: offset <= delay (0) -> initial tokens everywhere
            audio = mx.full(audio.shape, cfg.card, dtype=mx.int32)
        tokens = mx.concatenate([self._text[:, None], audio], axis=1)[:, :, None]
        h = self.lm.temporal(self.lm.embed(tokens), self.cache)
        logits = self.lm.text_logits(h)[:, 0].astype(mx.float32)
        text = self.sampler(logits, key=self._keys()).astype(mx.int32)
        heads = self.lm.extra_head_probs(h)[:, :, 0]
        mx.eval(text, heads, *((logits,) if self.keep_logits else ()))
        self._text = text
        out = SttStep(self.offset, np.array(text), np.array(logits) if self.keep_logits else None,
                      np.array(heads))
        self.offset += 1
        return out
