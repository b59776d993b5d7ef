"""The PyTorch -> MLX Mimi key map against the released checkpoint's manifest.

`tests/golden/data/mimi_manifest.json` lists every tensor of
`tokenizer-e351c8d8-checkpoint125.safetensors` (names and shapes, made by the reference code with the
real configuration). Our model built with `mimi_202407(32)` must take exactly those tensors: same key
set after mapping, and each shape equal after the layout transform.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlx.utils import tree_flatten

from moshi_mlx.config import mimi_202407
from moshi_mlx.models.mimi.mimi import Mimi
from moshi_mlx.weights.mimi import (
    is_torch_layout,
    map_mimi_to_torch,
    map_mimi_torch,
    torch_key_to_ours,
)

MANIFEST = Path(__file__).parent / "golden" / "data" / "mimi_manifest.json"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def _views(manifest: dict) -> dict[str, np.ndarray]:
    # Zero-stride views: real shapes without allocating 385 MB.
    return {k: np.broadcast_to(np.float32(0), v["shape"]) for k, v in manifest["tensors"].items()}


def test_manifest_is_the_released_layout(manifest):
    t = manifest["tensors"]
    assert len(t) == 318 and abs(manifest["num_values"] - 96.15e6) < 0.01e6
    assert t["encoder_transformer.transformer.layers.0.self_attn.in_proj_weight"]["shape"] == [1536, 512]
    assert t["upsample.convtr.convtr.convtr.weight"]["shape"] == [512, 1, 4]
    assert sum(".vq.layers." in k and k.endswith("embedding_sum") for k in t) == 32
    assert is_torch_layout(t)


def test_real_model_maps_exactly_onto_manifest(manifest):
    cfg = mimi_202407(32)
    ours = {k: tuple(v.shape) for k, v in tree_flatten(Mimi(cfg).parameters())}  # lazy, not evaluated
    mapped = map_mimi_torch(_views(manifest), cfg)
    assert set(mapped) == set(ours)
    bad = {k: (v.shape, ours[k]) for k, v in mapped.items() if tuple(v.shape) != ours[k]}
    assert not bad
    assert set(mapped) != set(manifest["tensors"])  # the map is not the identity
    assert not is_torch_layout(mapped)


def test_inverse_map_round_trips(manifest):
    cfg = mimi_202407(32)
    views = _views(manifest)
    back = map_mimi_to_torch(map_mimi_torch(views, cfg), cfg)
    assert set(back) == set(views)
    assert all(back[k].shape == views[k].shape for k in views)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((512, 256, 4)).astype(np.float32)  # [in, out, k] transposed conv
    key = "decoder.model.5.convtr.convtr.weight"
    ours = map_mimi_torch({key: w}, cfg)
    np.testing.assert_array_equal(ours["decoder.layers.1.upsample.convtr.convtr.weight"],
                                  w.transpose(1, 2, 0))
    np.testing.assert_array_equal(map_mimi_to_torch(ours, cfg)[key], w)


def test_key_details():
    cfg = mimi_202407(32)
    assert torch_key_to_ours("encoder.model.10.block.3.conv.conv.bias", cfg) == (
        "encoder.layers.3.residuals.0.block.1.conv.conv.bias", None)
    assert torch_key_to_ours("encoder.model.12.conv.conv.weight", cfg) == (
        "encoder.layers.3.downsample.conv.conv.weight", "conv")
    assert torch_key_to_ours("decoder.model.14.conv.conv.weight", cfg)[0] == (
        "decoder.final_conv1d.conv.conv.weight")
    # moshi 0.2 state_dict naming is accepted too
    assert torch_key_to_ours("decoder_transformer.transformer.layers.3.self_attn.in_projs.0.weight",
                             cfg)[0] == "decoder_transformer.transformer.layers.3.self_attn.in_proj.weight"
    assert torch_key_to_ours("quantizer.rvq_rest.vq.layers.30._codebook._initialized", cfg)[0] == (
        "quantizer.rvq_rest.vq.layers.30.codebook.initialized")
    for bad in ("encoder.model.2.conv.conv.weight", "lm.text_emb.weight", "encoder.model.99.x"):
        with pytest.raises(KeyError):
            torch_key_to_ours(bad, cfg)


def test_codebook_vectors_are_ema_sums_over_clamped_usage():
    """Released codebooks store EMA statistics: vectors = embedding_sum / max(cluster_usage, 1e-5)
    (PT `EuclideanCodebook`), unused entries (usage 0) included."""
    import mlx.core as mx

    from moshi_mlx.models.mimi.quantizer import EuclideanCodebook

    cb = EuclideanCodebook(dim=3, bins=4)
    es = np.array([[1, 2, 3], [4, 5, 6], [-1, 0, 1], [2e-5, 0, 0]], dtype=np.float32)
    usage = np.array([2.0, 0.5, 0.0, 1e-7], dtype=np.float32)
    cb.update({"embedding_sum": mx.array(es), "cluster_usage": mx.array(usage)})
    emb, half_norm = cb.vectors()
    want = es / np.maximum(usage, 1e-5)[:, None]
    np.testing.assert_allclose(np.array(emb), want, rtol=1e-6)
    np.testing.assert_allclose(np.array(half_norm), 0.5 * (want**2).sum(-1), rtol=1e-6)
