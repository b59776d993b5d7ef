"""Load and save Moshi's LM: config -> weights -> key map -> quantize -> strict load -> eval.

`load_lm(path, config=None, dtype=None)` accepts
- a checkpoint file in Kyutai's MLX names (bf16, q8, q4) or PyTorch release names;
- a directory with `config.json` (optional) and `model.safetensors`, `model.q8.safetensors`,
  `model.q4.safetensors`, or shards listed by `model.safetensors.index.json`.
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

from .compute import DTYPE_NAMES, apply_policy, check_dtype, decide_policy
from .config import LmConfig, moshi_v0_1
from .models.lm import Lm
from .quant import (
    check_spec_matches,
    detect_quantization,
    quantizable_modules,
    quantize_lm,
    quantized_modules,
    spec_from_modules,
)
from .weights.lm import detect_format, map_lm_torch

log = logging.getLogger(__name__)

DTYPES = {name: getattr(mx, name) for name in DTYPE_NAMES}
WEIGHT_FILES = ("model.safetensors", "model.q8.safetensors", "model.q4.safetensors")
INDEX_FILE = "model.safetensors.index.json"
_MAX_LISTED = 50


def _resolve_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no LM checkpoint file or directory at {path}")
    index = path / INDEX_FILE
    if index.exists():
        with open(index) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        missing = [n for n in names if not (path / n).exists()]
        if missing:
            raise FileNotFoundError(f"{index} lists shards that are absent: {missing}")
        return [path / n for n in names]
    found = [path / n for n in WEIGHT_FILES if (path / n).exists()]
    shards = sorted(path.glob("model-*-of-*.safetensors"))
    if shards:
        found.append(shards[0])
    if len(found) != 1:
        what = "no LM weights" if not found else f"several LM weight files {[p.name for p in found]}"
        raise FileNotFoundError(
            f"{what} in {path}: expected one of {list(WEIGHT_FILES)} or shards with {INDEX_FILE}; "
            "pass the checkpoint file itself to choose"
        )
    return shards if shards else found


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
    for f in _resolve_files(Path(path)):
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
    filename: str = "model.safetensors",
    config: LmConfig | dict | None = None,
    max_shard_gb: float | None = None,
) -> list[Path]:
    """Write `model` in Kyutai's MLX names (as quantized) + `config.json` with its
    "quantization" block. With `max_shard_gb`, large models are split into
    `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.parameters()))
    shards: list[dict[str, mx.array]] = [{}]
    size, limit = 0, None if max_shard_gb is None else max_shard_gb * (1 << 30)
    for k, v in weights.items():
        if limit is not None and shards[-1] and size + v.nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += v.nbytes
    files: list[Path] = []
    if len(shards) == 1:
        files.append(out / filename)
        mx.save_safetensors(str(files[0]), shards[0], metadata={"format": "mlx"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            mx.save_safetensors(str(out / name), shard, metadata={"format": "mlx"})
            weight_map.update({k: name for k in shard})
            files.append(out / name)
        with open(out / INDEX_FILE, "w") as f:
            json.dump({"metadata": {"total_size": sum(v.nbytes for v in weights.values())},
                       "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    cfg = config if config is not None else model.cfg
    cfg_dict = dict(cfg.to_dict() if isinstance(cfg, LmConfig) else cfg)
    q = quantized_modules(model)
    if q:
        paths = sorted(set(q) | set(quantizable_modules(model)))
        cfg_dict["quantization"] = spec_from_modules(q, paths)
    else:
        cfg_dict.pop("quantization", None)
    with open(out / "config.json", "w") as f:
        json.dump(cfg_dict, f, indent=2)
    return files
