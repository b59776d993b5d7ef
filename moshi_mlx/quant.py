"""Quantize Moshi's LM as a spec says, and read the spec back from a checkpoint's tensors.

The spec and its `config.json` block are defined in `moshi_mlx.checkpoint.spec`. Quantizable
modules are those with `to_quantized` (Linear and Embedding, including the TTS `FactoredEmbedding`
tables, which `nn.quantize` skips because they have children: `quantize_lm` converts them itself).

`uniform_decisions` is the one rule for "q8" / "q4" at load and in the offline recipes: every
quantizable module, except the TTS conditioners (`KEEP_FLOAT`) and modules whose input width is not
a multiple of the group size (MLX cannot quantize them).

Which modules are quantized in a checkpoint is read from the tensors themselves
(`detect_quantization`: bits = packed width * 32 / in_features, group size = in_features /
scales width), never from a file name. Quantized embeddings keep PyTorch's zero output for id -1
(`moshi_mlx.nn.embedding.QuantizedScaledEmbedding`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from .checkpoint.spec import (
    VALID_BITS,
    Block,
    Decisions,
    QParams,
    block_from_decisions,
    params_for,
    validate_block,
)

log = logging.getLogger(__name__)

QUANTIZED_TYPES = (nn.QuantizedLinear, nn.QuantizedEmbedding)
Spec = Block  # the "quantization" block
# Presets of `--quant` at load: Kyutai's q8 (group 64) and q4 (group 32) files' parameters.
PRESETS = {"q8": QParams(8, 64), "q4": QParams(4, 32)}
# The TTS conditioners (LUT tables, output_proj of the speaker / cfg / control inputs) stay float:
# they run once per utterance, hold ~0.1% of tts-1.6b's weights, and the cfg LUT is 16 wide (no
# group size divides it). PyTorch moshi keeps them float32 even in its bf16 checkpoints.
KEEP_FLOAT = re.compile(r"^condition_provider\.")


def uniform_decisions(model: nn.Module, params: QParams) -> Decisions:
    """Every quantizable module of `model` -> `params`, or None where it stays float (`KEEP_FLOAT`,
    or an input width that `params.group_size` does not divide: logged)."""
    out: Decisions = {}
    for path, m in quantizable_modules(model).items():
        width = m.weight.shape[-1]
        if KEEP_FLOAT.match(path):
            out[path] = None
        elif width % params.group_size:
            log.info("%s stays float: its width %d is not a multiple of group size %d",
                     path, width, params.group_size)
            out[path] = None
        else:
            out[path] = params
    return out


def quantizable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Path -> module for every not-yet-quantized module that `nn.quantize` could convert."""
    return {
        p: m for p, m in model.named_modules()
        if p and hasattr(m, "to_quantized") and not isinstance(m, QUANTIZED_TYPES)
    }


def quantized_modules(model: nn.Module) -> dict[str, QParams]:
    """Path -> `QParams` of every quantized module of `model`."""
    return {
        p: QParams(m.bits, m.group_size)
        for p, m in model.named_modules() if isinstance(m, QUANTIZED_TYPES)
    }


def model_decisions(model: nn.Module) -> Decisions:
    """Every quantizable or quantized module of `model` -> its params (None: float)."""
    out: Decisions = dict.fromkeys(quantizable_modules(model))
    out.update(quantized_modules(model))
    return out


def _infer_params(path: str, module: nn.Module, weights: dict[str, Any]) -> QParams:
    w, scales = weights[f"{path}.weight"], weights[f"{path}.scales"]
    in_features = module.weight.shape[-1]
    packed, n_groups = w.shape[-1], scales.shape[-1]
    bits, rem = divmod(packed * 32, in_features)
    if rem or bits not in VALID_BITS or w.dtype != mx.uint32:
        raise ValueError(
            f"{path}.weight {w.dtype} {tuple(w.shape)} is not a valid quantization of "
            f"in_features={in_features} (uint32 with {VALID_BITS} bits expected)"
        )
    group_size, rem = divmod(in_features, n_groups)
    if rem or f"{path}.biases" not in weights:
        raise ValueError(
            f"{path}.scales {tuple(scales.shape)} does not match in_features={in_features}, "
            "or affine biases are missing"
        )
    return QParams(bits, group_size)


