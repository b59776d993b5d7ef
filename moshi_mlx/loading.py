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

`dtype` picks the compute dtype (`lm.act_dtype`: embeddings are cast to it, so it flows through):
- "float32": full float32 compute: unquantized tensors are cast to float32; quantized weights
  stay packed (with their scales/biases as stored) and run with float32 activations. On the CPU
  the float32 Linear weights are also stored column-major (`moshi_mlx.nn.cpu_linear`: same names,
  shapes and values, ~2x faster matrix-vector products with MLX's reference BLAS).
- "bfloat16" / "float16": unquantized tensors cast to it, activations in it.
- "stored": compute in the dtype the weights are stored in (Kyutai's files: bf16).
- None or "auto" (default): chosen per platform from measurements (reference.md section 11,
  `benchmarks/bench_lm.py`); parameters stay exactly as stored (the model saves and reports as
  it was loaded):
  * Metal (Apple GPU): "stored", i.e. bf16, the fast path there.
  * CPU: float32 activations. MLX's CPU quantized matmul is ~8x slower with bf16 activations
    than with float32 ones (float16: 40x), so quantized weights stay packed and get float32
    inputs (with bf16 activations, e.g. "stored", our quantized Linears upcast their inputs
    for the kernel anyway: `moshi_mlx.nn.cpu_linear.QuantizedLinear`). bf16 Linear weights get
    a float32 column-major compute copy outside the parameter tree (`moshi_mlx.nn.cpu_linear`;
    a column-major float32 matvec is ~1.7x faster than a bf16 one here). Memory cost: 4 bytes
    per unquantized Linear weight (embeddings get none), measured 192 -> 400 MB for the dim-512
    benchmark model and 2.5 -> 6.3 GB for the 7B shape with one temporal layer; quantized
    models do not grow. If that would take more than half the machine's
    RAM (the full 7B in bf16 on a 24 GB machine), "stored" is used instead.
  * Opt-in, CPU, quantized models with RAM to spare:
    `moshi_mlx.nn.cpu_linear.add_compute_copies(lm, dequantize=True)` after loading computes
    quantized Linears from their exact dequantized float32 weights (small config: q8 63 -> 35,
    q4 68 -> 38 CPU ms per frame) at 4 bytes per weight.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .checkpoint.layout import LM_FILES, lm_weight_files
from .checkpoint.safetensors_io import write_weights
from .checkpoint.spec import with_block
from .config import LmConfig, moshi_v0_1
from .models.lm import Lm
from .nn.cpu_linear import add_compute_copies, compute_copy_bytes, relayout_linears
from .quant import (
    check_spec_matches,
    detect_quantization,
    model_decisions,
    quantize_lm,
    quantized_modules,
)
from .weights.lm import detect_format, map_lm_torch

log = logging.getLogger(__name__)

DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
DTYPE_CHOICES = (None, "auto", "stored", *DTYPES)
AUTO_RAM_FRACTION = 0.5  # "auto" upcasts to float32 only if the model then fits in this much RAM
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


def _is_float(a: mx.array) -> bool:
    return mx.issubdtype(a.dtype, mx.floating)


def cast_weights(weights: dict[str, Any], model: nn.Module, dtype: mx.Dtype) -> dict[str, Any]:
    """Cast unquantized float tensors to `dtype`; packed weights and their scales/biases stay."""
    qpaths = set(quantized_modules(model))
    out = {}
    for k, v in weights.items():
        module = k.rsplit(".", 1)[0]
        out[k] = v if module in qpaths or not _is_float(v) else v.astype(dtype)
    return out


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def auto_plan(model: nn.Module) -> str:
    """What `dtype=None` / "auto" does here: "stored" or "float32-acts" (module docstring)."""
    if mx.default_device() != mx.cpu:
        return "stored"
    size = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    extra = compute_copy_bytes(model)
    ram = _ram_bytes()
    if ram is not None and size + extra > AUTO_RAM_FRACTION * ram:
        log.info("dtype auto: float32 compute copies would need %.1f GB more (model %.1f GB, RAM "
                 "%.1f GB); computing as stored", extra / 1e9, size / 1e9, ram / 1e9)
        return "stored"
    return "float32-acts"


def build_lm(weights: dict[str, Any], cfg: LmConfig, dtype: str | None = None,
             source: str = "checkpoint") -> Lm:
    """Weights (either naming) + config -> evaluated `Lm` (strict)."""
    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {list(DTYPE_CHOICES)}, got {dtype!r}")
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
    if dtype in DTYPES:
        weights = cast_weights(weights, model, DTYPES[dtype])
        model.act_dtype = DTYPES[dtype]
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())
    if dtype in (None, "auto"):
        plan = auto_plan(model)
        log.info("compute dtype auto (%s): %s", mx.default_device(), plan)
        if plan == "float32-acts":
            model.act_dtype = mx.float32
            add_compute_copies(model)
            relayout_linears(model)
    elif dtype == "float32":
        relayout_linears(model)
    return model


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
