"""Quantization recipes: which LM module gets how many bits, and the config.json block they produce.

A recipe maps each quantizable module of Moshi's LM (every Linear and Embedding, i.e. every 2-D
`<path>.weight` of the checkpoint) to `(bits, group_size)` or to None (kept in float). Modules are
classified from their checkpoint path (Kyutai's MLX key names, see `docs/checkpoints.md`):

- `embeddings`: `text_emb`, `audio_embs.{i}`, `depformer.slices.{k}.emb`
- `heads`:      `text_linear`, `depformer.slices.{k}.linear_out` (the output projections)
- `depformer`:  everything else under `depformer.` (input projections, attention, gated MLPs)
- `temporal`:   `transformer.layers.{L}.*` (Helium, ~90% of the 7B parameters; in TTS LMs also
                their cross-attention and the demuxed text embedding's `text_emb.out1/out2`)

TTS LMs (Kyutai's TTS layout) follow the same groups: the demuxed text table `text_emb` and the
low-rank depformer tables `depformer.slices.{k}.emb` are embeddings (quantized tables, see
`moshi_mlx.nn.factored_embedding`), and their `low_rank` Linears are depformer modules. Their
conditioners (`condition_provider.*`) always stay float (`moshi_mlx.quant.KEEP_FLOAT`, which
says why), as in the in-memory `--quant` of `cli.py speak`, so both give the same tensors.

The `"quantization"` block (`moshi_mlx.checkpoint.spec`, mlx-lm's convention) lists an explicit
`false` for every quantizable module left in float, so a reader never has to guess from file names. Plain `q4` (group 32) and `q8` (group 64) quantize every Linear and Embedding, exactly
like Kyutai's `scripts/quantize_mlx.py` (`nn.quantize` defaults), so their `moshi_mlx` loads them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from moshi_mlx.checkpoint.layout import LM_FILES
from moshi_mlx.checkpoint.spec import QParams
from moshi_mlx.quant import KEEP_FLOAT

GROUPS = ("temporal", "depformer", "embeddings", "heads")
QBits = QParams | None  # (bits, group_size) or None = keep float

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
    scales: str | None = None  # dtype of scales/biases; None: the output dtype (bf16, as Kyutai)

    def for_group(self, group: str) -> QBits:
        return dict(self.groups).get(group, self.default)

    @property
    def is_quantized(self) -> bool:
        return self.default is not None or any(q is not None for _, q in self.groups)

    def with_scales(self, scales: str | None) -> Recipe:
        """Store scales and biases in `scales` ("float16", "float32") instead of the output dtype.

        float16 scales have the size of bf16 ones and 3 more mantissa bits: the 8-bit groups'
        rounding of scale and bias shrinks (4-bit groups are dominated by their own step). Kyutai's
        moshi_mlx still loads the file (its loader checks shapes, not dtypes); MLX promotes a
        quantized matmul of bf16 activations with float16 scales to float32.
        """
        if scales is None or scales == self.scales:
            return self
        if not self.is_quantized:
            raise ValueError(f"--scales applies to quantized recipes, not {self.name!r}")
        short = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}[scales]
        return replace(self, name=f"{self.name}-{short}scales", scales=scales,
                       description=f"{self.description}; scales and biases in {scales}")

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
               kyutai_file=LM_FILES["bf16"]),
        Recipe("q8", (8, 64), (), "8 bits, group 64, every Linear and Embedding (Kyutai q8)",
               kyutai_file=LM_FILES["q8"]),
        Recipe("q4", (4, 32), (), "4 bits, group 32, every Linear and Embedding (Kyutai q4)",
               kyutai_file=LM_FILES["q4"]),
        Recipe("mixed-q4q8", (8, 64), (("temporal", (4, 32)),),
               "temporal transformer 4 bits/g32; depformer, embeddings and heads 8 bits/g64"),
        Recipe("q4-heads8", (4, 32), (("embeddings", (8, 64)), ("heads", (8, 64))),
               "4 bits/g32 everywhere except embeddings and output heads at 8 bits/g64"),
        Recipe("custom", (4, 64), (), "uniform, set with --bits and --group-size"),
    )
}


def get_recipe(name: str | None, bits: int | None = None, group_size: int | None = None,
               scales: str | None = None) -> Recipe:
    """Look up a recipe by name and apply `--bits/--group-size/--scales`; `None` name with bits
    -> custom."""
    if name is None:
        name = "custom" if (bits is not None or group_size is not None) else "q4"
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    if name == "bf16" and (bits is not None or group_size is not None):
        recipe = RECIPES["custom"]
    return recipe.with_override(bits, group_size).with_scales(scales)


def plan(recipe: Recipe, modules: Iterable[tuple[str, int]]) -> dict[str, QBits]:
    """Per-module decision for `(path, in_features)` pairs of the quantizable modules.

    A module whose input size is not a multiple of its group size cannot be quantized by MLX; it
    stays in float (and is listed as `false` in the config block), as do TTS conditioners.
    """
    out: dict[str, QBits] = {}
    for path, in_features in modules:
        q = recipe.for_group(module_group(path))
        if q is not None and (in_features % q[1] != 0 or KEEP_FLOAT.match(path)):
            q = None
        out[path] = QParams(*q) if q is not None else None
    return out


def kyutai_compatible(recipe: Recipe, decisions: dict[str, QBits]) -> bool:
    """True when Kyutai's moshi_mlx loads the output: the module selection and params of their
    quantize script (bit for bit their output unless `recipe.scales` is set)."""
    if recipe.kyutai_file is None:
        return False
    return all(q == recipe.default for q in decisions.values())
