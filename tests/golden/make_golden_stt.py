"""Make the streaming speech-to-text goldens with the PyTorch reference (run by hand, not by pytest).

    $REF_PYTHON tests/golden/make_golden_stt.py   # torch 2.13 CPU + moshi 0.2.13 (docs/environments.md)

For each config in CONFIGS (small random models shaped like Kyutai's two STT checkpoints: no
depformer, 32 user audio codebooks, all delays 0; "stt1b" with 4 extra VAD heads of 6 classes like
stt-1b-en_fr, "stt26b" with max_period 100000, no extra heads and PT's single unused `depformer_in`
Linear that `depformer_multi_linear=False` builds), runs PT's own `LMGen` greedily (temp 0, as the
STT configs' `lm_gen_config`) step by step past the context, feeding random user codes with PT's
input convention (`step(codes of frame t)` at step t), and writes to tests/golden/data/:

- stt_{name}_config.json: the LM kwargs (Kyutai config.json form) plus `stt_config`.
- stt_{name}_weights.safetensors: weights in the released PyTorch key format.
- stt_{name}_io.safetensors: `audio` [B, n_q, T] int32 (the user codes given at each step),
  `tokens` [B, T] int32 (what `step_with_extra_heads` returned), `text_logits` [B, T, text_card]
  (via `on_text_logits_hook`), `extra_heads` [B, n_heads, T, dim] (the softmaxed heads), and
  `forward_text_logits` [B, 1, T, text_card]: `LMModel.forward` on codes = (tokens; audio).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from moshi.models.lm import LMGen
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).parent))
import make_golden_lm as base  # noqa: E402

DATA = base.DATA

STT_BASE: dict[str, Any] = dict(base.BASE, n_q=32, dep_q=0, card=32, text_card=48, context=8,
                                max_period=100000, delays=[0] * 33)

# name -> (kwargs overrides, stt_config, batch, steps, seed)
CONFIGS: dict[str, tuple[dict[str, Any], dict[str, float], int, int, int]] = {
    "stt1b": (dict(extra_heads_num_heads=4, extra_heads_dim=6),
              {"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.0}, 2, 20, 11),
    "stt26b": (dict(num_heads=8, context=6, text_card=40, depformer_multi_linear=False),
               {"audio_delay_seconds": 2.5, "audio_silence_prefix_seconds": 1.0}, 1, 16, 12),
}


def run_lmgen(model: torch.nn.Module, audio: torch.Tensor) -> dict[str, np.ndarray]:
    """PT LMGen, greedy, one step per frame; returns tokens, text logits and extra heads."""
    logits: list[torch.Tensor] = []
    gen = LMGen(model, temp=0.0, temp_text=0.0, on_text_logits_hook=lambda x: logits.append(x))
    B, _, T = audio.shape
    tokens, heads = [], []
    with torch.no_grad(), gen.streaming(B):
        for t in range(T):
            out = gen.step_with_extra_heads(audio[:, :, t:t + 1])
            assert out is not None  # all delays 0: every step returns its token
            tok, extra = out
            tokens.append(tok[:, 0, 0])
            # each head [B, 1, dim] -> [B, n_heads, dim]; none -> [B, 0, 6]
            heads.append(torch.stack([e[:, 0] for e in extra], dim=1) if extra
                         else torch.zeros(B, 0, 6))
    return {
        "tokens": torch.stack(tokens, 1).numpy().astype(np.int32),
        "text_logits": torch.stack([x[:, 0, 0] for x in logits], 1).float().numpy(),
        "extra_heads": torch.stack(heads, 2).float().numpy(),
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name, (overrides, stt_config, batch, steps, seed) in CONFIGS.items():
        kwargs = dict(STT_BASE)
        kwargs.update(overrides)
        model = base.build_model(kwargs, seed)
        g = torch.Generator().manual_seed(seed + 3000)
        audio = torch.randint(0, kwargs["card"], (batch, kwargs["n_q"], steps), generator=g)
        io = run_lmgen(model, audio)
        codes = torch.cat([torch.from_numpy(io["tokens"]).long()[:, None], audio], dim=1)
        text, _ = base.forward(model, codes)
        io["forward_text_logits"] = text
        io["audio"] = audio.numpy().astype(np.int32)
        weights = {k: v.numpy() for k, v in base.released_state_dict(model).items()}
        for fname, tensors in ((f"stt_{name}_weights.safetensors", weights),
                               (f"stt_{name}_io.safetensors", io)):
            save_file(tensors, str(DATA / fname))
            size = (DATA / fname).stat().st_size
            assert size < base.MAX_FILE, (fname, size)
            logging.info("%s: %d tensors, %.0f kB", fname, len(tensors), size / 1024)
        with open(DATA / f"stt_{name}_config.json", "w") as f:
            json.dump(dict(kwargs, model_type="stt", stt_config=stt_config), f, indent=1)
        logging.info("%s tokens: %s", name, io["tokens"].tolist())


if __name__ == "__main__":
    main()
