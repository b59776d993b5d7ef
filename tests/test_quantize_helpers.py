"""Shared fixtures of the quantize tests: tiny source models and a cached converter."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from moshi_mlx.config import LmConfig
from moshi_mlx.models.lm import Lm
from quantize.convert import prepare, write
from quantize.recipes import get_recipe
from quantize.source import resolve

GOLDEN = Path(__file__).parent / "golden" / "data"

# Shapes Kyutai's moshi_mlx config mapping reproduces (hidden_scale 4.125 <-> their 4*dim rule)
# and whose every input size is a multiple of 64, so their default `nn.quantize` applies.
KY_CFG = dict(dim=256, num_heads=4, num_layers=2, text_card=64, card=64, n_q=4, dep_q=2,
              context=32, depformer_dim=64, depformer_num_heads=2, depformer_num_layers=1,
              depformer_dim_feedforward=192, delays=[0, 0, 1, 0, 1])


def make_source(d: Path, cfg: dict, seed: int = 0) -> Path:
    """A random bf16 LM in Kyutai's MLX names plus config.json."""
    d.mkdir(parents=True, exist_ok=True)
    mx.random.seed(seed)
    m = Lm(LmConfig.from_dict(cfg))
    m.set_dtype(mx.bfloat16)
    w = dict(tree_flatten(m.parameters()))
    mx.eval(w)
    mx.save_safetensors(str(d / "model.safetensors"), w)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def convert(src: Path, out: Path, recipe: str, scales: str | None = None) -> Path:
    write(prepare(resolve(src), get_recipe(recipe, scales=scales)), out)
    return out


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """The app's tiny random Moshi repository (bf16), the repo's test model."""
    tr = pytest.importorskip("moshi_mlx.testing.tiny_repo")
    d = tmp_path_factory.mktemp("tiny") / "bf16"
    tr.write_tiny_repo(d, "bf16", seed=0)
    return d
