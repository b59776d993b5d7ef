"""Our LM takes exactly the tensors of Kyutai's real TTS checkpoint (no weights needed).

`tests/golden/data/tts_1.6b_manifest.json` (made by `tests/golden/make_tts_manifest.py` with
PyTorch moshi on the meta device) holds `kyutai/tts-1.6b-en_fr`'s `config.json` and every key,
shape and dtype of its `dsm_tts_1e68beda@240.safetensors`. The config must parse, and the
PyTorch names must map onto `Lm(cfg)` with a strict load; MLX arrays are lazy, so the 1.6B model
and the fake checkpoints are never evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from moshi_mlx.config import LmConfig
from moshi_mlx.loading import check_weights
from moshi_mlx.models.lm import Lm
from moshi_mlx.weights.lm import detect_format, map_lm_torch
from tests.helpers import row_index_views

MANIFEST = Path(__file__).parent / "golden" / "data" / "tts_1.6b_manifest.json"
MX_DTYPES = {"bfloat16": mx.bfloat16, "float32": mx.float32}


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def test_manifest_is_the_released_tts(manifest):
    """418 tensors, 410 bf16 and 8 float32 (the conditioners), as in the released file's header."""
    dtypes = [d for _, d in manifest["torch"].values()]
    assert len(dtypes) == 418 and dtypes.count("float32") == 8
    n = sum(int(np.prod(s)) for s, _ in manifest["torch"].values())
    assert 1.7e9 < n < 1.9e9  # "1.6b" counts the temporal + depformer stacks
    assert manifest["torch"]["depformer_text_emb.weight"] == [[8001, 128], "bfloat16"]


def test_config_parses(manifest):
    cfg = LmConfig.from_dict(manifest["config"])
    assert cfg.demux_second_stream and cfg.cross_attention
    assert cfg.depformer_low_rank_embeddings == 128 and cfg.depformer_num_weights == 11
    assert cfg.extra["tts_config"] == {"audio_delay": 1.28, "second_stream_ahead": 2}
    assert LmConfig.from_dict(cfg.to_dict()) == cfg


def test_torch_release_maps_onto_the_model(manifest):
    cfg = LmConfig.from_dict(manifest["config"])
    views = row_index_views(manifest["torch"])  # which chunk goes where
    assert detect_format(views) == "torch"
    mapped = map_lm_torch(views, cfg)
    model = Lm(cfg)
    check_weights(model, mapped, "tts manifest")
    layout = dict(tree_flatten(model.parameters()))
    assert set(mapped) == set(layout)
    sched = cfg.depformer_weights_per_step_schedule
    for k in range(cfg.dep_q):
        s = f"depformer.slices.{k}"
        i = sched[k]
        q = mapped[f"{s}.transformer.layers.2.self_attn.in_proj.weight"]
        np.testing.assert_array_equal(q[:, 0], np.arange(i * 3072, (i + 1) * 3072))
        assert mapped[f"{s}.linear_in.weight"] is views[f"depformer_in.{i}.weight"]
        assert (mapped[f"{s}.transformer.layers.3.gating.linear_out.weight"]
                is views[f"depformer.layers.3.gating.{i}.linear_out.weight"])
        emb = "depformer_text_emb" if k == 0 else f"depformer_emb.{k - 1}"
        assert mapped[f"{s}.emb.low_rank.weight"] is views[f"{emb}.low_rank.weight"]
    # Slices of one weight set share the same arrays (11 sets in memory, not 32).
    for name in ("self_attn.in_proj", "self_attn.out_proj", "gating.linear_in"):
        a, b = (mapped[f"depformer.slices.{k}.transformer.layers.1.{name}.weight"] for k in (8, 15))
        assert a is b
    assert mapped["depformer.slices.0.emb.out2.weight"] is views["depformer_text_emb.out2.weight"]
    assert (mapped["transformer.layers.15.cross_attention.in_proj.weight"]
            is views["transformer.layers.15.cross_attention.in_proj_weight"])


def test_load_lm_end_to_end_on_the_release_layout(manifest, monkeypatch, tmp_path):
    """`load_lm(<repo>/dsm_tts_...safetensors)` with the repo's config.json, lazily: names,
    shapes and dtypes as stored (conditioners float32, the rest bf16)."""
    from moshi_mlx import loading

    section = manifest["torch"]
    fake = {k: mx.zeros(shape, dtype=MX_DTYPES[d]) for k, (shape, d) in section.items()}
    monkeypatch.setattr(loading, "read_weights", lambda path: fake)
    monkeypatch.setattr(mx, "eval", lambda *a, **k: None)
    (tmp_path / "config.json").write_text(json.dumps(manifest["config"]))
    lm = loading.load_lm(tmp_path / manifest["config"]["moshi_name"], dtype="stored")
    assert lm.cfg == LmConfig.from_dict(manifest["config"])
    loaded = dict(tree_flatten(lm.parameters()))
    conds = [k for k in loaded if k.startswith("condition_provider.")]
    assert len(conds) == 8 and all(loaded[k].dtype == mx.float32 for k in conds)
    assert loaded["transformer.layers.0.cross_attention.in_proj.weight"].dtype == mx.bfloat16
