"""Make the teacher-forced LM goldens with the PyTorch reference (run by hand, not by pytest).

    $REF_PYTHON tests/golden/make_golden_lm.py   # torch 2.13 CPU + moshi 0.2.13, docs/environments.md

For each config in CONFIGS, builds a small random `moshi.models.lm.LMModel` in fp32 (norm weights
and layer scales randomized too, so they matter), and writes to tests/golden/data/:

- lm_{name}_config.json: the LM kwargs (Kyutai config.json form).
- lm_{name}_weights.safetensors: the weights in the *released* PyTorch key format (moshi 0.2.x
  `state_dict()` splits attention into `in_projs.{i}` / `out_projs.{i}`; released files concatenate
  them on dim 0 as `in_proj_weight` / `out_proj.weight`).
- lm_{name}_io.safetensors: `codes` [B, K, T] int32 (aligned, with a few -1 = zero_token_id) and
  `LMModel.forward`'s `text_logits` [B, 1, T, text_card], `audio_logits` [B, dep_q, T, card]
  (NaN where the delays leave them undefined).

The configs cover every feature the real model uses (rms_norm_f32, silu gating, RoPE, context
shorter than the sequence, depformer multi-linear + weights per step, 8 + 8 streams with acoustic
delay 1) plus a weights-per-step schedule, layer scales, a text delay and delay 2, shared depformer
weights (no per-step weights, one depformer_in) with layer_norm / gelu / plain-MLP / depformer
RoPE, and dep_q = 0 (an STT-like model, for which PT's forward only runs with the depformer part
stubbed out: audio logits are then [B, 0, T, card]).

Helpers at the top (`build_model`, `released_state_dict`, `randomize_extras`) are importable by
other golden scripts (`sys.path` insert of this folder, then `import make_golden_lm`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from moshi.models.lm import LMModel
from safetensors.numpy import save_file

DATA = Path(__file__).parent / "data"
MAX_FILE = 2 * 1024 * 1024

REAL_DELAYS = [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
BASE: dict[str, Any] = dict(
    dim=64, text_card=48, existing_text_padding_id=3, existing_text_end_padding_id=0, n_q=16,
    dep_q=8, card=32, num_heads=4, num_layers=2, hidden_scale=4.125, causal=True, layer_scale=None,
    context=8, max_period=10000, gating="silu", norm="rms_norm_f32", positional_embedding="rope",
    depformer_dim=32, depformer_dim_feedforward=int(4.125 * 32), depformer_num_heads=2,
    depformer_num_layers=2, depformer_layer_scale=None, depformer_multi_linear=True,
    depformer_context=8, depformer_max_period=10000, depformer_gating="silu",
    depformer_pos_emb="none", depformer_weights_per_step=True, delays=REAL_DELAYS,
)

# name -> (kwargs overrides, batch, steps, seed)
CONFIGS: dict[str, tuple[dict[str, Any], int, int, int]] = {
    # The real model's structure, shrunk; context 8 < 24 steps so the sliding window matters.
    "real": ({}, 2, 24, 1),
    # Weights-per-step schedule (slices 0,1 share, 2,3 share), layer scales, text delay, delay 2.
    "sched": (dict(n_q=8, dep_q=4, layer_scale=0.1, depformer_layer_scale=0.2, context=6,
                   depformer_weights_per_step_schedule=[0, 0, 1, 1], max_period=100,
                   delays=[1, 0, 2, 1, 1, 0, 1, 0, 2]), 2, 16, 2),
    # Shared depformer weights, one depformer_in; layer_norm, gelu gating, plain MLP, depformer RoPE.
    "shared": (dict(n_q=4, dep_q=2, norm="layer_norm", gating="gelu", context=None,
                    depformer_weights_per_step=False, depformer_multi_linear=False,
                    depformer_gating="none", depformer_pos_emb="rope", depformer_max_period=50,
                    delays=[0, 0, 1, 0, 1]), 1, 12, 3),
    # No depformer (STT-like): text logits only.
    "nodep": (dict(n_q=4, dep_q=0, context=5, delays=[0, 0, 1, 0, 1]), 2, 12, 4),
}


def make_kwargs(overrides: dict[str, Any]) -> dict[str, Any]:
    kw = dict(BASE)
    kw.update(overrides)
    return kw


def build_model(kwargs: dict[str, Any], seed: int) -> LMModel:
    """A random fp32 `LMModel` (eval mode) from Kyutai's LM kwargs, extras randomized."""
    torch.manual_seed(seed)
    model = LMModel(**kwargs, device="cpu", dtype=torch.float32)
    randomize_extras(model, seed)
    return model.eval()


