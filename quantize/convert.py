"""Streaming conversion of an LM checkpoint to a bf16 / quantized MLX model directory.

Pipeline: source files are opened lazily (`mx.load`), PyTorch key names are mapped to Kyutai's MLX
names (`moshi_mlx.weights.lm`), an already-quantized source is dequantized, every tensor is checked
against the shapes of `Lm(cfg)` (built lazily, never evaluated), and each output tensor is described as
a lazy expression (cast, or `mx.quantize`). `stream_save` then evaluates and writes them one at a
time: peak memory is about one source tensor plus its converted form, never the model.

Output directory: `config.json` (the source's LM kwargs and hub keys, `moshi_name` naming the
weights, an mlx-lm `"quantization"` block), the weights (Kyutai's file names for bf16/q8/q4, so
their `moshi_mlx` loads them; shards plus `model.safetensors.index.json` past `max_shard_bytes`),
and Mimi, the tokenizer and a TTS repository's `voices/` copied from the source (copies, not links:
the output stands alone).

TTS repositories (Kyutai's layout: `model_type` "tts", the LM in PyTorch or MLX names) convert the
same way; their conditioners stay float and keep the dtype they are stored in (float32 in Kyutai's
file), as `cli.py speak --quant` leaves them, so both paths compute with the same tensors.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from moshi_mlx.checkpoint.layout import INDEX_FILE, LM_FILES
from moshi_mlx.checkpoint.safetensors_io import load_lazy, nbytes, write_weights
from moshi_mlx.checkpoint.spec import params_for, with_block
from moshi_mlx.config import LmConfig, moshi_v0_1
from moshi_mlx.loading import DTYPES
from moshi_mlx.quant import KEEP_FLOAT, quantizable_modules
from moshi_mlx.weights.lm import detect_format, map_lm_torch

from .recipes import QBits, Recipe, kyutai_compatible, plan
from .source import Source, SourceError

log = logging.getLogger(__name__)

DEFAULT_SHARD_BYTES = 5 << 30  # mlx-lm's MAX_FILE_SIZE_GB


@dataclass
class Plan:
    """A conversion described lazily: nothing has been read from the source yet."""

    cfg: LmConfig
    recipe: Recipe
    decisions: dict[str, QBits]  # quantizable module path -> (bits, group) or None
    tensors: dict[str, mx.array]  # output name -> lazy array
    order: list[str]
    source: Source
    source_format: str  # "mlx", "pytorch", "mlx-quantized"

    @property
    def total_bytes(self) -> int:
        return sum(nbytes(self.tensors[n]) for n in self.order)


@dataclass
class Result:
    out_dir: Path
    weight_files: list[Path]
    config_path: Path
    recipe: Recipe
    decisions: dict[str, QBits]
    kyutai_compatible: bool
    weight_bytes: int
    seconds: float
    copied: list[Path] = field(default_factory=list)


def _dequantize(weights: dict[str, mx.array], expected: dict[str, mx.array],
                block: dict[str, Any] | None) -> dict[str, mx.array]:
    """Lazily dequantize `X.weight/scales/biases` triplets; bits/group come from the config block
    when it has them, else from the float shape the model expects (`in_features`)."""
    out = dict(weights)
    for name in [n for n in weights if n.endswith(".scales")]:
        path = name[: -len(".scales")]
        wq, scales = out.pop(f"{path}.weight"), out.pop(name)
        biases = out.pop(f"{path}.biases")
        if params_for(block, path) is not None:
            bits, gs = params_for(block, path)  # type: ignore[misc]
        else:
            exp = expected.get(f"{path}.weight")
            if exp is None:
                raise SourceError(f"quantized tensor {path} is not part of the model")
            in_f = exp.shape[-1]
            bits, gs = wq.shape[-1] * 32 // in_f, in_f // scales.shape[-1]
        out[f"{path}.weight"] = mx.dequantize(wq, scales, biases, gs, bits)
    return out


def _order_key(name: str) -> tuple[str, int]:
    # Depformer slices cut from one PyTorch tensor are written one after another, so each source
    # tensor is read once and released before the next.
    m = re.match(r"^depformer\.slices\.(\d+)\.(.*)$", name)
    return ("depformer." + m.group(2), int(m.group(1))) if m else (name, -1)


def prepare(source: Source, recipe: Recipe, dtype: str = "bfloat16") -> Plan:
    """Describe the conversion of `source` with `recipe` (lazy; validates names and shapes)."""
    from moshi_mlx.models.lm import Lm

    src_cfg = dict(source.config) if source.config else moshi_v0_1().to_dict()
    src_block = src_cfg.pop("quantization", None)
    src_cfg.pop("quantization_config", None)
    cfg = LmConfig.from_dict(src_cfg)
    model = Lm(cfg)  # lazy random init, never evaluated: only shapes and module types are used
    expected = dict(tree_flatten(model.parameters()))
    model_modules = quantizable_modules(model)
    del model

    weights = load_lazy(source.weight_files)
    fmt = "mlx"
    if detect_format(weights) == "torch":
        fmt = "pytorch"  # the map only renames, slices and reshapes: it stays lazy
        weights = map_lm_torch(weights, cfg)
    if any(n.endswith(".scales") for n in weights):
        fmt = "mlx-quantized"
        log.warning("source is already quantized: converting from its dequantized weights")
        weights = _dequantize(weights, expected, src_block)
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    bad = sorted(n for n in set(expected) & set(weights) if weights[n].shape != expected[n].shape)
    if missing or unexpected or bad:
        raise SourceError(
            "source weights do not match the LM config: "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:8]} ({len(unexpected)}), "
            f"mis-shaped {[(n, weights[n].shape, expected[n].shape) for n in bad[:8]]}"
        )
    decisions = plan(recipe, ((p, m.weight.shape[-1]) for p, m in model_modules.items()))
    out_dtype = DTYPES[dtype]
    scale_dtype = DTYPES[recipe.scales] if recipe.scales else out_dtype
    tensors: dict[str, mx.array] = {}
    for name in sorted(weights, key=_order_key):
        w = weights.pop(name)  # the plan must be the only holder of source arrays
        path = name.rsplit(".", 1)[0]
        q = decisions.get(path) if name.endswith(".weight") else None
        if q is None:
            keep = KEEP_FLOAT.match(name) and w.dtype == mx.float32
            tensors[name] = w if keep else w.astype(out_dtype)
            continue
        bits, gs = q
        if scale_dtype == out_dtype:
            # Quantize from the output dtype, as Kyutai does (model cast to bf16 first): scales
            # and biases come out bf16, the layout their loader expects.
            wq, scales, biases = mx.quantize(w.astype(out_dtype), group_size=gs, bits=bits)
        else:  # from float32, then round scales and biases once (no float16 range issue)
            wq, scales, biases = mx.quantize(w.astype(mx.float32), group_size=gs, bits=bits)
            scales, biases = scales.astype(scale_dtype), biases.astype(scale_dtype)
        tensors[f"{path}.biases"], tensors[f"{path}.scales"], tensors[name] = biases, scales, wq
    order = sorted(tensors, key=_order_key)
    return Plan(cfg, recipe, decisions, tensors, order, source, fmt)


def _out_config(plan: Plan, weights_name: str, copied: dict[str, str]) -> dict[str, Any]:
    # Every LM field written out (not only the source's): Kyutai's loader reads them all.
    cfg = plan.cfg.to_dict()
    cfg["moshi_name"] = weights_name
    cfg.update(copied)
    return with_block(cfg, plan.decisions)


def write(
    plan: Plan,
    out_dir: str | Path,
    max_shard_bytes: int | None = None,
    on_tensor: Callable[[str, int], None] | None = None,
) -> Result:
    """Write the planned tensors to `out_dir` (see module docstring); consumes `plan.tensors`."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    if any(f.resolve().parent == out.resolve() for f in plan.source.weight_files):
        raise ValueError(f"OUT_DIR {str(out)!r} holds the source weights: choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    compatible = kyutai_compatible(plan.recipe, plan.decisions)
    if plan.cfg.extra.get("model_type") == "tts":
        compatible = False
        log.info("a TTS model: Kyutai's moshi_mlx loads only its PyTorch release (and quantizes "
                 "at load); ours loads this output (`cli.py speak --model-dir`)")
    elif plan.recipe.kyutai_file and not compatible:
        log.warning("recipe %s: some modules cannot use its group size; Kyutai's moshi_mlx will "
                    "not load this output (ours does)", plan.recipe.name)
    if max_shard_bytes is None and not plan.recipe.kyutai_file:
        max_shard_bytes = DEFAULT_SHARD_BYTES
    meta = {"format": "mlx", "recipe": plan.recipe.name}
    files = write_weights(out, plan.tensors, plan.recipe.kyutai_file or LM_FILES["bf16"],
                          plan.order, max_shard_bytes, meta, on_tensor)
    total = sum(f.stat().st_size for f in files)
    copied: dict[str, str] = {}
    copied_paths = []
    for key, src in plan.source.extras.items():
        dst = out / src.name
        if src.resolve() != dst.resolve():
            shutil.copy2(src, dst)
        copied[key] = src.name
        copied_paths.append(dst)
    for folder in plan.source.folders:
        dst = out / folder.name
        if folder.resolve() != dst.resolve():
            shutil.copytree(folder, dst, dirs_exist_ok=True)
        copied_paths.append(dst)
    weights_name = files[0].name if len(files) == 1 else INDEX_FILE
    cfg_path = out / "config.json"
    cfg_path.write_text(json.dumps(_out_config(plan, weights_name, copied), indent=2))
    return Result(out, files, cfg_path, plan.recipe, plan.decisions, compatible, total,
                  time.perf_counter() - t0, copied_paths)
