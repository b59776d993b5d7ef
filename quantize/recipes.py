"""Quantization recipes: which LM module gets how many bits, and the config.json block they produce.

A recipe maps each quantizable module of Moshi's LM (every Linear and Embedding, i.e. every 2-D
`<path>.weight` of the checkpoint) to `(bits, group_size)` or to None (kept in float). Modules are
classified from their checkpoint path (Kyutai's MLX key names, see `docs/checkpoints.md`):

- `embeddings`: `text_emb`, `audio_embs.{i}`, `depformer.slices.{k}.emb`
- `heads`:      `text_linear`, `depformer.slices.{k}.linear_out` (the output projections)
- `depformer`:  everything else under `depformer.` (input projections, attention, gated MLPs)
- `temporal`:   `transformer.layers.{L}.*` (Helium, ~90% of the 7B parameters)

The `"quantization"` block follows mlx-lm: global `group_size`/`bits` plus per-module entries that
override them (`{"group_size": G, "bits": B}`) or switch quantization off (`false`). We write an
explicit `false` for every quantizable module left in float, so a reader never has to guess from
file names. Plain `q4` (group 32) and `q8` (group 64) quantize every Linear and Embedding, exactly
like Kyutai's `scripts/quantize_mlx.py` (`nn.quantize` defaults), so their `moshi_mlx` loads them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GROUPS = ("temporal", "depformer", "embeddings", "heads")
QBits = tuple[int, int] | None  # (bits, group_size) or None = keep float

_EMB = re.compile(r"^(text_emb|audio_embs\.\d+|depformer\.slices\.\d+\.emb)$")
_HEAD = re.compile(r"^(text_linear|depformer\.slices\.\d+\.linear_out)$")


def module_group(path: str) -> str:
    """Classify a module path (no `.weight` suffix) into one of GROUPS."""
    if _EMB.match(path):
        return "embeddings"
    if _HEAD.match(path):
        return "heads"
    if path.startswith("depformer."):
        return "depformer"
    return "temporal"


def is_embedding(path: str) -> bool:
    return _EMB.match(path) is not None


@dataclass(frozen=True)
class Recipe:
    """Bits per module group; `default` applies to groups not listed in `groups`."""

    name: str
    default: QBits
    groups: tuple[tuple[str, QBits], ...] = ()
    description: str = ""
    kyutai_file: str | None = None  # file name Kyutai's moshi_mlx uses for this exact recipe

    def for_group(self, group: str) -> QBits:
        return dict(self.groups).get(group, self.default)

    @property
    def is_quantized(self) -> bool:
        return self.default is not None or any(q is not None for _, q in self.groups)

    def with_override(self, bits: int | None, group_size: int | None) -> Recipe:
        """Replace the default (bits, group size) with `--bits` / `--group-size`.

        For a mixed recipe this changes the groups it does not list explicitly.
        """
        if bits is None and group_size is None:
            return self
        base = self.default or (4, 64)
        q = (bits if bits is not None else base[0], group_size if group_size is not None else base[1])
        if q[0] not in (2, 3, 4, 5, 6, 8):
            raise ValueError(f"--bits must be one of 2, 3, 4, 5, 6, 8 (got {q[0]})")
        if q[1] not in (32, 64, 128):
            raise ValueError(f"--group-size must be 32, 64 or 128 (got {q[1]})")
        if not self.groups:  # uniform: settings equal to a Kyutai recipe keep its name and file
            for r in RECIPES.values():
                if r.kyutai_file and r.default == q and not r.groups:
                    return r
            return Recipe(f"custom-q{q[0]}g{q[1]}", q, (), f"uniform {q[0]} bits, group {q[1]}")
        return Recipe(f"{self.name}-q{q[0]}g{q[1]}", q, self.groups,
                      f"{self.description}; other groups {q[0]} bits, group {q[1]}")


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("bf16", None, (), "no quantization, every tensor in bfloat16",
               kyutai_file="model.safetensors"),
        Recipe("q8", (8, 64), (), "8 bits, group 64, every Linear and Embedding (Kyutai q8)",
               kyutai_file="model.q8.safetensors"),
        Recipe("q4", (4, 32), (), "4 bits, group 32, every Linear and Embedding (Kyutai q4)",
               kyutai_file="model.q4.safetensors"),
        Recipe("mixed-q4q8", (8, 64), (("temporal", (4, 32)),),
               "temporal transformer 4 bits/g32; depformer, embeddings and heads 8 bits/g64"),
        Recipe("q4-heads8", (4, 32), (("embeddings", (8, 64)), ("heads", (8, 64))),
               "4 bits/g32 everywhere except embeddings and output heads at 8 bits/g64"),
        Recipe("custom", (4, 64), (), "uniform, set with --bits and --group-size"),
    )
}


def get_recipe(name: str | None, bits: int | None = None, group_size: int | None = None) -> Recipe:
    """Look up a recipe by name and apply `--bits/--group-size`; `None` name with bits -> custom."""
    if name is None:
        name = "custom" if (bits is not None or group_size is not None) else "q4"
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    if name == "bf16" and (bits is not None or group_size is not None):
        recipe = RECIPES["custom"]
    return recipe.with_override(bits, group_size)


def plan(recipe: Recipe, modules: Iterable[tuple[str, int]]) -> dict[str, QBits]:
    """Per-module decision for `(path, in_features)` pairs of the quantizable modules.

    A module whose input size is not a multiple of its group size cannot be quantized by MLX; it
    stays in float (and is listed as `false` in the config block).
    """
    out: dict[str, QBits] = {}
    for path, in_features in modules:
        q = recipe.for_group(module_group(path))
        if q is not None and in_features % q[1] != 0:
            q = None
        out[path] = q
    return out


def quantization_block(decisions: dict[str, QBits]) -> dict[str, Any] | None:
    """mlx-lm style block: the most common (bits, group) as global, others as overrides."""
    counts: dict[tuple[int, int], int] = {}
    for q in decisions.values():
        if q is not None:
            counts[q] = counts.get(q, 0) + 1
    if not counts:
        return None
    bits, gs = max(counts, key=lambda q: (counts[q], -q[0]))
    block: dict[str, Any] = {"group_size": gs, "bits": bits}
    for path in sorted(decisions):
        q = decisions[path]
        if q is None:
            block[path] = False
        elif q != (bits, gs):
            block[path] = {"group_size": q[1], "bits": q[0]}
    return block


def decisions_from_block(block: dict[str, Any] | None, paths: Iterable[str]) -> dict[str, QBits]:
    """Inverse of `quantization_block` for the given quantizable module paths."""
    out: dict[str, QBits] = {}
    for p in paths:
        if not block:
            out[p] = None
            continue
        v = block.get(p, True)
        if v is False:
            out[p] = None
        elif isinstance(v, dict):
            out[p] = (int(v["bits"]), int(v["group_size"]))
        else:
            out[p] = (int(block["bits"]), int(block["group_size"]))
    return out


def kyutai_compatible(recipe: Recipe, decisions: dict[str, QBits]) -> bool:
    """True when the output is exactly what Kyutai's quantize script would produce."""
    if recipe.kyutai_file is None:
        return False
    return all(q == recipe.default for q in decisions.values())
