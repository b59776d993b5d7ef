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
from moshi_mlx.weights.lm import detect_format, map_lm_torch
from tests.conftest import tiny_lm_kwargs


def _first_slice(cfg: LmConfig, index_of, i: int) -> int:
    return next(k for k in range(cfg.dep_q) if index_of(k) == i)


def to_torch_names(lm: Lm) -> dict[str, mx.array]:
    """Inverse of `map_lm_torch` (test only): shared PT tensors are taken from the first slice
    that uses them, attention weight sets concatenated on dim 0 as in released files."""
    cfg = lm.cfg
    p = dict(tree_flatten(lm.parameters()))
    out: dict[str, mx.array] = {}

    def layer(src: str, dst: str, idx_key: str | None) -> None:
        for k, v in p.items():
            if not k.startswith(src + "."):
                continue
            rest = k[len(src) + 1:]
            if rest.startswith("self_attn."):
                continue
            if rest.endswith(("norm1.weight", "norm2.weight", "out_norm.weight")) and cfg.norm.startswith("rms"):
                out[f"{dst}.{rest[:-len('weight')]}alpha"] = v.reshape(1, 1, -1)
            elif rest.startswith("gating.linear1") or rest.startswith("gating.linear2"):
                out[f"{dst}.{rest[len('gating.'):]}"] = v
            elif rest.startswith("gating.") and idx_key is not None:
                out[f"{dst}.gating.{idx_key}.{rest[len('gating.'):]}"] = v
            else:
                out[f"{dst}.{rest}"] = v

    out["text_emb.weight"] = p["text_emb.weight"]
    out["text_linear.weight"] = p["text_linear.weight"]
    for i in range(cfg.n_q):
        out[f"emb.{i}.weight"] = p[f"audio_embs.{i}.weight"]
    if cfg.norm.startswith("rms"):
        out["out_norm.alpha"] = p["out_norm.weight"].reshape(1, 1, -1)
    else:
        out["out_norm.weight"], out["out_norm.bias"] = p["out_norm.weight"], p["out_norm.bias"]
    for L in range(cfg.num_layers):
        src = f"transformer.layers.{L}"
        layer(src, src, None)
        out[f"{src}.self_attn.in_proj_weight"] = p[f"{src}.self_attn.in_proj.weight"]
        out[f"{src}.self_attn.out_proj.weight"] = p[f"{src}.self_attn.out_proj.weight"]
    if cfg.dep_q == 0:
        return out
    n_sets = cfg.depformer_num_weights
    for L in range(cfg.depformer_num_layers):
        for i in range(n_sets):
            k = _first_slice(cfg, cfg.depformer_weight_index, i)
            src = f"depformer.slices.{k}.transformer.layers.{L}"
            layer(src, f"depformer.layers.{L}", str(i) if cfg.depformer_weights_per_step else None)
        for kind in ("in_proj", "out_proj"):
            parts = [p[f"depformer.slices.{_first_slice(cfg, cfg.depformer_weight_index, i)}"
                       f".transformer.layers.{L}.self_attn.{kind}.weight"] for i in range(n_sets)]
            name = "in_proj_weight" if kind == "in_proj" else "out_proj.weight"
            out[f"depformer.layers.{L}.self_attn.{name}"] = mx.concatenate(parts, axis=0)
    sched = cfg.depformer_weights_per_step_schedule
    n_in = (max(sched) + 1 if sched else cfg.dep_q) if cfg.depformer_multi_linear else 1

    def in_index(k: int) -> int:
        return (sched[k] if sched else k) if cfg.depformer_multi_linear else 0

    for j in range(n_in):
        out[f"depformer_in.{j}.weight"] = p[f"depformer.slices.{_first_slice(cfg, in_index, j)}.linear_in.weight"]
    for k in range(cfg.dep_q):
        out[f"linears.{k}.weight"] = p[f"depformer.slices.{k}.linear_out.weight"]
        emb = "depformer_text_emb.weight" if k == 0 else f"depformer_emb.{k - 1}.weight"
        out[emb] = p[f"depformer.slices.{k}.emb.weight"]
    return out


def random_lm(cfg: LmConfig, seed: int) -> Lm:
    """Random weights everywhere (norms and layer scales included), shared PT tensors tied."""
    rng = np.random.default_rng(seed)
    lm = Lm(cfg)
    lm.load_weights([(k, mx.array(rng.normal(0, 0.3 if v.ndim > 1 else 1, v.shape).astype(np.float32)))
                     for k, v in tree_flatten(lm.parameters())])
    tied = Lm(cfg)
    tied.load_weights(list(map_lm_torch(to_torch_names(lm), cfg).items()), strict=True)
    return tied


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
    apply_policy(lm, ComputePolicy(dtype=None, matmul_layout=True, quantized_input_dtype=None))
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
