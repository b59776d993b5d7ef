"""Strict loading: clear errors, checkpoint resolution, quantization read from the tensors, dtype."""

from __future__ import annotations

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from moshi_mlx import load_lm
from moshi_mlx.compute import apply_policy, decide_policy
from moshi_mlx.config import LmConfig
from moshi_mlx.loading import save_lm
from moshi_mlx.models.lm import Lm
from moshi_mlx.quant import detect_quantization, quantize_lm, quantized_modules
from moshi_mlx.weights.lm import detect_format, map_lm_torch
from tests.helpers import GOLDEN, random_lm, tiny_lm_kwargs

REAL_CFG = json.loads((GOLDEN / "lm_real_config.json").read_text())
REAL_PT = GOLDEN / "lm_real_weights.safetensors"


def test_strict_error_lists_missing_unexpected_and_misshaped(tmp_path):
    w = mx.load(str(REAL_PT))
    del w["depformer.layers.1.gating.3.linear_out.weight"]
    w["transformer.layers.0.extra.weight"] = mx.zeros((2, 3))
    w["text_linear.weight"] = mx.zeros((7, 64))
    mx.save_safetensors(str(tmp_path / "bad.safetensors"), w)
    with pytest.raises(ValueError) as e:
        load_lm(tmp_path / "bad.safetensors", config=REAL_CFG)
    msg = str(e.value)
    assert "missing (1)" in msg
    assert "depformer.slices.3.transformer.layers.1.gating.linear_out.weight (32, 88) float32" in msg
    assert "unexpected (1)" in msg and "transformer.layers.0.extra.weight (2, 3) float32" in msg
    assert "mis-shaped (1)" in msg
    assert "text_linear.weight: checkpoint (7, 64) float32, model (48, 64) float32" in msg


def test_wrong_config_is_one_clear_error(tmp_path):
    cfg = dict(REAL_CFG, num_layers=3)
    with pytest.raises(ValueError, match=r"missing \(6\)[\s\S]*transformer\.layers\.2\.norm1\.weight"):
        load_lm(REAL_PT, config=cfg)
    # No config.json anywhere: the 7B preset is used (lazily built, never evaluated) and rejected.
    (tmp_path / "model.safetensors").write_bytes(REAL_PT.read_bytes())
    with pytest.raises(ValueError, match=r"missing \(372\)[\s\S]*and 322 more") as e:
        load_lm(tmp_path)
    assert "audio_embs.0.weight: checkpoint (33, 64) float32, model (2049, 4096) float32" in str(e.value)


def test_directory_resolution_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no LM weights"):
        load_lm(tmp_path, config=REAL_CFG)
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "model.q4.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="several LM weight files"):
        load_lm(tmp_path, config=REAL_CFG)
    with pytest.raises(FileNotFoundError):
        load_lm(tmp_path / "nope", config=REAL_CFG)
    with pytest.raises(ValueError, match="dtype"):
        load_lm(REAL_PT, config=REAL_CFG, dtype="int8")


def test_state_dict_names_in_projs_are_accepted():
    """moshi 0.2.x `state_dict()` form (`in_projs.{i}` / `out_projs.{i}`) maps like released files."""
    w = mx.load(str(REAL_PT))
    cfg = LmConfig.from_dict(REAL_CFG)
    sd = {}
    for k, v in w.items():
        for src, dst in ((".in_proj_weight", ".in_projs"), (".out_proj.weight", ".out_projs")):
            if k.endswith(src):
                n = cfg.dep_q if k.startswith("depformer.") else 1
                for i, part in enumerate(mx.split(v, n, axis=0)):
                    sd[k[: -len(src)] + f"{dst}.{i}.weight"] = part
                break
        else:
            sd[k] = v
    assert detect_format(sd) == "torch" and detect_format(map_lm_torch(w, cfg)) == "mlx"
    a, b = map_lm_torch(w, cfg), map_lm_torch(sd, cfg)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(np.array(a[k]), np.array(b[k]))


