"""Streaming generation: one `LmGen.step` per 80 ms frame (no threads, devices, codecs or UI).

Each step takes the user's audio codes of one frame and returns Moshi's text token and, once the
acoustic delay allows, Moshi's audio codes of one aligned frame. The generator owns all state
(temporal KV caches from `lm.make_cache()`, the last tokens, the random key), so one `Lm` can
serve several `LmGen` instances, i.e. several independent streams.

Timing convention: PyTorch `LMGen`'s (moshi/models/lm.py, `LMGen._step`), the reference.
Streams are K = 1 + n_q rows: 0 text, 1..dep_q Moshi audio, then the user's audio; d_k = delays[k].
At step s (0-based, `step_count` before the call):
- user stream k feeds the user frame passed at step s - d_k (`delays.user_frame`), or its initial
  token (card) when s - d_k < 1. So the frame passed at step s is read *in that same step* by the
  delay-0 codebooks (the semantic one), and Moshi's text and audio of step s already react to it.
  Frame 0 is never read: PT feeds initial tokens on every column s <= d_k.
- Moshi's text and audio streams feed what was sampled at step s-1 (the delayed layout), or their
  initial tokens (text_card, card) while s <= d_k.
- text sampled at step s is Moshi's text of frame s -> `StepOutput.text`.
- the depformer samples codebook k of frame s-d_k (dropped when negative).
- `StepOutput.audio` is Moshi's complete aligned frame s-D, D = max Moshi audio delay (1 for Moshi),
  i.e. codebook k taken from the depformer output of step s-D+d_k; None while s < D. Text thus
  leads audio by D frames. PT's `step` returns the same audio frame at the same step (with the text
  of that frame, which we returned D steps earlier).
Teacher forcing: `Lm.forward` (PT `LMModel.forward`) reads aligned frame f of every stream at step
f+1+d_k, so a streamed run equals `lm.forward` on aligned codes whose user frame f is the frame
passed at step f+1 (`tests/test_engine.py`, `tests/test_engine_golden.py`). One caveat, shared with
PT `LMGen`: within a frame the depformer feeds codebook k-1 as sampled at this step; if delays were
not non-decreasing over Moshi's codebooks, that token could belong to a frame < 0, where the forward
feeds the initial token instead. Moshi's delays [0, 1, ..., 1] never hit this.

Difference from Kyutai's MLX `LmGen` (and Rust `lm_generate_multistream`): they read the user frame
passed at step s only at step s+1+d_k, so Moshi hears the user one 80 ms frame later than the model
allows. Feeding them our frame s+1 at their step s gives the same tokens as ours at step s.

Sampling uses explicit keys split from `seed` (one key per step, one per depformer codebook), so a
given seed reproduces a session exactly; `reset()` restarts it.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .delays import input_frame, sampled_frame, undelay, user_frame
from .models.lm import Lm
from .sampling import DEFAULT_AUDIO, DEFAULT_TEXT, Sampler


@dataclass(frozen=True)
class StepOutput:
    """text [B] int32: Moshi's text token of this step; audio [B, dep_q] int32 or None."""

    text: mx.array
    audio: mx.array | None


