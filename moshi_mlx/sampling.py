"""Token sampling: temperature, top-k, top-p, seeded through explicit MLX random keys.

Reproduces the distribution of torch `moshi.utils.sampling.sample_token` as used by PT `LMGen`:
`probs = softmax(logits / temp)`, then top-k (keep the k most probable, renormalize) or top-p
(sort descending, drop a token when the mass strictly before it exceeds p, renormalize), then one
multinomial draw. temp 0 means argmax. Defaults equal PT `LMGen`: text temp 0.7 / top-k 25,
audio temp 0.8 / top-k 250.

One extension: PT ignores top-k when top-p is set; here both apply (top-k first, then top-p on
what is left), which equals PT whenever only one of them is set. Like PT, top-k draws among the
k gathered candidates rather than masking the whole vocabulary.

The draw uses `mx.random.categorical(..., key=key)` (Gumbel-max, the same distribution as PT's
exponential-race multinomial). Callers that want reproducible streams pass explicit keys (the
engine splits one per step from its seed); without a key MLX's global generator is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

# mlx_lm.sample_utils is not used: its top-k masks the whole vocabulary before a full-size draw
# (a draw over all 32000 text entries instead of PT's draw among the k gathered candidates, which
# costs more per token), and its top-p computes the nucleus before the temperature and drops a
# token when the mass before it is >= p, where PT tempers first and drops only when it is > p.


def _top_p_mask(scaled: mx.array, top_p: float) -> mx.array:
    """Bool mask (True = keep) of PT's nucleus on `softmax(scaled)`, last axis."""
    order = mx.argsort(-scaled, axis=-1)
    sorted_probs = mx.take_along_axis(mx.softmax(scaled, axis=-1), order, axis=-1)
    mass_before = mx.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep_sorted = mass_before <= top_p
    return mx.put_along_axis(mx.zeros(scaled.shape, dtype=mx.bool_), order, keep_sorted, axis=-1)


@dataclass(frozen=True)
class Sampler:
    """Samples token ids from logits `[..., V]`; returns int32 ids `[...]`."""

    temp: float
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if not self.temp >= 0:
            raise ValueError(f"temp must be >= 0, got {self.temp}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {self.top_k!r}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")

    @classmethod
    def from_flags(cls, temp: float, top_k: int = 0) -> Sampler:
        """The command lines' convention: top-k 0 means no top-k."""
        return cls(temp, top_k=top_k or None)

    @property
    def greedy(self) -> bool:
        return self.temp == 0

    def candidates(self, logits: mx.array) -> tuple[mx.array | None, mx.array]:
        """(ids [..., C] or None for the whole vocabulary, tempered logits [..., C] with -inf for
        candidates the nucleus drops): the sampling distribution is softmax over the candidates."""
        scaled = logits.astype(mx.float32) * (1.0 / self.temp)
        ids = None
        if self.top_k is not None and self.top_k < scaled.shape[-1]:
            # PT: torch.topk on the tempered probabilities (same order as the logits).
            ids = mx.argpartition(-scaled, kth=self.top_k - 1, axis=-1)[..., : self.top_k]
            scaled = mx.take_along_axis(scaled, ids, axis=-1)
        if self.top_p is not None and self.top_p < 1:
            scaled = mx.where(_top_p_mask(scaled, self.top_p), scaled, -mx.inf)
        return ids, scaled

    def probs(self, logits: mx.array) -> mx.array:
        """Exact sampling probabilities `[..., V]` (one-hot argmax when greedy)."""
        if self.greedy:
            top = mx.argmax(logits, axis=-1, keepdims=True)
            return (mx.arange(logits.shape[-1]) == top).astype(mx.float32)
        ids, scaled = self.candidates(logits)
        p = mx.softmax(scaled, axis=-1)
        if ids is None:
            return p
        return mx.put_along_axis(mx.zeros(logits.shape, dtype=mx.float32), ids, p, axis=-1)

    def __call__(self, logits: mx.array, key: mx.array | None = None) -> mx.array:
        if self.greedy:
            return mx.argmax(logits, axis=-1).astype(mx.int32)
        ids, scaled = self.candidates(logits)
        pick = mx.random.categorical(scaled, axis=-1, key=key)
        if ids is not None:
            pick = mx.take_along_axis(ids, pick[..., None], axis=-1)[..., 0]
        return pick.astype(mx.int32)


GREEDY = Sampler(0.0)
DEFAULT_TEXT = Sampler(0.7, top_k=25)
DEFAULT_AUDIO = Sampler(0.8, top_k=250)
