"""Step-by-step cached decoding equals the full teacher-forced forward (and therefore PyTorch).

Uses the `real` golden model (context 8 < 24 steps, so the rotating cache wraps several times).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx import load_lm
from moshi_mlx.delays import undelay
from moshi_mlx.nn.kv_cache import RotatingKVCache

TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def real(request):
    import json

    from safetensors.numpy import load_file

    from tests.helpers import GOLDEN

    cfg = json.loads((GOLDEN / "lm_real_config.json").read_text())
    io = load_file(str(GOLDEN / "lm_real_io.safetensors"))
    return load_lm(GOLDEN / "lm_real_weights.safetensors", config=cfg), io


def _stream_temporal(lm, seq: mx.array, chunks: list[int]) -> mx.array:
    cache = lm.make_cache()
    assert all(isinstance(c, RotatingKVCache) and c.max_size == lm.cfg.context for c in cache)
    hs, t = [], 0
    for c in chunks:
        hs.append(lm.temporal(lm.embed(seq[:, :, t:t + c]), cache))
        mx.eval(hs[-1])
        t += c
    assert cache[0].offset == t
    return mx.concatenate(hs, axis=1)


@pytest.mark.parametrize("chunks", [[1] * 24, [3, 1, 5, 2, 7, 6], [24]])
def test_temporal_streaming_equals_full(real, chunks):
    lm, io = real
    seq = lm.delayed_inputs(mx.array(io["codes"]))[:, :, :-1]
    full = lm.temporal(lm.embed(seq))
    np.testing.assert_allclose(np.array(_stream_temporal(lm, seq, chunks)), np.array(full), **TOL)


def test_step_by_step_logits_equal_forward_and_pytorch(real):
    """Frame by frame: temporal step with cache, then the depformer step by step with its
    per-frame cache, teacher-forced; undelayed, this reproduces PT's LMModel.forward."""
    lm, io = real
    codes = mx.array(io["codes"])
    seq = lm.delayed_inputs(codes)
    B, K, T1 = seq.shape
    cache = lm.make_cache()
    text_steps, audio_steps = [], []
    for t in range(T1 - 1):
        h = lm.temporal(lm.embed(seq[:, :, t:t + 1]), cache)
        text_steps.append(lm.text_logits(h))
        dcache = lm.make_depformer_cache()
        per_k = []
        for k in range(lm.dep_q):
            per_k.append(lm.depformer_step(k, h, seq[:, k, t + 1:t + 2], dcache))
        assert dcache[0].offset == lm.dep_q
        audio_steps.append(mx.stack(per_k, axis=1))  # [B, dep_q, 1, card]
        mx.eval(text_steps[-1], audio_steps[-1])
    text = undelay(mx.concatenate(text_steps, axis=1)[:, None], lm.cfg.delays[:1])
    audio = undelay(mx.concatenate(audio_steps, axis=2), lm.cfg.delays[1:1 + lm.dep_q])
    ref_text, ref_audio = lm.forward(codes)
    np.testing.assert_allclose(np.array(text), np.array(ref_text), **TOL)
    np.testing.assert_allclose(np.array(audio), np.array(ref_audio), **TOL)
    np.testing.assert_allclose(np.array(audio), io["audio_logits"], **TOL)


def test_sample_depformer_greedy_is_self_consistent(real):
    """Greedy sampling loop == argmax of the teacher-forced depformer fed its own choices."""
    lm, io = real
    seq = lm.delayed_inputs(mx.array(io["codes"]))
    h = lm.temporal(lm.embed(seq[:, :, :5]))[:, -1]  # [B, D]
    text = mx.argmax(lm.text_logits(h), axis=-1)
    seen = []

    def greedy(logits, k):
        seen.append(k)
        return mx.argmax(logits, axis=-1)

    audio = lm.sample_depformer(h, text, greedy)
    assert audio.shape == (2, lm.dep_q) and audio.dtype == mx.int32 and seen == list(range(lm.dep_q))
    inputs = mx.concatenate([text[:, None], audio[:, :-1]], axis=1)[:, :, None]  # [B, dep_q, 1]
    logits = lm.depformer_logits(h[:, None], inputs)[:, :, 0]
    np.testing.assert_array_equal(np.array(mx.argmax(logits, axis=-1)), np.array(audio))


def test_depformer_step_checks_cache_position(real):
    lm, _ = real
    h = mx.zeros((1, 1, lm.cfg.dim))
    with pytest.raises(ValueError, match="step 1"):
        lm.depformer_step(1, h, mx.zeros((1, 1), dtype=mx.int32), lm.make_depformer_cache())
