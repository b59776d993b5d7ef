"""testing/tiny_repo.py: layout, key formats, loadability, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sentencepiece
from safetensors.numpy import load_file

from moshi_mlx import hub, load_lm
from moshi_mlx.checkpoint import MIMI_FILE, TOKENIZER_FILE
from moshi_mlx.config import LmConfig, MimiConfig
from moshi_mlx.quant import quantized_modules
from moshi_mlx.testing.tiny_repo import main


def test_layout_and_config(tiny_repo):
    names = sorted(p.name for p in tiny_repo.iterdir())
    assert names == ["config.json", "model.safetensors", MIMI_FILE, TOKENIZER_FILE]
    cfg = json.loads((tiny_repo / "config.json").read_text())
    assert (cfg["moshi_name"], cfg["mimi_name"], cfg["tokenizer_name"]) == (
        "model.safetensors", MIMI_FILE, TOKENIZER_FILE)
    assert "quantization" not in cfg
    lm_cfg = LmConfig.from_dict(cfg)
    mimi_cfg = MimiConfig.from_dict(cfg["mimi"])
    assert lm_cfg.card == mimi_cfg.quantizer_bins and lm_cfg.n_q - lm_cfg.dep_q == 8
    assert mimi_cfg.frame_size == 1920 and mimi_cfg.sample_rate == 24000
    files = hub.resolve(model_dir=tiny_repo)
    assert files.lm_weight == tiny_repo / "model.safetensors" and files.precision == "bf16"


def test_tokenizer_has_kyutai_special_ids(tiny_repo):
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tiny_repo / TOKENIZER_FILE))
    assert [sp.id_to_piece(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<pad>"]
    cfg = json.loads((tiny_repo / "config.json").read_text())
    assert cfg["text_card"] == sp.vocab_size()
    assert sp.decode(sp.encode("Hello, how are you?")) == "Hello, how are you?"


def test_mimi_uses_released_pytorch_names(tiny_repo):
    w = load_file(str(tiny_repo / MIMI_FILE))
    assert "encoder.model.0.conv.conv.weight" in w
    assert "quantizer.rvq_first.vq.layers.0._codebook.embedding_sum" in w
    assert any(k.endswith("self_attn.in_proj_weight") for k in w)
    assert all(v.dtype == np.float32 for v in w.values())
    usage = w["quantizer.rvq_rest.vq.layers.0._codebook.cluster_usage"]
    assert (usage > 0).all()  # initialized codebooks, so codes vary


@pytest.mark.parametrize("quant,bits,group", [("q8", 8, 64), ("q4", 4, 32)])
def test_quantized_repos_load_strictly(tiny_repos, quant, bits, group):
    d = tiny_repos(quant)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["quantization"]["bits"] == bits and cfg["moshi_name"] == f"model.{quant}.safetensors"
    lm = load_lm(d)
    q = quantized_modules(lm)
    assert q and all(v == (bits, group) for v in q.values())
    assert "text_emb" in q and "depformer.slices.0.linear_out" in q


def test_deterministic_per_seed(tmp_path, tiny_repo):
    assert main([str(tmp_path / "a"), "--seed", "0"]) == 0
    assert main([str(tmp_path / "b"), "--seed", "1"]) == 0
    for name in ("model.safetensors", MIMI_FILE, TOKENIZER_FILE, "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tiny_repo / name).read_bytes(), name
    assert (tmp_path / "b" / "model.safetensors").read_bytes() != (
        tiny_repo / "model.safetensors").read_bytes()


def test_moshi_hears_the_user(tiny_repo):
    """The tiny Mimi gives silence, a tone and noise different codes, so Moshi's (seeded) answer
    depends on what the user says. With unit-normal codebooks every input encoded to one code."""
    from moshi_mlx.audio.pipeline import Settings, load_model
    from moshi_mlx.conversation import AudioFrame

    model = load_model(hub.resolve(model_dir=tiny_repo), Settings(seed=3))
    rng = np.random.default_rng(0)
    t = np.arange(12 * 1920) / 24000
    users = {"silence": np.zeros(t.size), "tone": 0.3 * np.sin(2 * np.pi * 300 * t),
             "noise": 0.1 * rng.standard_normal(t.size)}
    codes, answers = {}, {}
    for name, pcm in users.items():
        pcm = pcm.astype(np.float32)
        codes[name] = np.asarray(model.mimi.encode(pcm.reshape(1, 1, -1)))[0]  # [K, T]
        conv = model.conversation()
        out = [e.pcm for f in pcm.reshape(-1, 1920) for e in conv.step(f)
               if isinstance(e, AudioFrame)]
        answers[name] = np.concatenate(out)
    assert len(np.unique(codes["noise"][0])) >= 4  # the semantic codebook follows the noise
    for a, b in [("silence", "tone"), ("silence", "noise"), ("tone", "noise")]:
        assert (codes[a] != codes[b]).mean() > 0.5, (a, b)
        assert np.abs(answers[a] - answers[b]).max() > 1e-3, (a, b)


def test_moshi_speaks_at_speech_level_without_clipping(tiny_repo):
    """The Mimi gain is calibrated on the codes the random LM emits: about -20 dBFS (it used to be
    calibrated on a user-audio round trip, and Moshi's voice came out at -12 dBFS, clipping)."""
    from moshi_mlx.audio.pipeline import Settings, load_model
    from moshi_mlx.conversation import AudioFrame

    model = load_model(hub.resolve(model_dir=tiny_repo), Settings(seed=1))
    conv = model.conversation()
    user = (0.1 * np.random.default_rng(1).standard_normal((60, 1920))).astype(np.float32)
    voice = np.concatenate([e.pcm for f in user for e in conv.step(f)
                            if isinstance(e, AudioFrame) and e.generated])
    rms = float(np.sqrt(np.mean(voice**2)))
    assert 0.05 < rms < 0.2, rms
    assert np.mean(np.abs(voice) >= 1.0) < 1e-4
