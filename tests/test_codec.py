"""`moshi_mlx.codec`: loading, the shared interface of both backends, and rustymimi parity.

The rustymimi comparison uses a full-size random checkpoint written at test time in exactly the
released layout (the committed manifest's 318 tensors, 32 codebooks; both backends use 8) with
codebooks fitted to the test audio so codes vary. Measured when written: codes agree 100% (batch and streaming);
decoded audio differs by at most 3.7e-4 at an output RMS of 0.1. That gap is rustymimi's own: on the
same file the PyTorch reference differs from rustymimi by the same 3.7e-4, and from ours by 7.5e-7
(checked once with the reference environment). Asserted: >= 99% of codes equal, audio within 1e-3.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from mlx.utils import tree_flatten
from safetensors import safe_open
from safetensors.numpy import save_file

from moshi_mlx.checkpoint import MIMI_FILE
from moshi_mlx.codec import load_mimi, stored_codebooks
from moshi_mlx.config import MimiConfig, mimi_202407
from moshi_mlx.models.mimi.synthetic import speech_like_signal, write_random_checkpoint

MANIFEST = Path(__file__).parent / "golden" / "data" / "mimi_manifest.json"
AUDIO_TOL = 1e-3  # vs rustymimi (see module docstring)
TINY = dataclasses.replace(
    MimiConfig(), n_filters=4, dimension=16, ratios=(4, 3, 2), transformer_num_heads=2,
    transformer_num_layers=1, transformer_dim_feedforward=32, transformer_context=8,
    quantizer_dimension=8, quantizer_n_q=4, quantizer_bins=32, frame_rate=24000 / 24 / 2,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_mimi")
    model = write_random_checkpoint(d / MIMI_FILE, TINY, seed=3)
    (d / "config.json").write_text(json.dumps({"dim": 64, "mimi": TINY.to_dict()}))
    return d, model


def test_load_directory_and_numpy_outputs(tiny_dir):
    d, model = tiny_dir
    codec = load_mimi(d, num_codebooks=3)
    assert (codec.frame_size, codec.sample_rate, codec.num_codebooks) == (48, 24000, 3)
    pcm = speech_like_signal(10 * 48, 24000, batch=2)
    codes = codec.encode(pcm)
    assert isinstance(codes, np.ndarray) and codes.dtype == np.int32 and codes.shape == (2, 3, 10)
    np.testing.assert_array_equal(codes, np.array(model.encode(pcm, 3)))
    audio = codec.decode(codes)
    assert audio.dtype == np.float32 and audio.shape == (2, 1, 480)
    state = codec.init_state(2)
    steps = [codec.encode_step(pcm[..., i * 48:(i + 1) * 48], state) for i in range(10)]
    np.testing.assert_array_equal(np.concatenate(steps, -1), codes)
    out = [codec.decode_step(codes[..., i:i + 1], state) for i in range(10)]
    assert all(o.dtype == np.float32 for o in out)
    np.testing.assert_allclose(np.concatenate(out, -1), audio, atol=1e-5)
    codec.warmup(2)  # a throwaway stream: the states above are untouched
    assert state.frames_encoded == 10
    # odd lengths are right-padded to whole frames in batch mode (PyTorch's rule)
    assert codec.encode(pcm[..., :100]).shape == (2, 3, 3)


def test_config_keyword_mlx_names_and_errors(tiny_dir, tmp_path):
    d, model = tiny_dir
    ours = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    save_file(ours, str(tmp_path / "mimi_ours.safetensors"))  # our (Kyutai MLX) names load too
    codec = load_mimi(tmp_path / "mimi_ours.safetensors", num_codebooks=4, config=TINY)
    pcm = speech_like_signal(4 * 48, 24000)
    np.testing.assert_array_equal(codec.encode(pcm), np.array(model.encode(pcm, 4)))
    with pytest.raises(ValueError, match="num_codebooks"):
        load_mimi(d, num_codebooks=5)
    with pytest.raises(ValueError, match="backend"):
        load_mimi(d, backend="torch")
    with pytest.raises(FileNotFoundError):
        load_mimi(tmp_path / "missing")
    with pytest.raises(ValueError, match="rustymimi"):
        load_mimi(d, backend="rustymimi", config=TINY)
    with pytest.raises(ValueError, match="rustymimi"):
        load_mimi(d, backend="rustymimi")  # the directory's config.json says it is small
    with pytest.raises(ValueError, match=r"\[B, 1, N\]"):
        codec.encode(np.zeros((1, 48), np.float32))
    assert stored_codebooks(["quantizer.rvq_rest.vq.layers.6._codebook.embedding_sum"]) == 8


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """The released layout exactly (32 codebooks, all 318 tensors of the manifest), random values."""
    path = tmp_path_factory.mktemp("mimi_full") / MIMI_FILE
    write_random_checkpoint(path, mimi_202407(32), seed=0)
    return path


@pytest.mark.slow
def test_rustymimi_backend_agrees_with_ours(full_size):
    pytest.importorskip("rustymimi", reason="rustymimi has no wheel for this Python")
    manifest = json.loads(MANIFEST.read_text())["tensors"]
    with safe_open(str(full_size), "np") as f:
        assert {k: list(f.get_slice(k).get_shape()) for k in f.keys()} == {
            k: v["shape"] for k, v in manifest.items()}
    ours = load_mimi(full_size, num_codebooks=8)  # strict load of the released layout
    assert ours.model.total_codebooks == 32
    rust = load_mimi(full_size, num_codebooks=8, backend="rustymimi")
    frames = 10
    pcm = speech_like_signal(frames * 1920, 24000, seed=7)
    c_ours, c_rust = ours.encode(pcm), rust.encode(pcm)
    assert c_rust.dtype == np.int32 and c_rust.shape == c_ours.shape == (1, 8, frames)
    assert len(np.unique(c_ours[0, 0])) > 3
    agree = (c_ours == c_rust).mean()
    assert agree >= 0.99, agree
    a_ours, a_rust = ours.decode(c_rust), rust.decode(c_rust)
    assert np.sqrt(np.mean(a_rust**2)) > 0.01
    assert np.abs(a_ours - a_rust).max() <= AUDIO_TOL
    # same streaming interface; each rustymimi state is its own fresh tokenizer
    for codec in (ours, rust):
        codec.warmup()
        s1, s2 = codec.init_state(), codec.init_state()
        got = []
        for i in range(4):
            frame = pcm[..., i * 1920:(i + 1) * 1920]
            got.append(codec.encode_step(frame, s1))
            if i < 2:
                codec.encode_step(np.zeros_like(frame), s2)  # another stream in between
        assert (np.concatenate(got, -1) == c_rust[..., :4]).mean() >= 0.99
        dec = np.concatenate([codec.decode_step(c_rust[..., i:i + 1], s1) for i in range(4)], -1)
        assert np.abs(dec - a_rust[..., : 4 * 1920]).max() <= AUDIO_TOL
