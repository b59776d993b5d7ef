"""The quantization spec: per-module (bits, group size) and its `config.json` `"quantization"` block.

The block follows mlx-lm's convention:

    {"group_size": 32, "bits": 4,                              # default for quantizable modules
     "depformer.slices.0.linear_out": {"group_size": 64, "bits": 8},   # per-module override
     "out_norm": false}                                        # keep this module unquantized

Keys are exact module paths (as in mlx-lm; no prefix matching). Quantization is affine, as in
Kyutai's q4 (group 32) and q8 (group 64) files, whose `weight` is uint32 [out, in*bits/32] with
`scales`/`biases` [out, in/G].

In memory a spec is `Decisions`: module path -> `QParams(bits, group_size)`, or None for a module
kept in float. `block_from_decisions` is the one writer of the block (global params = the most
common pair; a tie goes to fewer bits, then the smaller group, so the result does not depend on
module order) and `decisions_from_block` / `params_for` the one reader.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

VALID_BITS = (2, 3, 4, 5, 6, 8)
Block = dict[str, Any]  # the "quantization" block of config.json


class QParams(NamedTuple):
    """Affine quantization of one module (equal to the plain tuple `(bits, group_size)`)."""

    bits: int
    group_size: int

    def as_block(self) -> dict[str, int]:
        return {"group_size": int(self.group_size), "bits": int(self.bits)}


Decisions = dict[str, "QParams | None"]


def block_from_decisions(decisions: Mapping[str, tuple[int, int] | None]) -> Block | None:
    """The compact block for `decisions` (every quantizable module listed): the most common
    params as the default, the others as overrides, `false` for float modules; None if none is
    quantized."""
    counts: dict[QParams, int] = {}
    for q in decisions.values():
        if q is not None:
            counts[QParams(*q)] = counts.get(QParams(*q), 0) + 1
    if not counts:
        return None
    default = max(counts, key=lambda q: (counts[q], -q.bits, -q.group_size))
    block: Block = default.as_block()
    for path in sorted(decisions):
        q = decisions[path]
        if q is None:
            block[path] = False
        elif QParams(*q) != default:
            block[path] = QParams(*q).as_block()
    return block


def params_for(block: Mapping[str, Any] | None, path: str) -> QParams | None:
    """Params a module at `path` gets under `block` (None: not quantized)."""
    if not block:
        return None
    override = block.get(path)
    if override is False:
        return None
    if isinstance(override, dict):
        return QParams(int(override.get("bits", block["bits"])),
                       int(override.get("group_size", block["group_size"])))
    return QParams(int(block["bits"]), int(block["group_size"]))


def decisions_from_block(block: Mapping[str, Any] | None, paths: Iterable[str]) -> Decisions:
    """Inverse of `block_from_decisions` for the given quantizable module paths."""
    return {p: params_for(block, p) for p in paths}


def validate_block(block: Mapping[str, Any]) -> None:
    """Raise ValueError unless `block` is a well-formed affine mlx-lm quantization block."""
    for key in ("group_size", "bits"):
        if key not in block:
            raise ValueError(f"quantization block needs a global {key!r}: {dict(block)}")
    mode = block.get("mode", "affine")
    if mode != "affine":
        raise ValueError(f"only affine quantization is supported, got mode={mode!r}")
    for path, v in block.items():
        if path in ("group_size", "bits", "mode"):
            continue
        if v is not False and not isinstance(v, dict):
            raise ValueError(f"quantization override for {path!r} must be a dict or false, got {v!r}")
    for path in [""] + [p for p, v in block.items() if isinstance(v, dict)]:
        params = params_for(block, path)
        if params is not None and params.bits not in VALID_BITS:
            raise ValueError(f"quantization bits for {path or 'the default'} must be in {VALID_BITS}")


def with_block(config: Mapping[str, Any], decisions: Mapping[str, tuple[int, int] | None]) -> dict:
    """`config` with its "quantization" block replaced by the one of `decisions` (or removed)."""
    out = {k: v for k, v in config.items() if k != "quantization"}
    block = block_from_decisions(decisions)
    if block is not None:
        out["quantization"] = block
    return out


def precision_label(block: Mapping[str, Any] | None) -> str | None:
    """"q4" / "q8" for a uniform block, "mixed" with per-module entries, None without a block."""
    if not isinstance(block, Mapping) or not block.get("bits"):
        return None
    mixed = any(isinstance(v, dict) or v is False for v in block.values())
    return "mixed" if mixed else f"q{block['bits']}"
