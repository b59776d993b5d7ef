"""Quantization spec (mlx-lm's `"quantization"` block) <-> per-module parameters, detect, apply.

The block follows mlx-lm's `config.json` convention:

    {"group_size": 32, "bits": 4,                              # default for quantizable modules
     "depformer.slices.0.linear_out": {"group_size": 64, "bits": 8},   # per-module override
     "out_norm": false}                                        # keep this module unquantized

Keys are exact module paths (as in mlx-lm; no prefix matching). Quantizable modules are those with
`to_quantized` (Linear and Embedding); quantization is affine, as in Kyutai's q4 (group 32) and q8
(group 64) files, whose `weight` is uint32 [out, in*bits/32] with `scales`/`biases` [out, in/G].

Which modules are quantized in a checkpoint is read from the tensors themselves
(`detect_quantization`: bits = packed width * 32 / in_features, group size = in_features /
scales width), never from a file name. Quantized embeddings keep PyTorch's zero output for id -1
(`moshi_mlx.nn.embedding.QuantizedScaledEmbedding`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import mlx.core as mx
import mlx.nn as nn

VALID_BITS = (2, 3, 4, 5, 6, 8)
QUANTIZED_TYPES = (nn.QuantizedLinear, nn.QuantizedEmbedding)

Spec = dict[str, Any]  # the "quantization" block


def quantizable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Path -> module for every not-yet-quantized module that `nn.quantize` could convert."""
    return {
        p: m for p, m in model.named_modules()
        if p and hasattr(m, "to_quantized") and not isinstance(m, QUANTIZED_TYPES)
    }


def quantized_modules(model: nn.Module) -> dict[str, dict[str, int]]:
    """Path -> {"group_size", "bits"} of every quantized module of `model`."""
    return {
        p: {"group_size": m.group_size, "bits": m.bits}
        for p, m in model.named_modules() if isinstance(m, QUANTIZED_TYPES)
    }


def _infer_params(path: str, module: nn.Module, weights: dict[str, Any]) -> dict[str, int]:
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
    return {"group_size": group_size, "bits": bits}


def detect_quantization(weights: dict[str, Any], model: nn.Module) -> Spec | None:
    """The "quantization" block that describes `weights` for the (unquantized) `model`.

    A module counts as quantized when `{path}.scales` is present; None if no module is.
    """
    modules = quantizable_modules(model)
    found = {p: _infer_params(p, m, weights) for p, m in modules.items() if f"{p}.scales" in weights}
    if not found:
        return None
    return spec_from_modules(found, list(modules))


def spec_from_modules(quantized: dict[str, dict[str, int]], all_paths: list[str]) -> Spec:
    """Compact block: the most common (group_size, bits) as default, the rest as overrides."""
    counts = Counter((p["group_size"], p["bits"]) for p in quantized.values())
    (g, b), _ = counts.most_common(1)[0]
    spec: Spec = {"group_size": g, "bits": b}
    for path in all_paths:
        params = quantized.get(path)
        if params is None:
            spec[path] = False
        elif (params["group_size"], params["bits"]) != (g, b):
            spec[path] = dict(params)
    return spec


def module_params(spec: Spec, path: str) -> dict[str, int] | None:
    """Params a module at `path` gets under `spec` (None = not quantized)."""
    override = spec.get(path)
    if override is False:
        return None
    if isinstance(override, dict):
        return {"group_size": int(override.get("group_size", spec["group_size"])),
                "bits": int(override.get("bits", spec["bits"]))}
    return {"group_size": int(spec["group_size"]), "bits": int(spec["bits"])}


def validate_spec(spec: Spec) -> None:
    for key in ("group_size", "bits"):
        if key not in spec:
            raise ValueError(f"quantization block needs a global {key!r}: {spec}")
    mode = spec.get("mode", "affine")
    if mode != "affine":
        raise ValueError(f"only affine quantization is supported, got mode={mode!r}")
    for path, v in spec.items():
        if path in ("group_size", "bits", "mode"):
            continue
        if v is not False and not isinstance(v, dict):
            raise ValueError(f"quantization override for {path!r} must be a dict or false, got {v!r}")
    for path in [""] + [p for p, v in spec.items() if isinstance(v, dict)]:
        if module_params(spec, path)["bits"] not in VALID_BITS:
            raise ValueError(f"quantization bits for {path or 'the default'} must be in {VALID_BITS}")


def quantize_lm(model: nn.Module, spec: Spec) -> nn.Module:
    """Quantize `model` in place as `spec` says (current weights are quantized; for loading a
    checkpoint, call on a fresh model and then load the quantized tensors)."""
    validate_spec(spec)

    def predicate(path: str, module: nn.Module) -> bool | dict:
        if not hasattr(module, "to_quantized") or isinstance(module, QUANTIZED_TYPES):
            return False
        params = module_params(spec, path)
        if params is None:
            return False
        dims = module.weight.shape[-1]
        if dims % params["group_size"]:
            raise ValueError(
                f"{path}: in_features {dims} is not a multiple of group_size {params['group_size']}"
            )
        return params

    nn.quantize(model, group_size=int(spec["group_size"]), bits=int(spec["bits"]),
                class_predicate=predicate)
    return model


def check_spec_matches(spec: Spec, detected: Spec | None, model: nn.Module) -> None:
    """Raise if a config's block disagrees with what the tensors show, module by module.

    mlx-lm semantics: an explicit per-module entry (params or false) must match the tensors;
    modules the block does not name follow their tensors (mlx-lm infers their params from the
    stored shapes), so the global params are only the default for writers.
    """
    validate_spec(spec)
    bad = []
    for p in quantizable_modules(model):
        if p not in spec:
            continue
        have = module_params(detected, p) if detected else None
        want = module_params(spec, p)
        if want != have:
            bad.append(f"{p}: config says {want or 'unquantized'}, tensors say {have or 'unquantized'}")
    if bad:
        listing = "\n  ".join(bad[:40]) + (f"\n  ... and {len(bad) - 40} more" if len(bad) > 40 else "")
        raise ValueError(f"the config's quantization block does not match the weights:\n  {listing}")