@pytest.mark.parametrize("bits,group_size", [(8, 64), (4, 32)])
def test_quantization_detected_from_tensors(bits, group_size, tmp_path):
    kwargs = tiny_lm_kwargs()
    cfg = LmConfig.from_dict(kwargs)
    lm = random_lm(cfg, 11)
    lm.set_dtype(mx.bfloat16)  # as Kyutai's files: bf16 model, then quantized
    quantize_lm(lm, {"group_size": group_size, "bits": bits})
    apply_policy(lm, decide_policy("stored"))  # what the loader does: the same kernel inputs
    # A file name with no hint and a config with no "quantization" block.
    mx.save_safetensors(str(tmp_path / "weights.safetensors"), dict(tree_flatten(lm.parameters())))
    loaded = load_lm(tmp_path / "weights.safetensors", config=kwargs, dtype="stored")
    assert loaded.act_dtype is None
    q = quantized_modules(loaded)
    assert q == quantized_modules(lm)
    assert len(q) == 2 + cfg.n_q + 4 * cfg.num_layers + cfg.dep_q * (3 + 4 * cfg.depformer_num_layers)
    assert all(v == (bits, group_size) for v in q.values())
    assert loaded.text_emb.weight.dtype == mx.uint32 and loaded.text_emb.scales.dtype == mx.bfloat16
    codes = mx.array(np.random.default_rng(0).integers(0, cfg.card, (1, 17, 9)))
    codes[:, :, 3] = -1  # zero tokens everywhere at step 3
    for a, b in zip(loaded.forward(codes), lm.forward(codes), strict=True):
        np.testing.assert_array_equal(np.array(a.astype(mx.float32)), np.array(b.astype(mx.float32)))
    # Quantized embeddings keep the exact-zero output for id -1.
    ids = mx.array([[-1, 2]])
    for emb in (loaded.text_emb, loaded.audio_embs[15], loaded.depformer.slices[7].emb):
        y = np.array(emb(ids).astype(mx.float32))
        assert (y[0, 0] == 0).all() and np.abs(y[0, 1]).max() > 0
    assert float(mx.abs(loaded.embed(mx.full((1, 17, 1), -1))).max()) == 0.0

    # dtype="float32": packed weights stay packed, activations and logits are float32.
    f32 = load_lm(tmp_path / "weights.safetensors", config=kwargs, dtype="float32")
    assert f32.act_dtype == mx.float32 and f32.transformer.layers[0].gating.linear_in.weight.dtype == mx.uint32
    assert f32.out_norm.weight.dtype == mx.float32
    text32, audio32 = f32.forward(codes)
    assert text32.dtype == mx.float32 and audio32.dtype == mx.float32
    # Reference: the same packed weights dequantized into a float32 model, plain matmuls.
    deq = {}
    for k, v in tree_flatten(f32.parameters()):
        path, leaf = k.rsplit(".", 1)
        if path in q and leaf == "weight":
            m, mod = q[path], _get(f32, path)
            # quantized_matmul dequantizes in float32; the embedding gather in the scales' dtype.
            sdt = mod.scales.dtype if isinstance(mod, nn.QuantizedEmbedding) else mx.float32
            deq[k] = mx.dequantize(v, mod.scales.astype(sdt), mod.biases.astype(sdt),
                                   m.group_size, m.bits).astype(mx.float32)
        elif path not in q:
            deq[k] = v.astype(mx.float32)
    ref = Lm(cfg)
    ref.load_weights(list(deq.items()), strict=True)
    for a, b in zip((text32, audio32), ref.forward(codes), strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-4)


def _get(model, path: str):
    for part in path.split("."):
        model = model[int(part)] if part.isdigit() else getattr(model, part)
    return model


def test_mixed_quantization_round_trips_through_config(tmp_path):
    kwargs = tiny_lm_kwargs(dep_q=2, n_q=4, delays=[0, 0, 1, 0, 1])
    cfg = LmConfig.from_dict(kwargs)
    lm = random_lm(cfg, 12)
    spec = {"group_size": 32, "bits": 4, "text_linear": False,
            "depformer.slices.0.linear_out": {"group_size": 64, "bits": 8}}
    quantize_lm(lm, spec)
    assert "text_linear" not in quantized_modules(lm)
    assert quantized_modules(lm)["depformer.slices.0.linear_out"] == (8, 64)  # (bits, group)
    save_lm(lm, tmp_path / "out", filename="model.q4.safetensors")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())["quantization"]
    assert saved == {"group_size": 32, "bits": 4, "text_linear": False,
                     "depformer.slices.0.linear_out": {"group_size": 64, "bits": 8}}
    loaded = load_lm(tmp_path / "out")
    assert quantized_modules(loaded) == quantized_modules(lm)
    assert loaded.cfg.quantization == saved
    w = mx.load(str(tmp_path / "out" / "model.q4.safetensors"))
    assert detect_quantization(w, Lm(cfg)) == saved

    # A config block that contradicts the tensors is refused, naming the module.
    bad = dict(kwargs, quantization={"group_size": 64, "bits": 8, "text_emb": {}})
    with pytest.raises(ValueError, match=r"text_emb: config says \{'group_size': 64, 'bits': 8\}"):
        load_lm(tmp_path / "out" / "model.q4.safetensors", config=bad)
    # mlx-lm semantics: modules the block does not name follow their tensors; an explicit entry
    # that contradicts the tensors is refused.
    plain = dict(kwargs, quantization={"group_size": 32, "bits": 4})
    assert quantized_modules(load_lm(tmp_path / "out" / "model.q4.safetensors", config=plain)) == \
        quantized_modules(lm)
    with pytest.raises(ValueError, match=r"text_linear: config says \{'group_size': 32, 'bits': 4\}"):
        load_lm(tmp_path / "out" / "model.q4.safetensors", config=dict(
            kwargs, quantization={"group_size": 32, "bits": 4, "text_linear": {"bits": 4}}))
    with pytest.raises(ValueError, match="group_size"):
        quantize_lm(Lm(LmConfig.from_dict(tiny_lm_kwargs(dim=48, num_heads=4))), {"group_size": 32, "bits": 4})
