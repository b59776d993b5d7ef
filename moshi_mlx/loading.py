"""Load and save Moshi's LM: config -> weights -> key map -> quantize -> strict load -> eval.

`load_lm(path, config=None, dtype=None)` accepts
- a checkpoint file in Kyutai's MLX names (bf16, q8, q4) or PyTorch release names;
- a directory with `config.json` (optional) and `model.safetensors`, `model.q8.safetensors`,
  `model.q4.safetensors`, or shards listed by `model.safetensors.index.json`, resolved by the
  rule of `moshi_mlx.checkpoint.layout` (a directory with several LM files is an error).
`config` is Kyutai's `lm_kwargs` dict (may carry an mlx-lm style "quantization" block), a path to
a json file, an `LmConfig`, or None: then `config.json` of the directory (or next to the file) is
read, else the Moshiko/Moshika v0.1 preset is used.

Quantization is read from the tensors (see `moshi_mlx.quant`); an explicit per-module entry of a
config's "quantization" block that disagrees with them is an error (mlx-lm semantics otherwise).
Loading is strict: one `ValueError` lists every missing, unexpected and mis-shaped key with shapes.

`dtype` picks the compute policy (`moshi_mlx.compute`, applied once, after the strict load):
- "float32": unquantized tensors cast to float32, float32 activations; quantized weights stay
  packed (with their scales/biases as stored) and get float32 inputs.
- "bfloat16" / "float16": unquantized tensors cast to it, activations in it.
- "stored": compute in the dtype the weights are stored in (Kyutai's files: bf16).
- None or "auto" (default): per platform. Metal: "stored" (bf16 is the fast path there). CPU:
  "float32", because MLX's CPU kernels are float32 ones (bf16 matmuls and bf16-input quantized
  matmuls are several times slower; see `benchmarks/results/lm.md`), unless the float32 model
  would take more than `compute.AUTO_RAM_FRACTION` of the RAM (the full 7B in bf16 on a 24 GB
  machine): then "stored". Quantized weights stay packed either way.
On Linux CPUs, float32 matmul weights are also stored in the layout the BLAS reads fastest (same
names, shapes and values; `moshi_mlx.compute`). The loaded parameters are what the model computes
with, so `save_lm` writes them in that dtype: load with `dtype="stored"` to save as stored.
Opt-in for quantized models on a CPU with memory to spare: `moshi_mlx.compute.dequantize_linears`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .checkpoint.layout import LM_FILES, lm_weight_files
from .checkpoint.safetensors_io import write_weights
from .checkpoint.spec import with_block
from .compute import DTYPE_NAMES, apply_policy, check_dtype, decide_policy
from .config import LmConfig, moshi_v0_1
from .models.lm import Lm
from .quant import (
    check_spec_matches,
    detect_quantization,
    model_decisions,
    quantize_lm,
)
from .weights.lm import detect_format, fill_tied_slices, map_lm_torch

log = logging.getLogger(__name__)

DTYPES = {name: getattr(mx, name) for name in DTYPE_NAMES}
_MAX_LISTED = 50


def resolve_config(path: Path, config: Any) -> LmConfig:
    """LmConfig from a dict / json path / LmConfig / None (config.json beside the weights)."""
    if isinstance(config, LmConfig):
        return config
    if isinstance(config, dict):
        return LmConfig.from_dict(config)
    if config is not None:
        return LmConfig.from_file(config)
    cfg_file = (path if path.is_dir() else path.parent) / "config.json"
    if cfg_file.exists():
        log.info("LM config from %s", cfg_file)
        return LmConfig.from_file(cfg_file)
    log.info("no config.json beside %s: using the Moshi v0.1 (7B) preset", path)
    return moshi_v0_1()


def read_weights(path: str | Path) -> dict[str, mx.array]:
    """All tensors of a checkpoint file, directory or shard set (lazily loaded by MLX)."""
    weights: dict[str, mx.array] = {}
    for f in lm_weight_files(path):
        weights.update(mx.load(str(f)))
    return weights


def _shape_str(a: Any) -> str:
    return f"{tuple(a.shape)} {str(a.dtype).replace('mlx.core.', '')}"


def _listing(title: str, items: list[str]) -> str:
    more = f"\n    ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"  {title} ({len(items)}):\n    " + "\n    ".join(items[:_MAX_LISTED]) + more


def check_weights(model: nn.Module, weights: dict[str, Any], source: str = "checkpoint") -> None:
    """One ValueError listing missing, unexpected and mis-shaped keys (names and shapes)."""
    expected = dict(tree_flatten(model.parameters()))
    missing = [f"{k} {_shape_str(v)}" for k, v in sorted(expected.items()) if k not in weights]
    unexpected = [f"{k} {_shape_str(v)}" for k, v in sorted(weights.items()) if k not in expected]
    bad = [
        f"{k}: checkpoint {_shape_str(v)}, model {_shape_str(expected[k])}"
        for k, v in sorted(weights.items())
        if k in expected and (tuple(v.shape) != tuple(expected[k].shape)
                              or (v.dtype == mx.uint32) != (expected[k].dtype == mx.uint32))
    ]
    if missing or unexpected or bad:
        parts = [f"LM weights from {source} do not match the model (config or format mismatch?):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", bad)):
            if items:
                parts.append(_listing(title, items))
        raise ValueError("\n".join(parts))


def build_lm(weights: dict[str, Any], cfg: LmConfig, dtype: str | None = None,
             source: str = "checkpoint") -> Lm:
    """Weights (either naming) + config -> evaluated `Lm` (strict), under the compute policy
    for `dtype` (module docstring)."""
    check_dtype(dtype)  # fails before the weights are read
    if detect_format(weights) == "torch":
        log.info("mapping PyTorch key names")
        weights = map_lm_torch(weights, cfg)
        source += " (PyTorch names, listed below as mapped by moshi_mlx.weights.lm.map_lm_torch)"
    else:
        weights = fill_tied_slices(weights, cfg)  # depformer weight sets written once
    model = Lm(cfg)
    detected = detect_quantization(weights, model)
    if cfg.quantization is not None:
        check_spec_matches(cfg.quantization, detected, model)
    if detected is not None:
        log.info("quantized checkpoint: %s", {k: v for k, v in detected.items()
                                               if k in ("group_size", "bits")})
        quantize_lm(model, detected)
    check_weights(model, weights, source)
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())
    return apply_policy(model, decide_policy(dtype, model))


def load_lm(path: str | Path, config: Any = None, dtype: str | None = None) -> Lm:
    """Moshi's LM from a checkpoint file or model directory; see the module docstring."""
    path = Path(path)
    cfg = resolve_config(path, config)
    return build_lm(read_weights(path), cfg, dtype=dtype, source=str(path))


def save_lm(
    model: Lm,
    out_dir: str | Path,
    filename: str = LM_FILES["bf16"],
    config: LmConfig | dict | None = None,
    max_shard_gb: float | None = None,
) -> list[Path]:
    """Write `model` in Kyutai's MLX names (as quantized) + `config.json` with its
    "quantization" block. With `max_shard_gb`, large models are split into
    `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json`."""
    out = Path(out_dir)
    weights = dict(tree_flatten(model.parameters()))
    limit = None if max_shard_gb is None else int(max_shard_gb * (1 << 30))
    files = write_weights(out, weights, filename, max_shard_bytes=limit,
                          metadata={"format": "mlx"})
    cfg = config if config is not None else model.cfg
    cfg_dict = with_block(cfg.to_dict() if isinstance(cfg, LmConfig) else cfg,
                          model_decisions(model))
    with open(out / "config.json", "w") as f:
        json.dump(cfg_dict, f, indent=2)
    return files
