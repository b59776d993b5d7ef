"""Streaming STT parity with PyTorch `LMGen` (goldens from tests/golden/make_golden_stt.py).

Two small random models shaped like Kyutai's STT checkpoints (dep_q 0, 32 user codebooks, all
delays 0; "stt1b" with 4 VAD heads, "stt26b" with max_period 1e5 and PT's unused depformer_in),
run greedily step by step past their context (8 and 6 steps; 20 and 16 steps run). Tolerance as
tests/test_lm_golden.py: float32 on both sides, measured max |diff| ~2e-6 on logits, 3e-7 on
head probabilities; bounds 1e-4 relative and 1e-5 absolute.
"""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import load_file

from moshi_mlx import load_lm
from moshi_mlx.loading import save_lm
from moshi_mlx.quant import quantize_lm, quantized_modules
from moshi_mlx.stt.gen import SttGen, check_stt_model
from tests.conftest import GOLDEN

NAMES = ("stt1b", "stt26b")


def golden(name: str):
    with open(GOLDEN / f"stt_{name}_config.json") as f:
        cfg = json.load(f)
    return cfg, GOLDEN / f"stt_{name}_weights.safetensors", load_file(
        str(GOLDEN / f"stt_{name}_io.safetensors"))


def run(lm, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SttGen over audio [B, n_q, T] -> tokens [B, T], logits [B, T, V], heads [B, H, T, D]."""
    gen = SttGen(lm, audio.shape[0], keep_logits=True)
    outs = [gen.step(audio[:, :, t]) for t in range(audio.shape[-1])]
    return (np.stack([o.tokens for o in outs], 1), np.stack([o.text_logits for o in outs], 1),
            np.stack([o.extra_heads for o in outs], 2))


def close(got: np.ndarray, ref: np.ndarray, rtol: float = 1e-4) -> None:
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max()) if ref.size else 0.0
    assert err <= rtol * max(1.0, float(np.abs(ref).max(initial=0.0))), err


@pytest.mark.parametrize("name", NAMES)
def test_streaming_matches_pytorch_lmgen(name):
    cfg, weights, io = golden(name)
    lm = load_lm(weights, config=cfg)
    assert len(lm.extra_heads) == cfg.get("extra_heads_num_heads", 0)
    tokens, logits, heads = run(lm, io["audio"])
    np.testing.assert_array_equal(tokens, io["tokens"])
    close(logits, io["text_logits"])
    close(heads, io["extra_heads"], rtol=1e-5)
    if heads.size:  # the heads are probabilities that vary with the input
        np.testing.assert_allclose(heads.sum(-1), 1.0, atol=1e-5)
        assert heads.std(axis=2).max() > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_forward_aligned_with_pytorch_and_equal_to_streaming(name):
    cfg, weights, io = golden(name)
    lm = load_lm(weights, config=cfg)
    codes = mx.concatenate([mx.array(io["tokens"])[:, None], mx.array(io["audio"])], axis=1)
    text, audio = lm.forward(codes)
    assert audio.shape[1] == 0
    close(np.array(text), io["forward_text_logits"])
    # Streaming step t reads (token t-1, frame t); forward's position t reads column t-1 of its
    # codes (initial tokens at position 0, as streaming step 0): so streaming over `audio` is the
    # teacher-forced forward of (tokens[:-1]; audio[1:]), position by position.
    _, logits, _ = run(lm, io["audio"])
    shifted = mx.concatenate([mx.array(io["tokens"])[:, None, :-1],
                              mx.array(io["audio"])[:, :, 1:]], axis=1)
    tf, _ = lm.forward(shifted)
    close(logits[:, :-1], np.array(tf)[:, 0])


def test_step_zero_ignores_its_frame_as_pytorch():
    cfg, weights, io = golden("stt1b")
    lm = load_lm(weights, config=cfg)
    a = io["audio"][:, :, :3].copy()
    b = a.copy()
    b[:, :, 0] = (b[:, :, 0] + 1) % cfg["card"]
    _, la, _ = run(lm, a)
    _, lb, _ = run(lm, b)
    np.testing.assert_array_equal(la, lb)
    b[:, :, 1] = (b[:, :, 1] + 1) % cfg["card"]
    _, lb, _ = run(lm, b)
    assert np.abs(la[:, 1] - lb[:, 1]).max() > 1e-3


@pytest.mark.parametrize("quant", [{"group_size": 64, "bits": 8}, {"group_size": 32, "bits": 4}])
def test_quantized_stt_saves_and_loads_strictly(quant, tmp_path):
    cfg, weights, io = golden("stt1b")
    lm = load_lm(weights, config=cfg, dtype="float32")
    # the golden's gated FFN (hidden 176) is not a multiple of 32: keep those Linears float
    quant = dict(quant, **{f"transformer.layers.{i}.gating.linear_out": False for i in range(2)})
    quantize_lm(lm, quant)
    assert "extra_heads.2" in quantized_modules(lm)
    ref = run(lm, io["audio"])
    save_lm(lm, tmp_path)
    again = load_lm(tmp_path, dtype="float32")
    assert "extra_heads.2" in quantized_modules(again)
    got = run(again, io["audio"])
    np.testing.assert_array_equal(got[0], ref[0])
    close(got[1], ref[1])
    # q8 stays near the float model, q4 further (teacher-forced: same inputs for both)
    codes = mx.concatenate([mx.array(io["tokens"])[:, None], mx.array(io["audio"])], axis=1)
    q = np.array(again.forward(codes)[0])
    rel = np.abs(q - io["forward_text_logits"]).max() / np.abs(io["forward_text_logits"]).max()
    assert 1e-4 < rel < (0.05 if quant["bits"] == 8 else 0.6), rel


def test_non_stt_models_are_refused_clearly():
    from moshi_mlx.config import LmConfig

    with pytest.raises(ValueError, match="dep_q = 8"):
        check_stt_model(LmConfig())
    with pytest.raises(ValueError, match="all stream delays 0"):
        check_stt_model(LmConfig(n_q=2, dep_q=0, delays=(0, 1, 0)))
    with pytest.raises(ValueError, match="TTS features"):
        check_stt_model(LmConfig.from_dict({"dep_q": 0, "n_q": 4, "delays": [0] * 5,
                                            "demux_second_stream": True}))
    with pytest.raises(ValueError, match="TTS features"):
        check_stt_model(LmConfig.from_dict({"dep_q": 0, "n_q": 4, "delays": [0] * 5,
                                            "conditioners": {"speaker_wavs": {"type": "tensor"}}}))
    with pytest.raises(ValueError, match="norm_emb=True is not supported.*Hibiki"):
        LmConfig.from_dict({"norm_emb": True})
    # Kyutai's STT config fragments carry "fuser": null and the hub keys: accepted
    cfg = LmConfig.from_dict({"dep_q": 0, "n_q": 4, "delays": [0] * 5, "fuser": None,
                              "stt_config": {"audio_delay_seconds": 0.5}, "model_type": "stt",
                              "extra_heads_num_heads": 4, "extra_heads_dim": 6})
    assert cfg.extra_heads_num_heads == 4 and cfg.extra["stt_config"]["audio_delay_seconds"] == 0.5
