"""Teacher-forced parity with PyTorch moshi (goldens from tests/golden/make_golden_lm.py).

Tolerance: both sides compute in float32 from the same float32 weights; they differ only in
operation order (BLAS accumulation, fused attention vs explicit softmax, RMSNorm kernels), which is
~1e-7 relative per op and ~1e-6 after a few layers. Measured max |diff| is 1e-6 .. 3e-6 on logits
of magnitude ~3-4 (relative ~1e-6). We assert max |ours - ref| <= 1e-4 * max(1, max |ref|),
a 30x margin that still catches any real mistake (a wrong mask, a RoPE position off by one, or a
swapped weight gives errors of 1e-2 .. 1).
"""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx import load_lm
from moshi_mlx.delays import undelay_mask
from moshi_mlx.loading import save_lm
from tests.helpers import LM_GOLDENS

RTOL = 1e-4


def assert_logits_close(got: mx.array, ref: np.ndarray) -> float:
    got = np.array(got.astype(mx.float32))
    assert got.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))  # undefined positions match PT
    valid = ~np.isnan(ref)
    if not valid.any():
        return 0.0
    err = float(np.abs(got[valid] - ref[valid]).max())
    bound = RTOL * max(1.0, float(np.abs(ref[valid]).max()))
    assert err <= bound, f"max |diff| {err:.3g} > {bound:.3g}"
    return err


@pytest.mark.parametrize("name", LM_GOLDENS)
def test_teacher_forced_logits_match_pytorch(name, lm_golden):
    cfg, weights, io = lm_golden(name)
    lm = load_lm(weights, config=cfg)
    text, audio = lm.forward(mx.array(io["codes"]))
    assert_logits_close(text, io["text_logits"])
    assert_logits_close(audio, io["audio_logits"])
    assert audio.shape[1] == cfg["dep_q"]
    # The undefined positions are exactly those of `undelay_mask`.
    T = io["codes"].shape[-1]
    mask = undelay_mask(cfg["delays"][1:1 + cfg["dep_q"]], T)
    assert np.isnan(np.array(audio)).any(axis=(0, 3)).tolist() == (~mask).tolist()


@pytest.mark.parametrize("name", ["real", "sched"])
def test_pytorch_dir_and_mlx_save_give_identical_outputs(name, lm_golden, tmp_path):
    cfg, weights, io = lm_golden(name)
    codes = mx.array(io["codes"])
    # 1) a directory with the PyTorch-named file + config.json, config read from it
    pt_dir = tmp_path / "pt"
    pt_dir.mkdir()
    shutil.copy(weights, pt_dir / "model.safetensors")
    (pt_dir / "config.json").write_text(json.dumps(cfg))
    lm_pt = load_lm(pt_dir)
    ref = lm_pt.forward(codes)
    # 2) the same model saved by us in Kyutai's MLX names: a single file, then shards
    save_lm(lm_pt, tmp_path / "mlx")
    assert not (tmp_path / "mlx" / "model.safetensors.index.json").exists()
    lm_mlx = load_lm(tmp_path / "mlx")
    save_lm(lm_pt, tmp_path / "sharded", max_shard_gb=0.2 / 1024)
    assert len(list((tmp_path / "sharded").glob("model-*-of-*.safetensors"))) > 1
    lm_sh = load_lm(tmp_path / "sharded")
    for other in (lm_mlx, lm_sh):
        for a, b in zip(ref, other.forward(codes), strict=True):
            np.testing.assert_array_equal(np.array(a), np.array(b))
    # and the file alone, with the config given as a path
    lm_file = load_lm(tmp_path / "mlx" / "model.safetensors", config=tmp_path / "mlx" / "config.json")
    np.testing.assert_array_equal(np.array(lm_file.forward(codes)[0]), np.array(ref[0]))


def test_dtype_bfloat16_stays_close(lm_golden):
    """bf16 compute on the same weights: only a sanity bound (bf16 has 8 mantissa bits)."""
    cfg, weights, io = lm_golden("real")
    lm = load_lm(weights, config=cfg, dtype="bfloat16")
    assert lm.text_emb.weight.dtype == mx.bfloat16 and lm.act_dtype == mx.bfloat16
    text, _ = lm.forward(mx.array(io["codes"]))
    got = np.array(text.astype(mx.float32))
    ref = io["text_logits"]
    assert np.abs(got - ref).max() < 0.15 * np.abs(ref).max()
    assert (got.argmax(-1) == ref.argmax(-1)).mean() > 0.8
