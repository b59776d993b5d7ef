"""Mimi key map: released PyTorch checkpoint names <-> our (= Kyutai MLX) names. Pure, no I/O.

The released `tokenizer-e351c8d8-checkpoint125.safetensors` uses PyTorch module paths
(`encoder.model.{idx}...`, `_codebook`, `in_proj_weight`, conv weights `[out, in, k]`, transposed conv
weights `[in, out/groups, k]`). Our modules use Kyutai's MLX names and layouts (Kyutai's `moshi_mlx/models/mimi.py`):

- `encoder.model.{idx}` -> `encoder.init_conv1d` / `layers.{i}.residuals.{j}` / `layers.{i}.downsample`
  / `final_conv1d`, decoder likewise with `layers.{i}.upsample`; indices follow the `nn.Sequential`
  built by `SEANetEncoder` / `SEANetDecoder` (ELUs take indices too), for any `n_residual_layers`.
- residual `block.1` / `block.3` -> `block.0` / `block.1` (the ELUs are 0 and 2).
- `self_attn.in_proj_weight` (or moshi 0.2's `in_projs.0.weight`) -> `self_attn.in_proj.weight`,
  `out_projs.0.weight` -> `out_proj.weight`, `linear1/2` -> `gating.linear1/2`.
- `_codebook._initialized` -> `codebook.initialized` (leading underscores dropped).
- conv weights swap the last two axes (`[out, in, k]` -> `[out, k, in]`); transposed conv weights are
  transposed (1, 2, 0) (`[in, out/g, k]` -> `[out/g, k, in]`).

`map_mimi_torch` raises `KeyError` on any name it does not know, so together with
`load_weights(strict=True)` the key sets must match exactly. `map_mimi_to_torch` is the inverse
(used to write tiny test checkpoints in the released layout).
"""

from __future__ import annotations

import re
from typing import Any

from ..config import MimiConfig

_CONV = "conv"  # [out, in, k] <-> [out, k, in]
_CONVTR = "convtr"  # [in, out/g, k] <-> [out/g, k, in]


def _seanet_names(cfg: MimiConfig) -> dict[str, str]:
    """PyTorch `encoder.model.{idx}` / `decoder.model.{idx}` prefixes -> our module prefixes."""
    out: dict[str, str] = {}
    n_res = cfg.n_residual_layers
    n = len(cfg.ratios)
    out["encoder.model.0."] = "encoder.init_conv1d."
    out["decoder.model.0."] = "decoder.init_conv1d."
    for i in range(n):
        base = 1 + i * (n_res + 2)
        for j in range(n_res):
            out[f"encoder.model.{base + j}."] = f"encoder.layers.{i}.residuals.{j}."
            out[f"decoder.model.{base + 2 + j}."] = f"decoder.layers.{i}.residuals.{j}."
        out[f"encoder.model.{base + n_res + 1}."] = f"encoder.layers.{i}.downsample."
        out[f"decoder.model.{base + 1}."] = f"decoder.layers.{i}.upsample."
    final = 2 + n * (n_res + 2)
    out[f"encoder.model.{final}."] = "encoder.final_conv1d."
    out[f"decoder.model.{final}."] = "decoder.final_conv1d."
    return out


_SIMPLE = [
    (re.compile(r"\.block\.1\."), ".block.0."),
    (re.compile(r"\.block\.3\."), ".block.1."),
    (re.compile(r"\.self_attn\.in_proj_weight$"), ".self_attn.in_proj.weight"),
    (re.compile(r"\.self_attn\.in_projs\.0\.weight$"), ".self_attn.in_proj.weight"),
    (re.compile(r"\.self_attn\.out_projs\.0\.weight$"), ".self_attn.out_proj.weight"),
    (re.compile(r"\.linear([12])\.weight$"), r".gating.linear\1.weight"),
    (re.compile(r"\._codebook\._initialized$"), ".codebook.initialized"),
    (re.compile(r"\._codebook\."), ".codebook."),
]


def torch_key_to_ours(key: str, cfg: MimiConfig) -> tuple[str, str | None]:
    """(our key, layout transform or None) for one released PyTorch key; KeyError if unknown."""
    new = key
    if key.startswith(("encoder.model.", "decoder.model.")):
        idx = key.split(".")[2]
        prefix = ".".join(key.split(".")[:3]) + "."
        table = _seanet_names(cfg)
        if prefix not in table:
            raise KeyError(f"unknown SEANet index {idx} in {key!r}")
        new = table[prefix] + key[len(prefix):]
        if ".residuals." in new and not re.search(r"\.block\.[13]\.conv\.conv\.", new):
            raise KeyError(f"unexpected residual block key {key!r}")
    elif not key.startswith(
        ("encoder_transformer.", "decoder_transformer.", "quantizer.", "downsample.", "upsample.")
    ):
        raise KeyError(f"not a Mimi key: {key!r}")
    for pat, rep in _SIMPLE:
        new = pat.sub(rep, new)
    transform = None
    if new.endswith(".convtr.weight"):
        transform = _CONVTR
    elif new.endswith((".conv.weight", ".input_proj.weight", ".output_proj.weight")):
        transform = _CONV
    return new, transform


def _apply(v: Any, transform: str | None, inverse: bool) -> Any:
    if transform == _CONV:
        return v.swapaxes(-1, -2)
    if transform == _CONVTR:
        return v.transpose(2, 0, 1) if inverse else v.transpose(1, 2, 0)
    return v


def map_mimi_torch(weights: dict[str, Any], cfg: MimiConfig) -> dict[str, Any]:
    """Released PyTorch Mimi weights (numpy or mx arrays) -> our names and layouts."""
    out: dict[str, Any] = {}
    for k, v in weights.items():
        new, transform = torch_key_to_ours(k, cfg)
        if new in out:
            raise KeyError(f"two checkpoint keys map onto {new!r}")
        out[new] = _apply(v, transform, inverse=False)
    return out


def map_mimi_to_torch(weights: dict[str, Any], cfg: MimiConfig) -> dict[str, Any]:
    """Inverse of `map_mimi_torch` (released names: `in_proj_weight`, `_codebook`, ...)."""
    inverse = {ours: pt for pt, ours in _seanet_names(cfg).items()}
    out: dict[str, Any] = {}
    for k, v in weights.items():
        pt = k
        for ours, prefix in inverse.items():
            if k.startswith(ours):
                pt = prefix + k[len(ours):]
                pt = pt.replace(".block.1.", ".block.3.").replace(".block.0.", ".block.1.")
                break
        pt = pt.replace(".self_attn.in_proj.weight", ".self_attn.in_proj_weight")
        pt = re.sub(r"\.gating\.linear([12])\.weight$", r".linear\1.weight", pt)
        pt = pt.replace(".codebook.initialized", "._codebook._initialized")
        pt = pt.replace(".codebook.", "._codebook.")
        back, transform = torch_key_to_ours(pt, cfg)
        if back != k:
            raise KeyError(f"cannot invert key {k!r} (got {pt!r} -> {back!r})")
        out[pt] = _apply(v, transform, inverse=True)
    return out


def is_torch_layout(keys: Any) -> bool:
    """True when the key set uses released PyTorch names (`encoder.model.0...`)."""
    return any(k.startswith(("encoder.model.", "decoder.model.")) for k in keys)
