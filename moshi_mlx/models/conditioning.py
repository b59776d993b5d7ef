"""Conditioning of Kyutai's TTS LMs as explicit per-stream state (`Conditions`).

PyTorch moshi's `LMGen` computes the fused conditions once per stream (`fuser.get_sum`,
`fuser.get_cross`) and keeps them, with the cross-attention keys/values cached inside its
modules. Here `Lm.conditions(values)` returns them as a value: `sum` [B, 1, D] (added to the
LM input at every step) and `cross` (keys/values of every temporal layer for the cross-attention
source, computed once). The caller passes it to `Lm.embed` / `Lm.temporal` / `Lm.forward`.

`values` maps each conditioner name to its input, one per batch item:
LUT conditioners a list of strings or None (None = dropped, for classifier-free guidance),
tensor conditioners a pair (tensor [B, T, dim], mask [B, T] or None), e.g. for tts-1.6b-en_fr
`{"cfg": ["2.0"], "control": ["ok"], "speaker_wavs": (voices, mask)}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from ..config import LmConfig
from ..nn.conditioners import ConditionProvider, FuserSpec, parse_conditioners
from ..nn.cross_attention import CrossKV


@dataclass(frozen=True)
class Conditions:
    """Fused conditions of one batch of streams: input offset and cross-attention state."""

    sum: mx.array | None = None
    cross: list[CrossKV] | None = None


def make_condition_provider(cfg: LmConfig) -> ConditionProvider | None:
    """The LM's conditioners from `cfg.extra` (None for Moshi); checks cross_attention agrees."""
    specs, fuser = parse_conditioners(cfg.extra)
    if not specs:
        if cfg.cross_attention:
            raise ValueError("invalid config field 'cross_attention': no conditioners to attend to")
        return None
    fuser = fuser or FuserSpec()
    if bool(fuser.cross) != cfg.cross_attention:
        raise ValueError(
            f"invalid config field 'cross_attention': {cfg.cross_attention} but the fuser's "
            f"cross conditions are {list(fuser.cross)}"
        )
    return ConditionProvider(specs, fuser, cfg.dim)


def prepare_conditions(
    provider: ConditionProvider, transformer: Any, values: Mapping[str, Any],
    dtype: mx.Dtype | None = None,
) -> Conditions:
    """Conditioner inputs -> `Conditions` (sum in `dtype`, cross keys/values per layer)."""
    conds = provider.condition(values)
    total = provider.fuse_sum(conds)
    src = provider.fuse_cross(conds)
    if dtype is not None:
        total = None if total is None else total.astype(dtype)
        src = None if src is None else src.astype(dtype)
    cross = None if src is None else transformer.cross_kv(src)
    return Conditions(sum=total, cross=cross)
