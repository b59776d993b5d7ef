"""Conditioners of Kyutai's TTS LMs: lookup tables, tensors, and how they enter the LM.

Reproduces PyTorch moshi's `conditioners/` (`LUTConditioner`, `TensorConditioner`,
`ConditionProvider`, `ConditionFuser`) for inference, with Kyutai's MLX parameter names
(`condition_provider.conditioners.{name}.{embed, output_proj, learnt_padding}`).

Config (the `conditioners` and `fuser` blocks of the checkpoint's `config.json`, kept in
`LmConfig.extra`):

    "conditioners": {"cfg": {"type": "lut", "lut": {"n_bins": 7, "dim": 16, "tokenizer": "noop",
                                                    "possible_values": ["1.0", ...]}},
                     "speaker_wavs": {"type": "tensor", "tensor": {"dim": 512}}},
    "fuser": {"sum": ["cfg", "control"], "cross": ["speaker_wavs"],
              "cross_attention_pos_emb": true, "cross_attention_pos_emb_scale": 1}

Every conditioner projects to the LM's dim with `output_proj` (Linear, no bias) and replaces
masked positions by `learnt_padding` [1, 1, D]. A LUT value of None (a dropped condition, as for
classifier-free guidance) is the padding index `n_bins` with mask 0. The fuser adds the "sum"
conditions ([B, 1, D] each) to the LM input at every step, and concatenates the "cross" ones
along time as the source of the cross-attention, plus a sinusoidal position embedding
(cos | sin halves, max period 10000) times its scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .linear import Linear

_COND_KEYS = {"lut": {"n_bins", "dim", "tokenizer", "possible_values", "init_scale",
                      "force_linear", "output_bias", "learn_padding", "pad_empty"},
              "tensor": {"dim", "force_linear", "output_bias", "learn_padding", "pad_empty"}}


@dataclass(frozen=True)
class ConditionerSpec:
    """One entry of `conditioners`: kind "lut" or "tensor", input dim, LUT values."""

    name: str
    kind: str
    dim: int
    n_bins: int = 0
    possible_values: tuple[str, ...] | None = None
    learn_padding: bool = True


@dataclass(frozen=True)
class FuserSpec:
    sum: tuple[str, ...] = ()
    cross: tuple[str, ...] = ()
    cross_attention_pos_emb: bool = False
    cross_attention_pos_emb_scale: float = 1.0


def parse_conditioners(extra: Mapping[str, Any]) -> tuple[list[ConditionerSpec], FuserSpec | None]:
    """`conditioners` / `fuser` blocks -> specs; a value this port cannot honour is a ValueError."""
    specs = []
    for name, block in (extra.get("conditioners") or {}).items():
        kind = block.get("type")
        if kind not in _COND_KEYS:
            raise ValueError(f"conditioner {name!r}: unsupported type {kind!r}")
        kw = dict(block.get(kind, {}))
        unknown = set(kw) - _COND_KEYS[kind]
        if unknown:
            raise ValueError(f"conditioner {name!r}: unsupported keys {sorted(unknown)}")
        if kw.get("output_bias", False) or not kw.get("force_linear", True):
            raise ValueError(f"conditioner {name!r}: only a bias-free output_proj is supported")
        if kind == "lut" and kw.get("tokenizer", "noop") != "noop":
            raise ValueError(f"conditioner {name!r}: only the 'noop' LUT tokenizer is supported")
        values = kw.get("possible_values")
        specs.append(ConditionerSpec(
            name=name, kind=kind, dim=int(kw["dim"]), n_bins=int(kw.get("n_bins", 0)),
            possible_values=None if values is None else tuple(str(v) for v in values),
            learn_padding=bool(kw.get("learn_padding", True)),
        ))
    fuser = extra.get("fuser")
    if fuser is None:
        return specs, None
    unknown = set(fuser) - {"sum", "cross", "prepend", "cross_attention_pos_emb",
                            "cross_attention_pos_emb_scale"}
    if unknown or fuser.get("prepend"):
        raise ValueError(f"fuser: unsupported keys {sorted(unknown) or ['prepend']}")
    names = {s.name for s in specs}
    spec = FuserSpec(
        sum=tuple(fuser.get("sum", [])), cross=tuple(fuser.get("cross", [])),
        cross_attention_pos_emb=bool(fuser.get("cross_attention_pos_emb", False)),
        cross_attention_pos_emb_scale=float(fuser.get("cross_attention_pos_emb_scale", 1.0)),
    )
    missing = (set(spec.sum) | set(spec.cross)) - names
    if missing:
        raise ValueError(f"fuser names unknown conditioners {sorted(missing)}")
    return specs, spec


def sin_embedding(length: int, dim: int, max_period: float = 10000.0) -> mx.array:
    """Sinusoidal position embedding [1, length, dim]: cos then sin halves (PT layout)."""
    half = dim // 2
    pos = mx.arange(length, dtype=mx.float32)[None, :, None]
    freqs = mx.exp(-math.log(max_period) * mx.arange(half, dtype=mx.float32) / (half - 1))
    phase = pos * freqs
    return mx.concatenate([mx.cos(phase), mx.sin(phase)], axis=-1)


class _Conditioner(nn.Module):
    def __init__(self, spec: ConditionerSpec, output_dim: int):
        super().__init__()
        self.output_proj = Linear(spec.dim, output_dim, bias=False)
        if spec.learn_padding:
            self.learnt_padding = mx.zeros((1, 1, output_dim))

    def _finish(self, x: mx.array, mask: mx.array) -> mx.array:
        y = self.output_proj(x)
        m = mask.astype(y.dtype)[..., None]
        pad = self.learnt_padding if "learnt_padding" in self else mx.zeros((1,), y.dtype)
        return y * m + pad * (1 - m)


class LutConditioner(_Conditioner):
    """A value among `possible_values` (or None: dropped) -> [1, 1, D] per batch item."""

    def __init__(self, spec: ConditionerSpec, output_dim: int):
        super().__init__(spec, output_dim)
        self.embed = nn.Embedding(spec.n_bins + 1, spec.dim)
        self.spec = spec  # a dataclass: a plain attribute, not a child of the module tree

    def index(self, value: str | None) -> int:
        values = self.spec.possible_values
        if value is None:
            return self.spec.n_bins
        if values is None:
            # PT hashes free-form values (sha256 mod n_bins); no Kyutai TTS config uses that.
            raise ValueError("this LUT conditioner has no possible_values")
        if value not in values:
            raise ValueError(f"{value!r} is not one of {list(values)}")
        return values.index(value)

    def __call__(self, values: Sequence[str | None]) -> mx.array:
        """values (one per batch item) -> [B, 1, D]."""
        idx = mx.array([[self.index(v)] for v in values], dtype=mx.int32)
        mask = mx.array([[v is not None] for v in values])
        return self._finish(self.embed(idx), mask)


class TensorConditioner(_Conditioner):
    """tensor [B, T, dim], mask [B, T] (True = valid) -> [B, T, D]."""

    def __call__(self, tensor: mx.array, mask: mx.array | None = None) -> mx.array:
        if mask is None:
            mask = mx.ones(tensor.shape[:2], dtype=mx.bool_)
        return self._finish(tensor, mask)


class ConditionProvider(nn.Module):
    """All conditioners of an LM plus the fuser rules (`conditioners.{name}` parameters)."""

    def __init__(self, specs: Sequence[ConditionerSpec], fuser: FuserSpec, output_dim: int):
        super().__init__()
        self.conditioners = {
            s.name: (LutConditioner if s.kind == "lut" else TensorConditioner)(s, output_dim)
            for s in specs
        }
        self.fuser = fuser

    def condition(self, values: Mapping[str, Any]) -> dict[str, mx.array]:
        """name -> LUT values (list, one per batch item) or (tensor, mask) -> conditioned [B, T, D]."""
        missing = set(self.conditioners) - set(values)
        if missing:
            raise ValueError(f"missing conditions: {sorted(missing)}")
        out = {}
        for name, cond in self.conditioners.items():
            v = values[name]
            out[name] = cond(*v) if isinstance(cond, TensorConditioner) else cond(v)
        return out

    def fuse_sum(self, conds: Mapping[str, mx.array]) -> mx.array | None:
        """Sum of the "sum" conditions, [B, 1, D], added to the LM input at every step."""
        total = None
        for name in self.fuser.sum:
            total = conds[name] if total is None else total + conds[name]
        return total

    def fuse_cross(self, conds: Mapping[str, mx.array]) -> mx.array | None:
        """The cross-attention source [B, S, D] (with its position embedding), or None."""
        if not self.fuser.cross:
            return None
        src = mx.concatenate([conds[name] for name in self.fuser.cross], axis=1)
        if self.fuser.cross_attention_pos_emb:
            pos = sin_embedding(src.shape[1], src.shape[2]).astype(src.dtype)
            src = src + self.fuser.cross_attention_pos_emb_scale * pos
        return src
