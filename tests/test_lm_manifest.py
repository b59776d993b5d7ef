"""Our 7B model takes exactly the tensors of Kyutai's real LM checkpoints (no weights needed).

`tests/golden/data/lm_7b_manifest.json.gz` (made by `tests/golden/make_lm_manifest.py` with Kyutai's
own `moshi_mlx` and PyTorch `moshi`) lists every key, shape and dtype of the released
`model.safetensors` (MLX bf16), `model.q8.safetensors`, `model.q4.safetensors` and the PyTorch
`moshiko-pytorch-bf16/model.safetensors`. The MLX repos have no config.json, so the loader must
fall back to the v0.1 preset, read the quantization (all Linear and Embedding layers, norms not)
from the tensors, and load every key strictly. MLX arrays are lazy: the 7B model and the fake
checkpoints below are never evaluated, so nothing close to 16 GB is allocated.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from moshi_mlx.config import moshi_v0_1
from moshi_mlx.loading import check_weights, resolve_config
from moshi_mlx.models.lm import Lm
from moshi_mlx.quant import detect_quantization, quantize_lm
from moshi_mlx.weights.lm import detect_format, map_lm_torch
from tests.helpers import row_index_views

MANIFEST = Path(__file__).parent / "golden" / "data" / "lm_7b_manifest.json.gz"
MX_DTYPES = {"bfloat16": mx.bfloat16, "uint32": mx.uint32}


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(gzip.decompress(MANIFEST.read_bytes()))


def _lazy_checkpoint(section: dict) -> dict[str, mx.array]:
    return {k: mx.zeros(shape, dtype=MX_DTYPES[dtype]) for k, (shape, dtype) in section.items()}


def _layout(model: Lm) -> dict[str, list]:
    return {k: [list(v.shape), "uint32" if v.dtype == mx.uint32 else "bfloat16"]
            for k, v in tree_flatten(model.parameters())}


def test_manifest_is_the_released_7b(manifest):
    n = sum(int(np.prod(s)) for s, _ in manifest["torch"].values())
    assert abs(n - 7.69e9) < 0.01e9
    assert manifest["mlx_bf16"]["transformer.layers.31.gating.linear_in.weight"] == [[22528, 4096], "bfloat16"]
    assert manifest["mlx_q4"]["text_emb.weight"] == [[32001, 512], "uint32"]
    assert manifest["mlx_q8"]["text_emb.scales"] == [[32001, 64], "bfloat16"]
    assert manifest["mlx_q4"]["out_norm.weight"] == [[4096], "bfloat16"]


def test_no_config_json_gives_the_v0_1_preset(tmp_path):
    assert resolve_config(tmp_path / "model.q4.safetensors", None) == moshi_v0_1()


@pytest.mark.parametrize("name, spec", [
    ("mlx_bf16", None),
    ("mlx_q8", {"group_size": 64, "bits": 8}),
    ("mlx_q4", {"group_size": 32, "bits": 4}),
])
def test_mlx_release_loads_strictly(manifest, name, spec):
    before = mx.get_active_memory()
    weights = _lazy_checkpoint(manifest[name])
    model = Lm(moshi_v0_1())
    assert detect_format(weights) == "mlx"
    detected = detect_quantization(weights, model)
    # Exactly the global params: every Linear and Embedding quantized alike, nothing left out.
    assert detected == spec
    if detected is not None:
        quantize_lm(model, detected)
    check_weights(model, weights, name)
    assert _layout(model) == manifest[name]
    assert mx.get_active_memory() - before < 200e6  # nothing was evaluated


def test_torch_release_maps_onto_the_7b(manifest):
    cfg = moshi_v0_1()
    views = row_index_views(manifest["torch"])  # which chunk goes where
    assert detect_format(views) == "torch"
    mapped = map_lm_torch(views, cfg)
    model = Lm(cfg)
    check_weights(model, mapped, "torch manifest")
    assert set(mapped) == set(_layout(model))
    for k in range(cfg.dep_q):
        s = f"depformer.slices.{k}"
        q = mapped[f"{s}.transformer.layers.5.self_attn.in_proj.weight"]
        np.testing.assert_array_equal(q[:, 0], np.arange(k * 3072, (k + 1) * 3072))
        o = mapped[f"{s}.transformer.layers.2.self_attn.out_proj.weight"]
        np.testing.assert_array_equal(o[:, 0], np.arange(k * 1024, (k + 1) * 1024))
        assert mapped[f"{s}.linear_in.weight"] is views[f"depformer_in.{k}.weight"]
        assert mapped[f"{s}.linear_out.weight"] is views[f"linears.{k}.weight"]
        emb = "depformer_text_emb.weight" if k == 0 else f"depformer_emb.{k - 1}.weight"
        assert mapped[f"{s}.emb.weight"] is views[emb]
        assert (mapped[f"{s}.transformer.layers.3.gating.linear_in.weight"]
                is views[f"depformer.layers.3.gating.{k}.linear_in.weight"])
    assert mapped["transformer.layers.7.norm2.weight"].shape == (4096,)


def _lazy_7b(quant: dict | None) -> Lm:
    """The 7B as loaded from a release file (bf16 or quantized), never evaluated."""
    model = Lm(moshi_v0_1())
    model.set_dtype(mx.bfloat16)
    if quant is not None:
        quantize_lm(model, quant)
    return model


@pytest.mark.parametrize("quant, ram_gib, f32", [
    (None, 16, False),    # the bf16 7B is 30.8 GB in float32: computed as stored
    (None, 24, False),
    (None, 128, True),
    ({"group_size": 32, "bits": 4}, 16, True),  # quantized: packed weights do not grow
    ({"group_size": 64, "bits": 8}, 16, True),
])
def test_auto_dtype_ram_guard_on_the_7b(quant, ram_gib, f32):
    from moshi_mlx.compute import decide_policy, float32_bytes

    model = _lazy_7b(quant)
    policy = decide_policy(None, model, ram=ram_gib << 30)
    assert policy.dtype == (mx.float32 if f32 else None)
    size = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    if quant is None:
        assert abs(size - 15.38e9) < 0.02e9 and abs(float32_bytes(model) - 2 * size) < 1e6
    else:
        assert float32_bytes(model) - size < 0.01 * size  # norms only


def test_auto_dtype_on_metal_keeps_stored_bf16(monkeypatch):
    from moshi_mlx.compute import decide_policy

    monkeypatch.setattr(mx, "default_device", lambda: mx.Device(mx.gpu))
    assert decide_policy(None, _lazy_7b(None), ram=1 << 50).dtype is None


@pytest.mark.parametrize("name, filename, act_dtype", [
    ("mlx_q4", "model.q4.safetensors", mx.float32),
    ("mlx_q8", "model.q8.safetensors", mx.float32),
    ("mlx_bf16", "model.safetensors", None),
    ("torch", "model.safetensors", None),
])
def test_load_lm_end_to_end_on_the_release_layouts(manifest, monkeypatch, tmp_path, name, filename,
                                                   act_dtype):
    """`load_lm(<repo>/<file>)` with no config.json, as in Kyutai's repos, on a 16 GiB CPU machine:
    the real loader path with lazy tensors of the release layout (evaluation skipped)."""
    from moshi_mlx import compute, loading

    section = manifest[name]
    monkeypatch.setattr(loading, "read_weights", lambda path: _lazy_checkpoint(section))
    monkeypatch.setattr(compute, "ram_bytes", lambda: 16 << 30)
    monkeypatch.setattr(mx, "eval", lambda *a, **k: None)
    before = mx.get_active_memory()
    lm = loading.load_lm(tmp_path / filename)
    assert lm.cfg == moshi_v0_1() and lm.act_dtype == act_dtype
    want = manifest[name] if name != "torch" else manifest["mlx_bf16"]
    if act_dtype is not None:  # float32: unquantized tensors (norms) computed in float32; packed as stored
        want = {k: [shape, "float32" if dt == "bfloat16" and not k.endswith(("scales", "biases"))
                    else dt] for k, (shape, dt) in want.items()}
    loaded = {k: [list(v.shape), str(v.dtype).replace("mlx.core.", "")]
              for k, v in tree_flatten(lm.parameters())}
    assert loaded == want  # names and shapes as stored, dtypes as the policy says
    assert mx.get_active_memory() - before < 200e6
