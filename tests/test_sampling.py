"""Sampling: exact distributions vs a NumPy transcription of PT `sample_token`, and empirical draws."""

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.sampling import DEFAULT_AUDIO, DEFAULT_TEXT, Sampler


def pt_probs(logits: np.ndarray, temp: float, top_k: int = 0, top_p: float = 0.0) -> np.ndarray:
    """NumPy transcription of moshi.utils.sampling (softmax(l/T) -> top-p or top-k), extended as
    documented when both are set: top-k, renormalize, then top-p."""
    z = logits / temp
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.zeros_like(p)
    for i, row in enumerate(p):
        order = np.argsort(-row, kind="stable")
        srt = row[order]
        keep = np.ones(len(row), bool)
        if top_k > 0:
            keep &= np.arange(len(row)) < top_k
        if top_p > 0:
            kept = np.where(keep, srt, 0.0) / np.where(keep, srt, 0.0).sum()
            keep &= (np.cumsum(kept) - kept) <= top_p
        kept = np.where(keep, srt, 0.0)
        out[i, order] = kept / kept.sum()
    return out


@pytest.mark.parametrize(
    "temp,top_k,top_p",
    [(1.0, None, None), (0.7, 5, None), (0.8, None, 0.5), (1.3, None, 0.9), (0.9, 12, 0.6)],
)
def test_exact_probs_match_reference(temp, top_k, top_p):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 40)).astype(np.float32) * 3
    got = np.array(Sampler(temp, top_k=top_k, top_p=top_p).probs(mx.array(logits)))
    want = pt_probs(logits, temp, top_k or 0, top_p or 0.0)
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert ((got > 0) == (want > 0)).all()


@pytest.mark.parametrize(
    "sampler", [Sampler(0.7, top_k=3), Sampler(1.0, top_p=0.6), Sampler(0.8), Sampler(1.0, 5, 0.8)]
)
def test_empirical_distribution_and_support(sampler):
    logits = np.array([2.0, 1.5, 1.0, 0.3, -0.5, 0.0, 1.2, -2.0], np.float32)
    want = pt_probs(logits[None], sampler.temp, sampler.top_k or 0, sampler.top_p or 0.0)[0]
    n = 200_000
    draws = np.array(sampler(mx.broadcast_to(mx.array(logits), (n, 8)), key=mx.random.key(3)))
    freq = np.bincount(draws, minlength=8) / n
    assert set(np.flatnonzero(freq)) == set(np.flatnonzero(want))  # exact support
    tol = 5 * np.sqrt(want * (1 - want) / n) + 1e-9
    assert (np.abs(freq - want) <= tol).all(), (freq, want)


def test_keys_make_draws_reproducible():
    logits = mx.array(np.random.default_rng(1).normal(size=(64, 100)).astype(np.float32))
    s = Sampler(1.0, top_k=50)
    a = np.array(s(logits, key=mx.random.key(7)))
    b = np.array(s(logits, key=mx.random.key(7)))
    c = np.array(s(logits, key=mx.random.key(8)))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_greedy_is_argmax_any_dtype():
    logits = np.random.default_rng(2).normal(size=(5, 33)).astype(np.float32)
    for dt in (mx.float32, mx.bfloat16):
        got = np.array(Sampler(0.0)(mx.array(logits).astype(dt), key=mx.random.key(0)))
        np.testing.assert_array_equal(got, np.argmax(np.array(mx.array(logits).astype(dt).astype(mx.float32)), -1))
    np.testing.assert_array_equal(np.array(Sampler(0.0).probs(mx.array(logits))).argmax(-1),
                                  logits.argmax(-1))


def test_top_k_at_least_vocab_is_plain_softmax_and_k1_is_argmax():
    logits = np.random.default_rng(3).normal(size=(2, 6)).astype(np.float32)
    np.testing.assert_allclose(np.array(Sampler(0.9, top_k=100).probs(mx.array(logits))),
                               pt_probs(logits, 0.9), atol=1e-6)
    draws = np.array(Sampler(5.0, top_k=1)(mx.array(logits), key=mx.random.key(1)))
    np.testing.assert_array_equal(draws, logits.argmax(-1))


def test_defaults_and_validation():
    assert DEFAULT_TEXT == Sampler(0.7, top_k=25) and DEFAULT_AUDIO == Sampler(0.8, top_k=250)
    for bad in (dict(temp=-1), dict(temp=1, top_k=0), dict(temp=1, top_p=0.0), dict(temp=1, top_p=2)):
        with pytest.raises(ValueError):
            Sampler(**bad)
