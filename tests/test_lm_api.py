"""Public API (issue 3, item 8) on fresh random models the goldens never saw, saved at test time
in Kyutai's MLX names and in their PyTorch release names (through a test-only inverse key map)."""

from __future__ import annotations

import json
import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

import moshi_mlx
from moshi_mlx.config import LmConfig
from moshi_mlx.loading import save_lm
from moshi_mlx.models.lm import Lm
from moshi_mlx.weights.lm import detect_format
from tests.helpers import random_lm, tiny_lm_kwargs, to_torch_names

CASES = {
    "real": tiny_lm_kwargs(),
    "sched_ls": tiny_lm_kwargs(n_q=6, dep_q=3, layer_scale=0.1, depformer_layer_scale=0.3,
                               depformer_weights_per_step_schedule=[0, 1, 1], delays=[0, 0, 2, 1, 0, 1, 1]),
    "shared": tiny_lm_kwargs(n_q=4, dep_q=2, depformer_weights_per_step=False, depformer_multi_linear=False,
                             norm="layer_norm", depformer_gating="none", delays=[0, 0, 1, 0, 1]),
    "nodep": tiny_lm_kwargs(n_q=2, dep_q=0, context=None, delays=[0, 0, 1]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_load_lm_public_api_on_unseen_models(name, tmp_path):
    cfg = LmConfig.from_dict(CASES[name])
    ref = random_lm(cfg, seed=list(CASES).index(name))
    B, T = 2, 11
    rng = np.random.default_rng(5)
    codes = rng.integers(0, cfg.card, (B, 1 + cfg.n_q, T)).astype(np.int64)
    codes[:, 0] = rng.integers(0, cfg.text_card, (B, T))
    want_text, want_audio = ref.forward(mx.array(codes))

    # Kyutai MLX names: model directory with config.json
    save_lm(ref, tmp_path / "mlx")
    # PyTorch release names: a file + the config as a dict
    pt = to_torch_names(ref)
    assert detect_format(pt) == "torch"
    mx.save_safetensors(str(tmp_path / "pt.safetensors"), pt)

    for lm in (moshi_mlx.load_lm(str(tmp_path / "mlx")),
               moshi_mlx.load_lm(tmp_path / "pt.safetensors", config=CASES[name]),
               moshi_mlx.load_lm(tmp_path / "pt.safetensors", config=str(_write(tmp_path / "c.json", CASES[name])))):
        text, audio = lm.forward(codes)  # numpy int64 accepted
        assert text.shape == (B, 1, T, cfg.text_card)
        assert audio.shape == (B, cfg.dep_q, T, cfg.card)
        np.testing.assert_array_equal(np.array(text), np.array(want_text))
        np.testing.assert_array_equal(np.array(audio), np.array(want_audio))
        assert lm.cfg == cfg
    assert not np.isnan(np.array(want_text)).any()


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_forward_rejects_bad_codes():
    lm = Lm(LmConfig.from_dict(CASES["nodep"]))
    with pytest.raises(ValueError, match=r"\[B, 3, T\]"):
        lm.forward(mx.zeros((1, 4, 5), dtype=mx.int32))


def test_zero_token_embeds_to_zero():
    lm = random_lm(LmConfig.from_dict(CASES["real"]), 3)
    ids = mx.array([[-1, 0, 5]])
    for emb in [lm.text_emb, lm.audio_embs[3], lm.depformer.slices[2].emb]:
        y = np.array(emb(ids))
        assert (y[0, 0] == 0).all() and np.abs(y[0, 1:]).min() > 0


def test_matmul_layout_keeps_outputs_and_names(tmp_path):
    from moshi_mlx.compute import ComputePolicy, apply_policy, is_contiguous

    cfg = LmConfig.from_dict(CASES["sched_ls"])
    lm = random_lm(cfg, 21)
    names = {k: v.shape for k, v in tree_flatten(lm.parameters())}
    codes = mx.array(np.random.default_rng(1).integers(0, cfg.card, (1, 1 + cfg.n_q, 9)))
    want = lm.forward(codes)
    apply_policy(lm, ComputePolicy(dtype=None, linear_layout=True, quantized_input_dtype=None))
    linears = [m for _, m in lm.named_modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 + 4 * cfg.num_layers + cfg.dep_q * (2 + 4 * cfg.depformer_num_layers)
    assert all(is_contiguous(m.weight.T) for m in linears)
    assert {k: v.shape for k, v in tree_flatten(lm.parameters())} == names
    for a, b in zip(lm.forward(codes), want, strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-5)
    # Saving writes the same values under the same names; loading gives the same outputs.
    save_lm(lm, tmp_path)
    again = moshi_mlx.load_lm(tmp_path, dtype="float32")
    assert sys.platform == "darwin" or is_contiguous(again.text_linear.weight.T)
    for a, b in zip(again.forward(codes), want, strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-5)


def test_auto_dtype_per_platform(tmp_path):
    """CPU: float32 (unquantized tensors cast, float32 matmul weights in the BLAS layout on
    Linux), quantized weights packed with float32 kernel inputs; "stored": bf16 as stored."""
    from moshi_mlx.compute import is_contiguous
    from moshi_mlx.quant import quantize_lm

    cfg = LmConfig.from_dict(CASES["sched_ls"])
    lm = random_lm(cfg, 5)
    lm.set_dtype(mx.bfloat16)
    save_lm(lm, tmp_path / "bf16")
    quantize_lm(lm, {"group_size": 32, "bits": 4})
    save_lm(lm, tmp_path / "q4")
    assert mx.default_device() == mx.cpu  # the test machines; Metal would pick "stored"
    auto = moshi_mlx.load_lm(tmp_path / "bf16")
    assert auto.act_dtype == mx.float32
    assert {v.dtype for _, v in tree_flatten(auto.parameters())} == {mx.float32}
    w = auto.transformer.layers[0].self_attn.in_proj.weight
    assert sys.platform == "darwin" or is_contiguous(w.T)
    stored = moshi_mlx.load_lm(tmp_path / "bf16", dtype="stored")
    assert stored.act_dtype is None and stored.text_linear.weight.dtype == mx.bfloat16
    q = moshi_mlx.load_lm(tmp_path / "q4", dtype="auto")
    assert q.act_dtype == mx.float32 and q.text_linear.weight.dtype == mx.uint32
    assert q.text_linear.scales.dtype == mx.bfloat16 and q.text_linear.input_dtype == mx.float32
    assert q.out_norm.weight.dtype == mx.float32
    codes = mx.array(np.random.default_rng(2).integers(0, cfg.card, (1, 1 + cfg.n_q, 6)))
    f32 = moshi_mlx.load_lm(tmp_path / "bf16", dtype="float32")
    for a, b, c in zip(auto.forward(codes), f32.forward(codes), stored.forward(codes), strict=True):
        assert a.dtype == mx.float32 and c.dtype == mx.bfloat16
        np.testing.assert_array_equal(np.array(a), np.array(b))
        a, c = np.array(a), np.array(c.astype(mx.float32))
        assert np.nanmean(np.abs(a - c)) < 0.15 * np.nanmean(np.abs(a))  # bf16 rounding, random model
