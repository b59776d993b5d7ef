"""Shared pytest fixtures. Owners of other test files may ADD fixtures at the end of this file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

GOLDEN = Path(__file__).parent / "golden" / "data"

LM_GOLDENS = ("real", "sched", "shared", "nodep")


def tiny_lm_kwargs(**overrides: Any) -> dict[str, Any]:
    """Kyutai-style LM kwargs of a tiny model with the real structure (8 + 8 streams, acoustic
    delay 1, depformer multi-linear with per-step weights); every Linear's in_features is a
    multiple of 64, so q4 (group 32) and q8 (group 64) quantization apply everywhere."""
    kw: dict[str, Any] = dict(
        dim=64, text_card=40, existing_text_padding_id=3, n_q=16, dep_q=8, card=24, num_heads=4,
        num_layers=2, hidden_scale=3.0, causal=True, context=6, max_period=10000, gating="silu",
        norm="rms_norm_f32", positional_embedding="rope", depformer_dim=64,
        depformer_dim_feedforward=192, depformer_num_heads=2, depformer_num_layers=1,
        depformer_multi_linear=True, depformer_weights_per_step=True, depformer_pos_emb="none",
        delays=[0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
    )
    kw.update(overrides)
    return kw


@pytest.fixture
def lm_golden():
    """Loader of the PyTorch teacher-forced goldens: name -> (config dict, weights path, io dict)."""
    from safetensors.numpy import load_file

    def load(name: str) -> tuple[dict[str, Any], Path, dict[str, Any]]:
        with open(GOLDEN / f"lm_{name}_config.json") as f:
            cfg = json.load(f)
        return cfg, GOLDEN / f"lm_{name}_weights.safetensors", load_file(
            str(GOLDEN / f"lm_{name}_io.safetensors"))

    return load
