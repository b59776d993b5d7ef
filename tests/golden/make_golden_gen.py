"""Make the streaming-generation goldens with the PyTorch reference (run by hand, not by pytest).

    $REF_PYTHON tests/golden/make_golden_gen.py   # torch 2.13 CPU + moshi 0.2.13, docs/environments.md

Builds a small random `moshi.models.lm.LMModel` (fp32) with the real model's structure (8 + 8 audio
streams, delays [0, 0,1x7, 0,1x7], depformer multi-linear + weights per step, context 24 shorter than
the 64-step run), saves it in the *released* PyTorch key format (`in_proj_weight` / `out_proj.weight`,
depformer per-step chunks concatenated along dim 0), and runs PT `LMGen` greedily with random user
codes (batch 2). Files written to tests/golden/data/:

- gen_config.json: the LM kwargs (Kyutai config.json form), plus the seed used.
- gen_lm.safetensors: the weights, released key names.
- gen_outputs.safetensors (all in PT `LMGen` step order t = 0..T-1):
  user [B, T, 8] codes fed at step t; text [B, T] text sampled at step t; audio [B, T, 8] depformer
  output at step t (delayed layout: codebook 0 of frame t, codebooks 1.. of frame t-1);
  frames [B, T-1, 9] what `LMGen.step` returned at t >= 1 (aligned frame t-1, text first);
  text_logits [B, T, text_card], audio_logits [B, T, 8, card] as sampled at step t;
  fwd_text_logits [B, 1, T-1, text_card], fwd_audio_logits [B, 8, T-1, card]: `LMModel.forward` on the
  aligned sequence (text, Moshi audio, user audio shifted one frame as the LMGen run saw it).
The seed is chosen so that every greedy choice wins by a margin far above fp32 rounding (checked).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from make_golden_lm import released_state_dict  # same directory: one released-format export
from moshi.models.lm import LMGen, LMModel
from moshi.utils.compile import no_compile
from safetensors.numpy import save_file

DATA = Path(__file__).parent / "data"
STEPS = 64
BATCH = 2
MIN_MARGIN = 3e-4  # smallest allowed top-1 minus top-2 logit gap; fp32 differences are ~1e-6

KWARGS = dict(
    dim=64, text_card=48, existing_text_padding_id=3, n_q=16, dep_q=8, card=32, num_heads=4,
    num_layers=2, hidden_scale=4.125, causal=True, layer_scale=None, context=24, max_period=10000,
    gating="silu", norm="rms_norm_f32", positional_embedding="rope", depformer_dim=32,
    depformer_dim_feedforward=int(4.125 * 32), depformer_num_heads=2, depformer_num_layers=2,
    depformer_layer_scale=None, depformer_multi_linear=True, depformer_context=8,
    depformer_max_period=10000, depformer_gating="silu", depformer_pos_emb="none",
    depformer_weights_per_step=True, delays=[0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
)


def run(seed: int) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor], float]:
    torch.manual_seed(seed)
    model = LMModel(**KWARGS, device="cpu", dtype=torch.float32).eval()
    sd = released_state_dict(model)
    # The released form must load strictly back into a fresh model (proves the key format).
    check = LMModel(**KWARGS, device="cpu", dtype=torch.float32).eval()
    check.load_state_dict({k: v.clone() for k, v in sd.items()}, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, check.state_dict()[k]), k

    gen = torch.Generator().manual_seed(seed + 1)
    user = torch.randint(0, KWARGS["card"], (BATCH, STEPS, 8), generator=gen)
    text_logits, audio_logits = [], []
    orig_dep = model.forward_depformer

    def forward_depformer(cb_index, sequence, transformer_out):
        logits = orig_dep(cb_index, sequence, transformer_out)
        audio_logits[-1].append(logits[:, 0, 0].clone())
        return logits

    model.forward_depformer = forward_depformer
    texts, audios, frames = [], [], []

    def on_text_logits(logits):
        text_logits.append(logits[:, 0, 0].clone())
        audio_logits.append([])

    lm_gen = LMGen(model, use_sampling=False, on_text_logits_hook=on_text_logits,
                   on_text_hook=lambda t: texts.append(t.clone()),
                   on_audio_hook=lambda a: audios.append(a.clone()))
    with lm_gen.streaming(BATCH), torch.no_grad():
        for t in range(STEPS):
            out = lm_gen.step(user[:, t, :, None])
            assert (out is None) == (t == 0)
            if out is not None:
                frames.append(out[:, :, 0])
    text = torch.stack(texts, 1)
    audio = torch.stack(audios, 1)
    tl = torch.stack(text_logits, 1)
    al = torch.stack([torch.stack(a, 1) for a in audio_logits], 1)
    fr = torch.stack(frames, 1)

    # Aligned sequence of T-1 frames as LMGen saw it: Moshi frame f = (text[f], audio codebook 0 at
    # step f, codebooks 1.. at step f+1); user frame f = user fed at step f+1.
    seq = torch.cat([fr.transpose(1, 2), user[:, 1:].transpose(1, 2)], dim=1)
    with torch.no_grad():
        fwd = model(seq)
    margins = []
    for logits in (tl, al):
        top2 = logits.topk(2, dim=-1).values
        margins.append((top2[..., 0] - top2[..., 1]).min().item())
    arrays = {
        "user": user.numpy().astype(np.int32),
        "text": text.numpy().astype(np.int32),
        "audio": audio.numpy().astype(np.int32),
        "frames": fr.numpy().astype(np.int32),
        "text_logits": tl.numpy(),
        "audio_logits": al.numpy(),
        "fwd_text_logits": fwd.text_logits.numpy(),
        "fwd_audio_logits": fwd.logits.numpy(),
    }
    return arrays, sd, min(margins)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    DATA.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for seed in range(100):
        with no_compile():  # torch.compile of the tiny steps costs minutes and changes nothing
            arrays, sd, margin = run(seed)
        distinct = len(np.unique(arrays["text"])), len(np.unique(arrays["audio"]))
        logging.info("seed %d: min margin %.2e, distinct text/audio tokens %s", seed, margin, distinct)
        if margin >= MIN_MARGIN and min(distinct) >= 8:
            break
    else:
        raise SystemExit("no seed gave clear greedy margins")
    save_file({k: v.numpy() for k, v in sd.items()}, str(DATA / "gen_lm.safetensors"))
    save_file(arrays, str(DATA / "gen_outputs.safetensors"))
    (DATA / "gen_config.json").write_text(json.dumps({**KWARGS, "seed": seed}, indent=1) + "\n")
    for name in ("gen_lm.safetensors", "gen_outputs.safetensors", "gen_config.json"):
        logging.info("%s: %.0f kB", name, (DATA / name).stat().st_size / 1e3)


if __name__ == "__main__":
    main()
