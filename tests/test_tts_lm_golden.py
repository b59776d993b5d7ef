"""The TTS features of the LM against PyTorch moshi (goldens from tests/golden/make_golden_tts_lm.py):
demuxed text stream, low-rank depformer embeddings with a weight schedule, LUT and tensor
conditioners, cross-attention with per-layer cached keys/values. Same float32 tolerance as
test_lm_golden.py (max |diff| <= 1e-4 * max(1, max |ref|))."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import load_file

from moshi_mlx import load_lm
from moshi_mlx.nn.factored_embedding import FactoredEmbedding

DATA = Path(__file__).parent / "golden" / "data"
RTOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    meta = json.loads((DATA / "tts_lm_config.json").read_text())
    io = load_file(str(DATA / "tts_lm_io.safetensors"))
    lm = load_lm(DATA / "tts_lm_weights.safetensors", config=meta["lm"])
    values = {name: [v[name] for v in meta["text_values"]] for name in ("cfg", "control")}
    values["speaker_wavs"] = (mx.array(io["speaker"]), mx.array(io["speaker_mask"].astype(bool)))
    return lm, values, io


def close(got: mx.array, ref: np.ndarray) -> None:
    got = np.array(got.astype(mx.float32))
    assert got.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    valid = ~np.isnan(ref)
    err = float(np.abs(got[valid] - ref[valid]).max())
    assert err <= RTOL * max(1.0, float(np.abs(ref[valid]).max())), err


def test_goldens_exercise_the_features(golden):
    _, _, io = golden
    n = 41  # text_card + 1: the packing base
    text = io["codes"][:, 0]
    assert (text >= n).any() and ((text >= 0) & (text < n)).any() and (text == -1).any()
    assert not io["speaker_mask"].all()  # item 1's voice is padded: learnt_padding counts


def test_conditioners_and_fuser_match_pytorch(golden):
    lm, values, io = golden
    provider = lm.condition_provider
    conds = provider.condition(values)
    for name, out in conds.items():
        close(out, io[f"cond_{name}"])
    close(provider.fuse_sum(conds), io["sum"])
    close(provider.fuse_cross(conds), io["cross"])


def test_teacher_forced_logits_match_pytorch(golden):
    lm, values, io = golden
    text, audio = lm.forward(mx.array(io["codes"]), lm.conditions(values))
    close(text, io["text_logits"])
    close(audio, io["audio_logits"])


def test_conditions_change_the_logits(golden):
    """Without the right conditions the logits differ (the golden would catch a dropped term)."""
    lm, values, io = golden
    other = dict(values, cfg=["4.0", "4.0"])
    text, _ = lm.forward(mx.array(io["codes"]), lm.conditions(other))
    assert np.abs(np.array(text) - io["text_logits"]).max() > 1e-2
    with pytest.raises(ValueError, match="missing conditions"):
        lm.conditions({"cfg": ["1.0", "1.0"]})
    with pytest.raises(ValueError, match="cross-attends"):
        lm.forward(mx.array(io["codes"]))


def test_streaming_steps_equal_forward(golden):
    """One step at a time with the rotating cache (14 steps > context 8) and the cross keys/values
    computed once equals the full forward."""
    lm, values, io = golden
    codes = mx.array(io["codes"])
    cond = lm.conditions(values)
    ref, _ = lm.forward(codes, cond)
    seq = lm.delayed_inputs(codes)
    cache = lm.make_cache()
    steps = []
    for t in range(codes.shape[-1]):
        h = lm.temporal(lm.embed(seq[:, :, t:t + 1], cond), cache, cond)
        steps.append(lm.text_logits(h))
    got = mx.concatenate(steps, axis=1)[:, None]
    np.testing.assert_allclose(np.array(got), np.array(ref), atol=1e-4)


def test_factored_embedding_modes():
    mx.random.seed(0)
    demux = FactoredEmbedding(5, 6, low_rank=3, demux=True)
    ids = mx.array([[2, 5 * 1 + 2, 5 * 4 + 1, -1]])  # plain, second=0, second=3, zero
    y = np.array(demux(ids))
    w = demux.weight
    one = lambda lin, i: np.array(lin(w[i]))  # noqa: E731
    np.testing.assert_allclose(y[0, 0], one(demux.out1, 2), atol=1e-6)
    np.testing.assert_allclose(y[0, 1], one(demux.out1, 2) + one(demux.out2, 0), atol=1e-6)
    np.testing.assert_allclose(y[0, 2], one(demux.out1, 1) + one(demux.out2, 3), atol=1e-6)
    assert (y[0, 3] == 0).all()
    low = FactoredEmbedding(5, 6, low_rank=3)
    y = np.array(low(mx.array([4, -1])))
    np.testing.assert_allclose(y[0], np.array(low.low_rank(low.weight[4])), atol=1e-6)
    assert (y[1] == 0).all()
