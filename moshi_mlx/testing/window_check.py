"""Exact "no garbling" check of a streaming temporal transformer, for runs of any length.

A streaming step attends through rotating KV caches (exactly `context` entries per layer). Its
result must equal PyTorch moshi's sliding-window attention (a query at t sees keys with
`0 <= t - t_k < context`) over everything fed so far. Only a bounded past matters: one layer's
output at t depends on inputs t - (context - 1) .. t, so an L-layer stack's output depends on the
last `L * (context - 1) + 1` inputs. `WindowChecker` therefore keeps the last
`(L + 1) * context` temporal inputs (ids, a bounded deque) and the last `context` streaming hidden
states; `check()` recomputes the window teacher-forced in ONE full forward, with the window mask
built here (independently of the caches), and compares every position of the window that the
receptive field makes exact (the last `context + L` of them, or all while the run is shorter
than the window) with what the streaming steps returned: the hidden state after `out_norm` and
the text logits. A correct cache differs only by float rounding (different reduction orders);
a wrong one (stale, missing or extra keys, wrong positions) by far more: a single extra key
(Kyutai MLX's context + 1 window) already moves the hidden state by ~4e-2 relative.

RoPE makes attention depend on relative positions only, so the window is run at positions
0..W-1: the comparison also checks that streaming positions are consistent after a wrap.

Works with `TtsGen` (feed it every `TtsStep`: `record(step)`), including real CFG (doubled
batch) and `speak(..., on_step=checker.on_step)`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import mlx.core as mx
import numpy as np


@dataclass(frozen=True)
class WindowCheck:
    """One check at `step` (0-based index of the last step recorded): `positions` compared,
    max |streaming - full| for the hidden state and the text logits, and those errors relative
    to the largest |value| of the full forward."""

    step: int
    positions: int
    hidden_err: float
    logits_err: float
    hidden_rel: float
    logits_rel: float

    def to_dict(self) -> dict:
        return asdict(self)


def window_mask(T: int, context: int) -> mx.array:
    """Boolean [T, T]: query i sees key j iff 0 <= i - j < context (PyTorch moshi's rule)."""
    d = np.arange(T)[:, None] - np.arange(T)[None, :]
    return mx.array((d >= 0) & (d < context))


def cache_sizes(cache: list) -> list[int]:
    """Keys held by each layer's KV cache (0 before the first step)."""
    return [0 if c.keys is None else int(c.keys.shape[2]) for c in cache]


class WindowChecker:
    """Records a streaming run's temporal inputs / hidden states and checks the latest ones."""

    def __init__(self, lm: Any, cond: Any = None) -> None:
        cfg = lm.transformer.cfg
        if cfg.context is None:
            raise ValueError("the window check needs a bounded attention context")
        self.lm, self.cond = lm, cond
        self.context, self.layers = int(cfg.context), len(lm.transformer.layers)
        self.window = (self.layers + 1) * self.context
        self.exact = self.window - self.layers * (self.context - 1)  # last positions exact
        self._inputs: deque[mx.array] = deque(maxlen=self.window)
        self._hidden: deque[mx.array] = deque(maxlen=min(self.exact, self.context + self.layers))
        self.steps = 0

    def record(self, step: Any) -> None:
        """Keep one `TtsStep`'s temporal inputs [B', 1 + n_q] and hidden state [B', D]."""
        if step.inputs is None or step.hidden is None:
            raise ValueError("this step carries no temporal inputs / hidden state")
        self._inputs.append(step.inputs)
        self._hidden.append(step.hidden)
        self.steps += 1

    def on_step(self, gen: Any, step: Any) -> None:
        """`speak(on_step=...)` hook: record (the generator's own LM and conditions)."""
        self.lm, self.cond = gen.lm, gen.cond
        self.record(step)

    def check(self) -> WindowCheck:
        """Full forward over the recorded window vs. the streaming steps' results."""
        if not self._inputs:
            raise ValueError("nothing recorded yet")
        lm, cond = self.lm, self.cond
        ids = mx.stack(list(self._inputs), axis=2)  # [B', 1 + n_q, W]
        W = ids.shape[2]
        x = lm.embed(ids, cond)
        mask = window_mask(W, self.context)
        cross = None if cond is None else cond.cross
        for i, layer in enumerate(lm.transformer.layers):
            x = layer(x, None, mask, None if cross is None else cross[i])
        full = lm.out_norm(x)
        # While the run is shorter than the window, it starts at step 0: every position is exact.
        n = len(self._hidden) if self.steps <= self.window else min(len(self._hidden), self.exact)
        ref = full[:, W - n:].astype(mx.float32)
        got = mx.stack(list(self._hidden)[-n:], axis=1).astype(mx.float32)
        ref_logits = lm.text_logits(full[:, W - n:]).astype(mx.float32)
        got_logits = lm.text_logits(mx.stack(list(self._hidden)[-n:], axis=1)).astype(mx.float32)
        h_err = mx.abs(ref - got).max()
        l_err = mx.abs(ref_logits - got_logits).max()
        h_max, l_max = mx.abs(ref).max(), mx.abs(ref_logits).max()
        mx.eval(h_err, l_err, h_max, l_max)
        return WindowCheck(step=self.steps - 1, positions=n, hidden_err=float(h_err),
                           logits_err=float(l_err), hidden_rel=float(h_err) / float(h_max),
                           logits_rel=float(l_err) / float(l_max))