def detect_quantization(weights: dict[str, Any], model: nn.Module) -> Spec | None:
    """The "quantization" block that describes `weights` for the (unquantized) `model`.

    A module counts as quantized when `{path}.scales` is present; None if no module is.
    """
    modules = quantizable_modules(model)
    decisions: Decisions = dict.fromkeys(modules)
    decisions.update({p: _infer_params(p, m, weights) for p, m in modules.items()
                      if f"{p}.scales" in weights})
    return block_from_decisions(decisions)


def quantize_lm(model: nn.Module, spec: Spec) -> nn.Module:
    """Quantize `model` in place as `spec` says (current weights are quantized; for loading a
    checkpoint, call on a fresh model and then load the quantized tensors)."""
    validate_block(spec)

    def predicate(path: str, module: nn.Module) -> bool | dict:
        if not hasattr(module, "to_quantized") or isinstance(module, QUANTIZED_TYPES):
            return False
        params = params_for(spec, path)
        if params is None:
            return False
        dims = module.weight.shape[-1]
        if dims % params.group_size:
            raise ValueError(
                f"{path}: in_features {dims} is not a multiple of group_size {params.group_size}"
            )
        return params.as_block()

    # Modules that share one weight array (the depformer slices of one weight set, as mapped
    # from PyTorch names) keep sharing their quantized arrays: quantized once, not per slice.
    originals = {p: m.weight for p, m in quantizable_modules(model).items()}
    # Modules with children (FactoredEmbedding) first: `nn.quantize` only visits leaves, and
    # their children, carried over unchanged, are then quantized as leaves.
    leaves = {p for p, _ in tree_flatten(model.leaf_modules(), is_leaf=nn.Module.is_module)}
    swaps = []
    for path, m in quantizable_modules(model).items():
        if path not in leaves and (params := predicate(path, m)):
            swaps.append((path, m.to_quantized(**params)))
    if swaps:
        model.update_modules(tree_unflatten(swaps))
    nn.quantize(model, group_size=int(spec["group_size"]), bits=int(spec["bits"]),
                class_predicate=predicate)
    _share_quantized(model, originals)
    return model


def _share_quantized(model: nn.Module, originals: dict[str, mx.array]) -> None:
    """Give modules whose float weights were one array the first one's quantized arrays (the
    others' are lazy and never evaluated)."""
    modules = dict(model.named_modules())
    first: dict[int, nn.Module] = {}
    for path, w in originals.items():  # `originals` keeps every array alive: ids are unique
        m = modules[path]
        if not isinstance(m, QUANTIZED_TYPES):
            continue
        src = first.setdefault(id(w), m)
        if src is not m and (src.bits, src.group_size) == (m.bits, m.group_size):
            m.update({k: src[k] for k in ("weight", "scales", "biases") if k in src})


def check_spec_matches(spec: Spec, detected: Spec | None, model: nn.Module) -> None:
    """Raise if a config's block disagrees with what the tensors show, module by module.

    mlx-lm semantics: an explicit per-module entry (params or false) must match the tensors;
    modules the block does not name follow their tensors (mlx-lm infers their params from the
    stored shapes), so the global params are only the default for writers.
    """
    validate_block(spec)
    bad = []
    for p in quantizable_modules(model):
        if p not in spec:
            continue
        have, want = params_for(detected, p), params_for(spec, p)
        if want != have:
            bad.append(f"{p}: config says {_show(want)}, tensors say {_show(have)}")
    if bad:
        listing = "\n  ".join(bad[:40]) + (f"\n  ... and {len(bad) - 40} more" if len(bad) > 40 else "")
        raise ValueError(f"the config's quantization block does not match the weights:\n  {listing}")


def _show(q: QParams | None) -> str:
    return str(q.as_block()) if q is not None else "unquantized"
