"""Make the TTS-LM goldens with the PyTorch reference (run by hand, not by pytest).

    REFENV/bin/python tests/golden/make_golden_tts_lm.py   # torch + moshi 0.2.13

Builds a small random `LMModel` through moshi's own loader (`loaders.get_moshi_lm`, which turns
the `conditioners` / `fuser` blocks into its `ConditionProvider` / `ConditionFuser`) with every
feature tts-1.6b-en_fr adds to the Moshi LM: the demuxed second text stream, low-rank depformer
embeddings, a weights-per-step schedule, cross-attention to a tensor conditioner with its
sinusoidal position embedding, and two LUT conditioners summed into the input. Writes to
tests/golden/data/:

- tts_lm_config.json: the LM kwargs (config.json form, PT's `demux_second_stream` spelling) and
  the conditioner inputs (`cfg` / `control` values per batch item, None = dropped);
- tts_lm_weights.safetensors: the weights in the released PyTorch key format;
- tts_lm_io.safetensors: `codes` [B, K, T] (text row packed: `(second + 1) * (text_card + 1) +
  main`, a few -1), `speaker` [B, S, 12] and `speaker_mask` [B, S] (uint8; item 1 shorter, so
  padded), the conditioners' outputs `cond_{name}`, the fused `sum` [B, 1, D] and `cross`
  [B, S, D], and `LMModel.forward`'s `text_logits`, `audio_logits` (NaN where delays leave them
  undefined).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from make_golden_lm import released_state_dict
from moshi.conditioners import ConditionAttributes, TensorCondition
from safetensors.numpy import save_file
from tts_golden_common import random_lm

DATA = Path(__file__).parent / "data"
SEED = 7
B, T = 2, 14
CFG_VALUES = ["1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0"]
KWARGS = dict(
    dim=64, text_card=40, existing_text_padding_id=3, existing_text_end_padding_id=0, n_q=6,
    dep_q=6, card=24, num_heads=4, num_layers=2, hidden_scale=4.125, causal=True,
    layer_scale=None, context=8, max_period=10000, gating="silu", norm="rms_norm_f32",
    positional_embedding="rope", depformer_dim=32, depformer_dim_feedforward=96,
    depformer_num_heads=2, depformer_num_layers=2, depformer_layer_scale=None,
    depformer_multi_linear=True, depformer_context=6, depformer_max_period=10000,
    depformer_gating="silu", depformer_pos_emb="none", depformer_weights_per_step=True,
    depformer_weights_per_step_schedule=[0, 1, 2, 2, 3, 3], depformer_low_rank_embeddings=8,
    demux_second_stream=True, cross_attention=True, delays=[0, 0, 2, 2, 2, 2, 2],
    conditioners={
        "cfg": {"type": "lut", "lut": {"n_bins": 7, "dim": 16, "tokenizer": "noop",
                                       "possible_values": CFG_VALUES}},
        "control": {"type": "lut", "lut": {"n_bins": 1, "dim": 16, "tokenizer": "noop",
                                           "possible_values": ["ok"]}},
        "speaker_wavs": {"type": "tensor", "tensor": {"dim": 12}},
    },
    fuser={"sum": ["cfg", "control"], "cross": ["speaker_wavs"], "cross_attention_pos_emb": True,
           "cross_attention_pos_emb_scale": 1.0},
)
TEXT_VALUES = [{"cfg": "2.5", "control": "ok"}, {"cfg": None, "control": "ok"}]
SPEAKER_LEN = [10, 6]


def codes_with_packed_text(g: torch.Generator) -> torch.Tensor:
    n = KWARGS["text_card"] + 1
    codes = torch.randint(0, KWARGS["card"], (B, KWARGS["n_q"] + 1, T), generator=g)
    main = torch.randint(0, n, (B, T), generator=g)
    second = torch.randint(-1, n - 1, (B, T), generator=g)
    second[:, ::3] = -1  # nothing on the second stream: plain ids
    codes[:, 0] = (second + 1) * n + main
    codes[0, 0, 3] = -1
    codes[1, 2, 5] = -1
    return codes


def main() -> None:
    model = random_lm(KWARGS, SEED)
    g = torch.Generator().manual_seed(SEED + 1)
    speakers = [torch.randn(1, n, 12, generator=g) for n in SPEAKER_LEN]
    attrs = [
        ConditionAttributes(text=dict(t), tensor={"speaker_wavs": TensorCondition.from_tensor(s)})
        for t, s in zip(TEXT_VALUES, speakers, strict=True)
    ]
    provider, fuser = model.condition_provider, model.fuser
    prepared = provider.prepare(attrs)
    speaker = prepared["speaker_wavs"]
    codes = codes_with_packed_text(g)
    with torch.no_grad():
        conds = provider(prepared)
        out = model.forward(codes, condition_tensors=conds)
        summed, cross = fuser.get_sum(conds), fuser.get_cross(conds)
    io = {
        "codes": codes.numpy().astype(np.int32),
        "speaker": speaker.tensor.numpy(), "speaker_mask": speaker.mask.numpy().astype(np.uint8),
        "sum": summed.numpy(), "cross": cross.numpy(),
        "text_logits": out.text_logits.float().numpy(), "audio_logits": out.logits.float().numpy(),
    }
    io.update({f"cond_{k}": v[0].numpy() for k, v in conds.items()})
    weights = {k: v.numpy() for k, v in released_state_dict(model).items()}
    save_file(weights, str(DATA / "tts_lm_weights.safetensors"))
    save_file(io, str(DATA / "tts_lm_io.safetensors"))
    (DATA / "tts_lm_config.json").write_text(
        json.dumps({"lm": KWARGS, "text_values": TEXT_VALUES}, indent=1) + "\n")
    for f in ("tts_lm_weights.safetensors", "tts_lm_io.safetensors"):
        print(f, (DATA / f).stat().st_size, "bytes")
    print(sorted(weights)[:8], len(weights))


if __name__ == "__main__":
    main()
