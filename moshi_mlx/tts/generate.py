"""Streaming TTS generation: the LM steps, the text state machine decides the text it reads.

Reproduces PyTorch moshi's `TTSModel.generate` (`moshi/models/tts.py`, through `LMGen`) for
models whose every audio codebook is generated (dep_q = n_q, as tts-1.6b-en_fr). At step t
(0-based), with d_k the delay of audio codebook k and `delay_steps` the text-to-audio delay
(tts_config.audio_delay x 12.5 = 16 for tts-1.6b-en_fr):

- the temporal input is the text id fed at step t-1 (text_card at t = 0) and, per codebook, the
  audio sampled at step t-1, or the initial token `card` while t <= d_k; plus the conditions' sum;
- the text head proposes a token; `StateMachine.process` turns it into the id actually fed
  (a word's tokens, pad, or the packed pair of both text streams);
- the depformer, fed that id, samples the audio of step t; it is skipped while t < delay_steps,
  and codebook k is replaced by the zero token (-1, embedded as zeros) while t < d_k + delay_steps,
  so the audio starts `delay_steps` after the text;
- from t = D = max(delays) on, the step returns the aligned frame f = t - D: the text fed at step
  f and codebook k sampled at step f + d_k (PT `LMGen.step`'s frames).

The generator owns its state (KV caches, the last ids, the random key; explicit per stream), so
one `Lm` serves any number of generators. Sampling keys are split from `seed` as in
`moshi_mlx.engine.LmGen`.

Classifier-free guidance: tts-1.6b-en_fr distils it into its `cfg` conditioner (cfg_coef 1 here,
the strength goes in the conditions). For models without it, `cfg_coef` != 1 runs PT's real CFG:
`cond` holds 2B rows (the B conditions, then B dropped ones: LUT values None, voices masked), the
temporal batch is doubled with the null half's text input zeroed after step 0 (PT's
`cfg_is_no_text`, `TTSModel`'s default), the text is sampled from the conditioned half alone, and
each depformer codebook from `null + (cond - null) * cfg_coef`.

Voice cloning (tts-0.75b-en-public): `prefixes` ([1 + n_q, P] each, `moshi_mlx.tts.prefix`)
force the text of the first P steps and the delayed prefix audio, and with real CFG mask the
prefix from the null half (`cfg_is_no_prefix`); see `PrefixPlan`.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from ..models.conditioning import Conditions
from ..models.lm import Lm
from ..sampling import Sampler
from .prefix import PrefixPlan
from .state_machine import State, StateMachine

# tts-1.6b-en_fr's lm_gen_config (temperature 0.6) with PT LMGen's default top-k (25 / 250).
TTS_TEXT = Sampler(0.6, top_k=25)
TTS_AUDIO = Sampler(0.6, top_k=250)


@dataclass(frozen=True)
class TtsStep:
    """One step: the LM's proposals, the ids fed, whether an entry started, the aligned frame
    [B, 1 + n_q] (text, audio; -1 = no audio yet) or None before the delays allow one; and what
    the temporal transformer saw and gave (`inputs` [B', 1 + n_q] ids, `hidden` [B', D]; B' = 2B
    with real CFG), for checks such as `moshi_mlx.testing.window_check`."""

    sampled: list[int]
    fed: list[int]
    consumed: list[bool]
    frame: mx.array | None
    inputs: mx.array | None = None
    hidden: mx.array | None = None


class TtsGen:
    """Step-by-step TTS generation for a batch of `states` (one per script)."""

    def __init__(
        self,
        lm: Lm,
        machine: StateMachine,
        states: Sequence[State],
        cond: Conditions | None,
        delay_steps: int,
        text_sampler: Sampler = TTS_TEXT,
        audio_sampler: Sampler = TTS_AUDIO,
        seed: int | None = None,
        cfg_coef: float = 1.0,
        compile: bool = True,
        prefixes: Sequence[np.ndarray] | None = None,
        cfg_is_no_prefix: bool = True,
    ) -> None:
        cfg = lm.cfg
        if cfg.dep_q != cfg.n_q or cfg.dep_q == 0:
            raise ValueError(f"TTS generation needs every codebook generated, got n_q={cfg.n_q}, "
                             f"dep_q={cfg.dep_q}")
        if cfg.delays[0] != 0:
            raise ValueError(f"TTS generation needs a text delay of 0, got delays {cfg.delays}")
        if delay_steps < 0:
            raise ValueError(f"delay_steps must be >= 0, got {delay_steps}")
        self.lm, self.machine, self.states, self.cond = lm, machine, list(states), cond
        self.delay_steps = delay_steps
        self.text_sampler, self.audio_sampler = text_sampler, audio_sampler
        self.seed = secrets.randbits(32) if seed is None else int(seed)
        self.cfg_coef = float(cfg_coef)
        self.audio_delays = [int(d) for d in cfg.delays[1:]]
        self.max_delay = max(cfg.delays)
        B = len(self.states)
        self.cache = lm.make_cache()
        self.step_count = 0
        self._key = mx.random.key(self.seed)
        self._text = mx.full((B,), cfg.text_initial_token, dtype=mx.int32)
        self._audio = mx.full((B, cfg.n_q), cfg.audio_initial_token, dtype=mx.int32)
        self._history: deque[tuple[mx.array, mx.array]] = deque(maxlen=self.max_delay + 1)
        self._zero_audio = mx.full((B, cfg.n_q), -1, dtype=mx.int32)
        self._depformer = self._make_depformer(compile)
        if prefixes is not None and len(prefixes) != B:
            raise ValueError(f"give one prefix per script: {len(prefixes)} for {B} scripts")
        self.prefix = None if prefixes is None else PrefixPlan(
            prefixes, self.audio_delays, cfg.n_q, delay_steps, cfg_is_no_prefix)

    @property
    def batch_size(self) -> int:
        return len(self.states)

    def _keys(self) -> tuple[mx.array | None, mx.array | None]:
        if self.text_sampler.greedy and self.audio_sampler.greedy:
            return None, None
        self._key, sub = mx.random.split(self._key)
        keys = mx.random.split(sub, 1 + self.lm.dep_q)
        return keys[0], keys[1:]

    def _inputs(self) -> mx.array:
        t, audio = self.step_count, self._audio
        if t <= self.max_delay:  # some codebooks still read their initial token
            ready = mx.array([t > d for d in self.audio_delays])
            audio = mx.where(ready, audio, self.lm.cfg.audio_initial_token)
        return mx.concatenate([self._text[:, None], audio], axis=1)[:, :, None]

    @property
    def guided(self) -> bool:
        return self.cfg_coef != 1.0

    def step(self) -> TtsStep:
        lm, t, B = self.lm, self.step_count, self.batch_size
        text_key, audio_keys = self._keys()
        x = self._inputs()
        if self.guided:
            null = x if t == 0 else mx.concatenate([mx.full((B, 1, 1), -1, mx.int32), x[:, 1:]], 1)
            if self.prefix is not None:
                null = self.prefix.mask_null(t, null)
            x = mx.concatenate([x, null], axis=0)
        h = lm.temporal(lm.embed(x, self.cond), self.cache, self.cond)[:, -1]
        sampled = self.text_sampler(lm.text_logits(h[:B]), key=text_key).tolist()
        fed, consumed = [], []
        for b, (state, token) in enumerate(zip(self.states, sampled, strict=True)):
            forced = None if self.prefix is None else self.prefix.text_at(b, t)
            out, used = (forced, False) if forced is not None else self.machine.process(
                t, state, int(token))
            fed.append(out)
            consumed.append(used)
        text = mx.array(fed, dtype=mx.int32)
        if t < self.delay_steps:
            audio = self._zero_audio
        else:
            audio = self._depformer(h, text) if audio_keys is None else self._depformer(
                h, text, audio_keys)
            if t < self.max_delay + self.delay_steps:  # some codebooks not started yet
                silent = mx.array([t < d + self.delay_steps for d in self.audio_delays])
                audio = mx.where(silent, -1, audio)
        if self.prefix is not None:
            audio = self.prefix.force_audio(t, audio)
        self._text, self._audio = text, audio
        self._history.append((text, audio))
        self.step_count += 1
        return TtsStep(sampled=[int(s) for s in sampled], fed=fed, consumed=consumed,
                       frame=self._aligned_frame(), inputs=x[:, :, 0], hidden=h)

    def _make_depformer(self, compile: bool):
        """(h [B or 2B, D], text [B], keys [dep_q, 2] or None) -> audio [B, dep_q]: one frame of
        the depformer, compiled as in `moshi_mlx.engine.LmGen` (its cache is fresh every frame,
        so a frame is a pure function of its inputs)."""
        lm, sampler, B, coef = self.lm, self.audio_sampler, self.batch_size, self.cfg_coef

        def frame(h: mx.array, text: mx.array, keys: mx.array | None = None) -> mx.array:
            def sample(logits: mx.array, k: int) -> mx.array:
                if coef != 1.0:
                    cond, null = logits[:B], logits[B:]
                    logits = null + (cond - null) * coef
                tok = sampler(logits, key=None if keys is None else keys[k])
                return mx.concatenate([tok, tok]) if coef != 1.0 else tok

            fed = mx.concatenate([text, text]) if coef != 1.0 else text
            return lm.sample_depformer(h, fed, sample)[:B]

        return mx.compile(frame, inputs=lm.state) if compile else frame

    def _aligned_frame(self) -> mx.array | None:
        """Frame f = t - D (t the step just run): text of step f, codebook k of step f + d_k."""
        t = self.step_count - 1
        if t < self.max_delay:
            return None
        f = t - self.max_delay
        text = self._history[-1 - (t - f)][0]
        cols = [self._history[-1 - (t - f - d)][1][:, k] for k, d in enumerate(self.audio_delays)]
        return mx.concatenate([text[:, None], mx.stack(cols, axis=1)], axis=1)


@dataclass
class TtsResult:
    """What `generate` returns: frames [B, 1 + n_q, T] (aligned), per-step (sampled, fed) ids,
    and per script the end step (None if cut by max_steps), entry start steps and transcript."""

    frames: mx.array
    text_tokens: list[list[tuple[int, int]]] = field(default_factory=list)
    end_steps: list[int | None] = field(default_factory=list)
    consumption_times: list[list[int]] = field(default_factory=list)
    transcripts: list[list[tuple[str, int]]] = field(default_factory=list)


def generate(gen: TtsGen, final_padding: int = 4, max_steps: int = 30000) -> TtsResult:
    """Run `gen` until every script ended `delay_steps + final_padding` steps ago (PT's stop rule),
    or `max_steps` steps."""
    logged: list[list[tuple[int, int]]] = [[] for _ in gen.states]
    frames = []
    for t in range(max_steps):
        ends = [s.end_step for s in gen.states]
        if all(e is not None for e in ends) and t >= max(ends) + gen.delay_steps + final_padding:
            break
        out = gen.step()
        for b, (s, f) in enumerate(zip(out.sampled, out.fed, strict=True)):
            logged[b].append((s, f))
        if out.frame is not None:
            frames.append(out.frame)
    stacked = (mx.stack(frames, axis=2) if frames
               else mx.zeros((gen.batch_size, 1 + gen.lm.cfg.n_q, 0), dtype=mx.int32))
    return TtsResult(
        frames=stacked, text_tokens=logged, end_steps=[s.end_step for s in gen.states],
        consumption_times=[list(s.consumption_times) for s in gen.states],
        transcripts=[list(s.transcript) for s in gen.states],
    )