class LmGen:
    """Greedy or sampled streaming generation with `lm`; see the module docstring for timing.

    text_sampler / audio_sampler: default `DEFAULT_TEXT` / `DEFAULT_AUDIO` (PT LMGen's values);
    `GREEDY` for argmax. seed: None draws one (kept in `.seed` for transcripts). keep_logits: keep
    `last_text_logits` [B, text_card] and `last_audio_logits` [B, dep_q, card] (delayed layout:
    as sampled at this step) for tests and analysis. compile: run the per-frame depformer through
    `mx.compile`.
    """

    def __init__(
        self,
        lm: Lm,
        text_sampler: Sampler | None = None,
        audio_sampler: Sampler | None = None,
        batch_size: int = 1,
        seed: int | None = None,
        keep_logits: bool = False,
        compile: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        cfg = lm.cfg
        if cfg.delays[0] != 0:
            raise ValueError(f"streaming generation needs a text delay of 0, got delays {cfg.delays}")
        self.lm = lm
        self.cfg = cfg
        self.text_sampler = DEFAULT_TEXT if text_sampler is None else text_sampler
        self.audio_sampler = DEFAULT_AUDIO if audio_sampler is None else audio_sampler
        self.batch_size = batch_size
        self.seed = secrets.randbits(32) if seed is None else int(seed)
        self.keep_logits = keep_logits
        self.compile = compile
        self.dep_q = cfg.dep_q
        self.num_user = cfg.n_q - cfg.dep_q
        d = list(cfg.delays)
        self._moshi_delays = np.array(d[1 : 1 + cfg.dep_q], dtype=np.int64)
        self._user_delays = np.array(d[1 + cfg.dep_q :], dtype=np.int64)
        self.audio_delay = int(self._moshi_delays.max()) if cfg.dep_q else 0
        B = batch_size
        self._text_init = mx.full((B,), cfg.text_initial_token, dtype=mx.int32)
        self._audio_init_moshi = mx.full((B, cfg.dep_q), cfg.card, dtype=mx.int32)
        self._audio_init_user = mx.full((B, self.num_user), cfg.card, dtype=mx.int32)
        # Column masks per distinct delay, built once (per-frame work stays a few graph nodes).
        self._user_cols = {int(d): mx.array(self._user_delays == d) for d in np.unique(self._user_delays)}
        self._moshi_cols = {int(d): mx.array(self._moshi_delays == d)
                            for d in np.unique(self._moshi_delays)}
        self._depformer = self._make_depformer() if cfg.dep_q else None
        self._embed, self._text_head = self._make_temporal_parts()
        self.reset()

    # State ------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a fresh session (same seed: the same samples for the same inputs)."""
        self.cache = self.lm.make_cache()
        self.step_count = 0
        self._key = mx.random.key(self.seed)
        self._prev_text = self._text_init
        self._prev_audio = self._audio_init_moshi
        # User frames s-d for every user delay d, and depformer outputs of the last D+1 steps.
        self._user_hist: deque[mx.array] = deque(maxlen=int(self._user_delays.max(initial=0)) + 1)
        self._dep_hist: deque[mx.array] = deque(maxlen=self.audio_delay + 1)
        self.last_text_logits: mx.array | None = None
        self.last_audio_logits: mx.array | None = None

    def warmup(self, steps: int = 2) -> None:
        """Run `steps` frames of silence-like zeros (builds and compiles every kernel), then reset."""
        zeros = np.zeros((self.batch_size, self.num_user), dtype=np.int32)
        for _ in range(steps):
            out = self.step(zeros)
            mx.eval(out.text, self._prev_audio)
        self.reset()

    # Inputs -----------------------------------------------------------------------------------
    def _user_codes(self, user_codes) -> mx.array:
        u = user_codes if isinstance(user_codes, mx.array) else mx.array(np.asarray(user_codes))
        if u.ndim == 3 and u.shape[2] == 1:
            u = u[:, :, 0]
        if u.ndim != 2 or u.shape[0] != self.batch_size or u.shape[1] < self.num_user:
            raise ValueError(
                f"user_codes must be [{self.batch_size}, {self.num_user}] (or [B, {self.num_user}, 1]),"
                f" got shape {tuple(u.shape)}"
            )
        return u[:, : self.num_user].astype(mx.int32)

    def _user_input(self, s: int) -> mx.array:
        """[B, n_user]: column j holds user frame user_frame(s, d_j), or the initial token."""
        out = self._audio_init_user
        for d, cols in self._user_cols.items():
            f = user_frame(s, d)
            if f < 0:
                continue
            frame = self._user_hist[-1 - (s - f)]  # the newest stored frame is s
            out = frame if len(self._user_cols) == 1 else mx.where(cols, frame, out)
        return out

    def _inputs(self) -> mx.array:
        """Temporal input [B, K, 1] of step s (module docstring)."""
        s = self.step_count
        # Moshi's stream k feeds frame input_frame(s, d_k), sampled at step input_frame + d_k = s-1:
        # whatever the delays, that is the previous step's depformer output.
        moshi = self._prev_audio
        if self.dep_q and s <= self.audio_delay:
            ready = np.array([input_frame(s, int(d)) >= 0 for d in self._moshi_delays])
            moshi = mx.where(mx.array(ready), moshi, self._audio_init_moshi)
        rows = [self._prev_text[:, None], moshi, self._user_input(s)]
        return mx.concatenate(rows, axis=1)[:, :, None]

    def _aligned_audio(self) -> mx.array | None:
        """Moshi's frame f = sampled_frame(s, D), complete at step s: codebook k sampled at f + d_k."""
        s = self.step_count
        f = sampled_frame(s, self.audio_delay)
        if f < 0 or not self.dep_q:
            return None
        out = None
        for d, cols in self._moshi_cols.items():
            block = self._dep_hist[-1 - (s - (f + d))]  # the newest stored output is step s
            out = block if out is None else mx.where(cols, block, out)
        return out

    # Step -------------------------------------------------------------------------------------
    def _make_depformer(self):
        """(h [B, D], text [B], keys [dep_q, 2] or None) -> (audio [B, dep_q], logits [B, dep_q, card]).

        The depformer's cache is fresh every frame, so one frame is a pure function of its inputs
        and `mx.compile` applies: it fuses the per-codebook elementwise work and casts (the gain
        is largest in bfloat16).
        """
        lm, sampler = self.lm, self.audio_sampler

        def frame(h: mx.array, text: mx.array, keys: mx.array | None = None):
            logits: list[mx.array] = []

            def sample(lg: mx.array, k: int) -> mx.array:
                logits.append(lg)
                return sampler(lg, key=None if keys is None else keys[k])

            audio = lm.sample_depformer(h, text, sample)
            return audio, mx.stack(logits, axis=1)

        return mx.compile(frame, inputs=lm.state) if self.compile else frame

    def _make_temporal_parts(self):
        """(embed, text head): the stateless pieces around the temporal transformer, compiled.

        embed: input ids [B, K, 1] -> [B, 1, D] (1 + n_q gathers and their id -1 masks fused);
        text head: (h [B, D], key or None) -> (text ids [B], logits [B, text_card]). Both are
        pure functions of their inputs, so compiling them is safe; the transformer updates caches
        in place and stays eager (its time is in the matmuls, which compiling does not change).
        """
        lm, sampler = self.lm, self.text_sampler

        def head(h: mx.array, key: mx.array | None = None):
            logits = lm.text_logits(h)
            return sampler(logits, key=key), logits

        if not self.compile:
            return lm.embed, head
        return mx.compile(lm.embed, inputs=lm.state), mx.compile(head, inputs=lm.state)

    def _keys(self) -> tuple[mx.array | None, mx.array | None]:
        if self.text_sampler.greedy and self.audio_sampler.greedy:
            return None, None
        self._key, sub = mx.random.split(self._key)
        keys = mx.random.split(sub, 1 + self.dep_q)
        return keys[0], (None if self.audio_sampler.greedy else keys[1:])

    def step(self, user_codes) -> StepOutput:
        """One 80 ms frame: user codes [B, n_q - dep_q] (or [B, ., 1]), mx or numpy ints."""
        u = self._user_codes(user_codes)
        self._user_hist.append(u)  # read at this very step by the delay-0 codebooks
        lm = self.lm
        text_key, audio_keys = self._keys()
        h = lm.temporal(self._embed(self._inputs()), self.cache)[:, -1]  # [B, D]
        text, text_logits = self._text_head(*((h,) if text_key is None else (h, text_key)))
        if self.dep_q:
            args = (h, text) if audio_keys is None else (h, text, audio_keys)
            audio, audio_logits = self._depformer(*args)
            self._prev_audio = audio
            self._dep_hist.append(audio)
            if self.keep_logits:
                self.last_audio_logits = audio_logits
        self._prev_text = text
        if self.keep_logits:
            self.last_text_logits = text_logits
        out = StepOutput(text=text, audio=self._aligned_audio())
        self.step_count += 1
        # Start computing now; the caller's np.asarray/.item() waits for it. Evaluating the outputs
        # also materializes the KV cache updates, so the lazy graph never grows across steps.
        # (On MLX's CPU backend async_eval of a large graph blocks while it schedules; on Metal
        # it returns at once.)
        mx.async_eval(text, self._prev_audio)
        return out


def teacher_forced_logits(
    lm: Lm, codes, chunk: int | None = None
) -> tuple[mx.array, mx.array]:
    """Teacher-forced logits of aligned codes [B, 1+n_q, T], aligned like `lm.forward`.

    chunk None: one `lm.forward` pass. chunk = N: the temporal transformer runs N steps at a time
    through a KV cache (memory bounded by N and the context instead of T); same values.
    """
    if chunk is None:
        return lm.forward(codes)
    cfg = lm.cfg
    codes = codes if isinstance(codes, mx.array) else mx.array(np.asarray(codes))
    codes = codes.astype(mx.int32)
    seq = lm.delayed_inputs(codes)  # [B, K, T+1]: column t is the input of step t
    T = codes.shape[2]
    cache = lm.make_cache()
    texts, audios = [], []
    for start in range(0, T, chunk):
        stop = min(start + chunk, T)
        h = lm.temporal(lm.embed(seq[:, :, start:stop]), cache)
        texts.append(lm.text_logits(h))
        audios.append(lm.depformer_logits(h, seq[:, : cfg.dep_q, start + 1 : stop + 1]))
        mx.eval(texts[-1], audios[-1])
    text = undelay(mx.concatenate(texts, axis=1)[:, None], cfg.delays[:1])
    audio = mx.concatenate(audios, axis=2)
    if cfg.dep_q:
        audio = undelay(audio, cfg.delays[1 : 1 + cfg.dep_q])
    return text, audio


def aligned_codes(text: mx.array, audio: mx.array, user: mx.array) -> mx.array:
    """Stack per-step engine outputs into aligned codes [B, 1+n_q, T] for `teacher_forced_logits`.

    text [B, T], audio [B, T, dep_q], user [B, T, n_user], all frame-aligned.
    """
    return mx.concatenate(
        [text[:, None], audio.transpose(0, 2, 1), user.transpose(0, 2, 1)], axis=1
    ).astype(mx.int32)


__all__ = ["LmGen", "StepOutput", "aligned_codes", "teacher_forced_logits"]
