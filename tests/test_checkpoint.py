"""moshi_mlx.checkpoint: one directory rule for loading, the hub and the quantizer; the block's
writer and reader; the streaming, sharding weight writer."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest

from moshi_mlx import hub
from moshi_mlx.checkpoint import layout
from moshi_mlx.checkpoint.layout import (
    MIMI_FILE,
    TOKENIZER_FILE,
    CheckpointError,
    Family,
    lm_weight_files,
    resolve_dir,
)
from moshi_mlx.checkpoint.safetensors_io import write_weights
from moshi_mlx.checkpoint.spec import QParams, block_from_decisions, decisions_from_block
from quantize.source import SourceError
from quantize.source import resolve as source_resolve


def _model_dir(d, *lm_names, config=None):
    d.mkdir(parents=True, exist_ok=True)
    for n in (*lm_names, MIMI_FILE, TOKENIZER_FILE):
        (d / n).write_bytes(b"x")
    if config is not None:
        (d / "config.json").write_text(json.dumps(config))
    return d


def test_ambiguous_directory_is_the_same_error_everywhere(tmp_path):
    d = _model_dir(tmp_path / "m", "model.safetensors", "model.q4.safetensors")
    for call, err in ((lambda: lm_weight_files(d), CheckpointError),
                      (lambda: hub.resolve(model_dir=d), hub.HubError),
                      (lambda: source_resolve(d), SourceError)):
        with pytest.raises(err, match="several LM weight files") as e:
            call()
        assert "model.safetensors, model.q4.safetensors" in str(e.value), call
    # config.json's moshi_name settles it, for all three
    (d / "config.json").write_text(json.dumps({"moshi_name": "model.q4.safetensors"}))
    assert lm_weight_files(d) == [d / "model.q4.safetensors"]
    assert hub.resolve(model_dir=d).lm_weight == d / "model.q4.safetensors"
    assert source_resolve(d).weight_files == [d / "model.q4.safetensors"]
    # an index next to a single file is ambiguous too
    e = _model_dir(tmp_path / "e", "model.q8.safetensors", layout.INDEX_FILE)
    with pytest.raises(CheckpointError, match=r"model\.q8\.safetensors, model\.safetensors\.index"):
        resolve_dir(e)


def test_directory_rule_errors_name_the_files(tmp_path):
    d = _model_dir(tmp_path / "m")
    with pytest.raises(CheckpointError, match="no LM weights in .*model.q4.safetensors"):
        lm_weight_files(d)
    (d / "config.json").write_text(json.dumps({"moshi_name": "lm.safetensors"}))
    with pytest.raises(CheckpointError, match="moshi_name='lm.safetensors', which is missing"):
        lm_weight_files(d)
    (d / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        resolve_dir(d)


def test_a_new_family_is_a_table_row(tmp_path, monkeypatch):
    stt = Family("stt", {"bf16": "stt.safetensors"}, "mimi-stt.safetensors", "spm-stt.model")
    d = tmp_path / "stt"
    d.mkdir()
    (d / "stt.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="no LM weights"):
        lm_weight_files(d)
    monkeypatch.setitem(layout.FAMILIES, "stt", stt)
    assert lm_weight_files(d) == [d / "stt.safetensors"]
    assert layout.precision_of_name("stt.safetensors") == "bf16"
    md = resolve_dir(d, stt)
    assert (md.mimi.name, md.tokenizer.name) == ("mimi-stt.safetensors", "spm-stt.model")


def test_block_tie_break_does_not_depend_on_module_order():
    a = {"x": (8, 64), "y": (4, 32), "z": None}
    b = dict(reversed(list(a.items())))
    assert block_from_decisions(a) == block_from_decisions(b) == {
        "group_size": 32, "bits": 4, "x": {"group_size": 64, "bits": 8}, "z": False}
    assert decisions_from_block(block_from_decisions(a), a) == a
    assert decisions_from_block(None, ["x"]) == {"x": None}
    assert QParams(4, 32) == (4, 32) and QParams(4, 32).as_block() == {"group_size": 32, "bits": 4}


def test_writer_shards_replaces_stale_files_and_round_trips(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.q4.safetensors").write_bytes(b"stale")
    tensors = {f"t{i}": mx.arange(1000, dtype=mx.float32) * i for i in range(5)}
    tensors["b"] = mx.ones((7, 3), dtype=mx.bfloat16)
    want = {k: mx.array(v) for k, v in tensors.items()}
    files = write_weights(out, dict(tensors), "model.safetensors", max_shard_bytes=8000)
    assert [f.name for f in files] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert sorted(p.name for p in out.iterdir()) == [f.name for f in files] + [layout.INDEX_FILE]
    assert lm_weight_files(out) == files
    back = {}
    for f in files:
        back.update(mx.load(str(f)))
    assert set(back) == set(want)
    assert all(back[k].dtype == v.dtype and mx.array_equal(back[k], v) for k, v in want.items())
    # writing one file into the same directory leaves no shards behind
    files = write_weights(out, dict(tensors), "model.q8.safetensors")
    assert sorted(p.name for p in out.iterdir()) == ["model.q8.safetensors"]
    assert lm_weight_files(out) == files
