"""Make the voice-cloning TTS golden with the PyTorch reference (run by hand, not by pytest).

    REFENV/bin/python tests/golden/make_golden_tts_clone.py   # torch + moshi 0.2.13 + sentencepiece

A small random `LMModel` in the layout of `kyutai/tts-0.75b-en-public` as far as it is known
(docs/tts.md): every audio codebook generated (n_q = dep_q), delays `[0, 0] + [2] * (n_q - 1)`,
a depformer weight schedule (partial sharing), no cross-attention and no conditioner (the voice is
an audio prefix, not an embedding), one text stream, a text head wider than the text input
(`text_card_out`, reported set in the 0.75b's config). Greedy `TTSModel.generate(..., prefixes=...)`
on a batch of two single-speaker scripts with audio prefixes of different lengths: the text is
forced to the zero token during the prefix, the prefix codes are fed with the codebook delays
plus `delay_steps`, the state machine takes over after the prefix. Three runs: no CFG; real CFG
(cfg_coef 2, doubled batch) with `cfg_is_no_prefix` (the null half does not see the prefix until
its length + delay_steps); real CFG without it. Writes tests/golden/data/:

- tts_clone_weights.safetensors: the LM in the released PyTorch key format;
- tts_clone.json: LM kwargs, settings, the scaled `text_linear` rows, entries, prefixes [K, P]
  (text row -1), and per run the per-step `(sampled, fed)` text ids, every aligned frame,
  `end_steps`, `consumption_times`, `transcripts`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import tts_golden_common as common
from make_golden_lm import released_state_dict
from moshi.models.tts import TokenIds, TTSModel
from safetensors.numpy import save_file

DATA = Path(__file__).parent / "data"
SEED = 13
N_Q = 4
KWARGS = dict(
    dim=64, text_card=40, existing_text_padding_id=3, existing_text_end_padding_id=0, n_q=N_Q,
    dep_q=N_Q, card=24, num_heads=4, num_layers=2, hidden_scale=4.125, causal=True,
    layer_scale=None, context=40, max_period=10000, gating="silu", norm="rms_norm_f32",
    positional_embedding="rope", depformer_dim=32, depformer_dim_feedforward=96,
    depformer_num_heads=2, depformer_num_layers=2, depformer_layer_scale=None,
    depformer_multi_linear=True, depformer_context=N_Q, depformer_max_period=10000,
    depformer_gating="silu", depformer_pos_emb="none", depformer_weights_per_step=True,
    depformer_weights_per_step_schedule=[0, 1, 2, 2], delays=[0, 0] + [2] * (N_Q - 1),
    cross_attention=False, conditioners={}, text_card_out=44,
)
SCRIPTS = [["Hello there, the fox jumps."], ["Where are you going today?"]]
PREFIX_LEN = [5, 8]
SETTINGS = dict(delay_steps=3, second_stream_ahead=0, max_padding=8, initial_padding=2,
                final_padding=4, max_gen_length=100, padding_between=1, text_row_scale=3.0,
                cfg_coef=2.0)


def run(tts: TTSModel, sp, ids: TokenIds, prefixes: list[torch.Tensor], cfg_coef: float,
        cfg_is_no_prefix: bool = True) -> dict:
    tts.cfg_coef = cfg_coef
    entries = common.script_entries(sp, ids, SCRIPTS, False, SETTINGS["padding_between"])
    # No conditioner: no attributes, as `TTSModel.simple_generate` does for prefix models.
    res = tts.generate(entries, [], prefixes=prefixes, cfg_is_no_prefix=cfg_is_no_prefix)
    return common.result_record(entries, res)


def main() -> None:
    model = common.random_lm(KWARGS, SEED)
    weights = {k: v.numpy() for k, v in released_state_dict(model).items()}
    save_file(weights, str(DATA / "tts_clone_weights.safetensors"))
    sp = common.tokenizer(KWARGS["text_card"] - 4)
    tts, ids = common.greedy_tts(model, sp, SETTINGS)
    g = torch.Generator().manual_seed(SEED + 1)
    prefixes = []
    for n in PREFIX_LEN:  # what `TTSModel.get_prefix` returns: the zero text row, then the codes
        codes = torch.randint(0, KWARGS["card"], (N_Q, n), generator=g)
        prefixes.append(torch.cat([torch.full((1, n), ids.zero), codes]).long())
    out = dict(
        lm=KWARGS, settings=SETTINGS, scripts=SCRIPTS, text_rows=common.TEXT_ROWS,
        text_linear_rows=model.text_linear.weight[common.TEXT_ROWS].tolist(),
        prefixes=[p.tolist() for p in prefixes],
        plain=run(tts, sp, ids, prefixes, 1.0),
        cfg=run(tts, sp, ids, prefixes, SETTINGS["cfg_coef"]),
        cfg_with_prefix=run(tts, sp, ids, prefixes, SETTINGS["cfg_coef"], cfg_is_no_prefix=False),
    )
    path = DATA / "tts_clone.json"
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(path.stat().st_size, "bytes;", (DATA / "tts_clone_weights.safetensors").stat().st_size)
    for name in ("plain", "cfg", "cfg_with_prefix"):
        r = out[name]
        sampled = [s for item in r["text_tokens"] for s, _ in item]
        print(name, "steps", len(r["text_tokens"][0]), "end", r["end_steps"], "sampled 0/3:",
              sampled.count(0), sampled.count(3), r["transcripts"])


if __name__ == "__main__":
    main()
