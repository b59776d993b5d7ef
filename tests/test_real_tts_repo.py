"""The real-shape random TTS repo writer (`moshi_mlx.testing.real_tts`, used by the benchmark).

At the real config, `torch_shapes` gives exactly the names, shapes and dtypes of the released
checkpoint (the manifest made with PyTorch moshi, which Kyutai's `load_pytorch_weights` also
reads). Scaled down, the writer's files (same code path) load strictly with `load_tts`, hold the
values the writer drew at the stated scales, and synthesize.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.testing.real_tts import (
    REAL_CONFIG,
    VOICE_STEPS,
    random_tensor,
    small_config,
    torch_shapes,
    write_real_tts_repo,
)
from moshi_mlx.testing.tiny_repo import tiny_mimi_config
from moshi_mlx.tts.speak import find_voice, load_tts, speak

MANIFEST = Path(__file__).parent / "golden" / "data" / "tts_1.6b_manifest.json"


def test_real_shapes_equal_the_released_manifest():
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["config"] == REAL_CONFIG
    shapes = {k: [list(s), d] for k, (s, d) in torch_shapes(REAL_CONFIG).items()}
    assert shapes == manifest["torch"]


def test_random_scales():
    """Tables N(0, 1), matrices N(0, 1/fan_in), norm scales near 1: unit-spread activations."""
    rng = np.random.default_rng(0)
    table = random_tensor("depformer_emb.3.weight", (2049, 128), rng)
    proj = random_tensor("depformer_emb.3.low_rank.weight", (1024, 128), rng)
    mat = random_tensor("transformer.layers.0.gating.linear_out.weight", (256, 4096), rng)
    alpha = random_tensor("out_norm.alpha", (1, 1, 4096), rng)
    assert table.std() == pytest.approx(1.0, rel=0.02)
    assert proj.std() == pytest.approx(128 ** -0.5, rel=0.02)
    assert mat.std() == pytest.approx(4096 ** -0.5, rel=0.02)
    assert alpha.mean() == pytest.approx(1.0, abs=0.01) and alpha.std() == pytest.approx(0.1, rel=0.1)
    x = rng.standard_normal(128).astype(np.float32)
    assert (proj @ x).std() == pytest.approx(1.0, rel=0.15)


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory) -> Path:
    return write_real_tts_repo(tmp_path_factory.mktemp("real_tts"), seed=3, config=small_config(),
                               mimi=tiny_mimi_config())


def test_small_repo_loads_strictly_and_speaks(small_repo):
    cfg = json.loads((small_repo / "config.json").read_text())
    stored = mx.load(str(small_repo / cfg["moshi_name"]))
    assert {k: [list(v.shape), str(v.dtype).removeprefix("mlx.core.")]
            for k, v in stored.items()} == {
        k: [list(s), d] for k, (s, d) in torch_shapes(cfg).items()}
    # The values are the ones drawn for each name, in order (bf16 rounding aside).
    rng = np.random.default_rng(3)
    for name, (shape, _) in torch_shapes(cfg).items():
        want = random_tensor(name, shape, rng)
        if name == "transformer.layers.1.gating.linear_in.weight":
            got = np.asarray(stored[name].astype(mx.float32))
            np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-6)
    voice = mx.load(str(next((small_repo / "voices").glob("*.safetensors"))))["speaker_wavs"]
    assert voice.shape == (1, 32, VOICE_STEPS)

    model = load_tts(small_repo)  # strict: every tensor mapped, none missing or mis-shaped
    assert model.lm.cfg.dim == 64 and model.lm.cfg.depformer_num_weights == 5
    emb = np.asarray(model.lm.transformer.layers[0].cross_attention.in_proj.weight)
    assert 0.1 < emb.std() < 0.15  # N(0, 1/64) as written, through the PyTorch name map
    res = speak(model, "Hello world.", find_voice(model, None), seed=0)
    assert [w for w, _ in res.transcript] == ["Hello", "world."]
    assert res.end_step is not None and len(res.pcm) == 1920 * res.end_step
    assert 0.01 < float(np.sqrt(np.mean(res.pcm ** 2))) < 0.5  # audible, not clipped noise
