"""Quantize Moshi's LM as a spec says, and read the spec back from a checkpoint's tensors.

The spec and its `config.json` block are defined in `moshi_mlx.checkpoint.spec`. Quantizable
modules are those with `to_quantized` (Linear and Embedding).

Which modules are quantized in a checkpoint is read from the tensors themselves
(`detect_quantization`: bits = packed width * 32 / in_features, group size = in_features /
scales width), never from a file name. Quantized embeddings keep PyTorch's zero output for id -1
(`moshi_mlx.nn.embedding.QuantizedScaledEmbedding`).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .checkpoint.spec import (
    VALID_BITS,
    Block,
    Decisions,
    QParams,
    block_from_decisions,
    params_for,
    validate_block,
)

QUANTIZED_TYPES = (nn.QuantizedLinear, nn.QuantizedEmbedding)
Spec = Block  # the "quantization" block


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

    nn.quantize(model, group_size=int(spec["group_size"]), bits=int(spec["bits"]),
                class_predicate=predicate)
    return model


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