def randomize_extras(model: torch.nn.Module, seed: int) -> None:
    """Norm weights/biases and layer scales start at constants; make them random so they count."""
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".alpha") or (".norm" in name or name.startswith("out_norm")):
                if name.endswith("bias"):
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(".scale"):
                p.copy_(0.05 + 0.3 * torch.rand(p.shape, generator=g))


def released_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """moshi 0.2.x state_dict -> released names: `in_projs.{i}` / `out_projs.{i}` concatenated on
    dim 0 into `in_proj_weight` / `out_proj.weight`."""
    out: dict[str, torch.Tensor] = {}
    groups: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for k, v in model.state_dict().items():
        for part, name in ((".in_projs.", "in_proj_weight"), (".out_projs.", "out_proj.weight")):
            if part in k:
                prefix, rest = k.split(part)
                idx, suffix = rest.split(".", 1)
                assert suffix == "weight", k
                groups.setdefault(f"{prefix}.{name}", []).append((int(idx), v))
                break
        else:
            out[k] = v
    for k, parts in groups.items():
        out[k] = torch.cat([v for _, v in sorted(parts, key=lambda p: p[0])], dim=0)
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def random_codes(kwargs: dict[str, Any], batch: int, steps: int, seed: int,
                 zero_tokens: int = 3) -> torch.Tensor:
    """Aligned codes [B, 1+n_q, T]: text < text_card, audio < card, a few -1 (zero_token_id)."""
    g = torch.Generator().manual_seed(seed + 2000)
    K = kwargs["n_q"] + 1
    codes = torch.randint(0, kwargs["card"], (batch, K, steps), generator=g)
    codes[:, 0] = torch.randint(0, kwargs["text_card"], (batch, steps), generator=g)
    for _ in range(zero_tokens):
        b, k, t = (int(torch.randint(0, n, (1,), generator=g)) for n in (batch, K, steps))
        codes[b, k, t] = -1
    return codes


def forward(model: LMModel, codes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """`LMModel.forward` -> (text_logits, audio_logits) as float32 numpy."""
    if model.dep_q == 0:
        # PT's forward always runs the depformer; with none, stub it to give [B, 0, T, card].
        def no_depformer(sequence, transformer_out):
            B, T = transformer_out.shape[:2]
            return transformer_out.new_zeros(B, 0, T, model.card)

        model.forward_depformer_training = no_depformer
    with torch.no_grad():
        out = model.forward(codes)
    return out.text_logits.float().numpy(), out.logits.float().numpy()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    DATA.mkdir(parents=True, exist_ok=True)
    for name, (overrides, batch, steps, seed) in CONFIGS.items():
        kwargs = make_kwargs(overrides)
        model = build_model(kwargs, seed)
        codes = random_codes(kwargs, batch, steps, seed, zero_tokens=3 if name != "real" else 0)
        text, audio = forward(model, codes)
        weights = {k: v.numpy() for k, v in released_state_dict(model).items()}
        files = {
            f"lm_{name}_weights.safetensors": weights,
            f"lm_{name}_io.safetensors": {
                "codes": codes.numpy().astype(np.int32), "text_logits": text, "audio_logits": audio,
            },
        }
        for fname, tensors in files.items():
            save_file(tensors, str(DATA / fname))
            size = (DATA / fname).stat().st_size
            assert size < MAX_FILE, (fname, size)
            logging.info("%s: %d tensors, %.0f kB", fname, len(tensors), size / 1024)
        with open(DATA / f"lm_{name}_config.json", "w") as f:
            json.dump(kwargs, f, indent=1)


if __name__ == "__main__":
    main()
