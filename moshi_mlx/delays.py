"""Per-codebook delays between the "aligned" and the "delayed" layout of Moshi's streams.

Moshi's streams are K = 1 + n_q rows (row 0 text, then Moshi's audio codebooks, then the user's).
In the *aligned* (undelayed) layout, column t of every row belongs to the same 80 ms frame t.
The network instead reads the *delayed* layout, where row k is shifted right by `delays[k]` steps
(semantic codebook 0 and text on time, acoustic codebooks 1 step late in the real model), so that
acoustic codes of frame t are predicted after the semantic code of frame t is known.

    delayed[:, k, t] = aligned[:, k, t - delays[k]]   if t >= delays[k]   else pad[k]
    aligned[:, k, t] = delayed[:, k, t + delays[k]]   if t + delays[k] < T else fill

This reproduces torch `moshi.models.lm_utils._delay_sequence` / `_undelay_sequence` (PT pads the
delayed layout with the per-stream initial tokens: text_card for text, card for audio).
`Lm.forward` and `engine.teacher_forced_logits` use `delay_codes` / `undelay` on whole sequences;
the streaming engine applies the same rule one column at a time through `input_frame` and
`sampled_frame` (see moshi_mlx/engine.py); its tests check that both paths give the same logits.

Special token ids (`docs/checkpoints.md`) live here too because every user of delays needs them.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import numpy as np

UNGENERATED = -2  # "still to be sampled" in a generation buffer; must never reach an embedding
ZERO_TOKEN = -1  # embeds to exact zeros (unused by Moshi chat)

ArrayLike = mx.array | np.ndarray


def initial_tokens(text_card: int, card: int, n_q: int) -> list[int]:
    """Per-stream initial tokens [text_card, card x n_q], fed before a stream has real values."""
    return [text_card] + [card] * n_q


def _per_stream(value: int | float | Sequence[int | float], k: int) -> list:
    if isinstance(value, (int, float)):
        return [value] * k
    values = list(value)
    if len(values) != k:
        raise ValueError(f"expected {k} per-stream values, got {len(values)}")
    return values


def _check_delays(delays: Sequence[int], k: int) -> None:
    if len(delays) != k:
        raise ValueError(f"got {len(delays)} delays for {k} streams")
    if any(d < 0 for d in delays):
        raise ValueError(f"delays must be >= 0, got {list(delays)}")


def delay_codes(
    codes: ArrayLike, delays: Sequence[int], pad: int | Sequence[int] = UNGENERATED
) -> mx.array:
    """Aligned `[B, K, T]` codes -> delayed layout; the first `delays[k]` steps of row k hold `pad[k]`."""
    codes = mx.array(codes) if not isinstance(codes, mx.array) else codes
    B, K, T = codes.shape
    _check_delays(delays, K)
    pads = _per_stream(pad, K)
    rows = []
    for k, d in enumerate(delays):
        row = codes[:, k]
        d = min(d, T)
        if d > 0:
            head = mx.full((B, d), pads[k], dtype=codes.dtype)
            row = mx.concatenate([head, row[:, : T - d]], axis=1)
        rows.append(row)
    return mx.stack(rows, axis=1)


def undelay(
    x: ArrayLike, delays: Sequence[int], fill: int | float = float("nan")
) -> mx.array:
    """Delayed `[B, K, T, ...]` (codes or logits) -> aligned; the last `delays[k]` steps of row k hold `fill`.

    Inverse of `delay_codes` on every position that survives the shift.
    """
    x = mx.array(x) if not isinstance(x, mx.array) else x
    B, K, T = x.shape[:3]
    _check_delays(delays, K)
    rows = []
    for k, d in enumerate(delays):
        row = x[:, k]
        d = min(d, T)
        if d > 0:
            tail = mx.full((B, d, *x.shape[3:]), fill, dtype=x.dtype)
            row = mx.concatenate([row[:, d:], tail], axis=1)
        rows.append(row)
    return mx.stack(rows, axis=1)


def undelay_mask(delays: Sequence[int], T: int) -> np.ndarray:
    """Bool `[K, T]`: True where `undelay` output is defined (not filled)."""
    mask = np.ones((len(delays), T), dtype=bool)
    for k, d in enumerate(delays):
        if d > 0:
            mask[k, max(T - d, 0):] = False
    return mask


def input_frame(step: int, delay: int) -> int:
    """Streaming: aligned frame that a stream with `delay` feeds the model at `step` (< 0: initial token).

    Column `step` of the model input is the delayed layout's column `step - 1` (column 0 holds the
    initial tokens, as in `Lm.delayed_inputs`), i.e. aligned frame `step - 1 - delay`.
    """
    return step - 1 - delay


def user_frame(step: int, delay: int) -> int:
    """Streaming: the user frame (index as passed to the generator) that a user stream with `delay`
    feeds the model at `step`; < 0 means the initial token.

    PyTorch `LMGen`'s convention: the frame passed at step t is written at column t + delay and
    column `step` is read at once, except that every column `step <= delay` is an initial token
    (`is_init = offset <= delay`). So frame `step - delay` is read when it is >= 1 and the very
    first frame (80 ms at the start of a session) is never read.
    """
    f = step - delay
    return f if f >= 1 else -1


def sampled_frame(step: int, delay: int) -> int:
    """Streaming: aligned frame of the token a generated stream with `delay` samples at `step`."""
    return step - delay
