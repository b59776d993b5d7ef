"""Key/shape/dtype manifest of Kyutai's real TTS checkpoint, without any weights.

    REFENV/bin/python tests/golden/make_tts_manifest.py   # torch + moshi 0.2.13

Writes `tests/golden/data/tts_1.6b_manifest.json`:
- "config": the `config.json` of `kyutai/tts-1.6b-en_fr` as documented in docs/tts.md (LM kwargs,
  conditioners, fuser, tts_config, file names);
- "torch": every tensor of its released `dsm_tts_1e68beda@240.safetensors` as [shape, dtype]:
  moshi's `LMModel` built by moshi's own `loaders.get_moshi_lm` on torch's meta device (no
  memory), with the per-set attention weights `in_projs.{i}` / `out_projs.{i}` concatenated
  along dim 0 into `in_proj_weight` / `out_proj.weight` as in released files, bfloat16 except
  the conditioners, which moshi keeps in float32.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from moshi.models import loaders

OUT = Path(__file__).parent / "data" / "tts_1.6b_manifest.json"

CONFIG = {
    "card": 2048, "n_q": 32, "dep_q": 32, "delays": [0, 0] + [2] * 31, "dim": 2048,
    "text_card": 8000, "existing_text_padding_id": 3, "num_heads": 16, "num_layers": 16,
    "hidden_scale": 4.125, "causal": True, "layer_scale": None, "context": 500,
    "max_period": 10000, "gating": "silu", "norm": "rms_norm_f32", "positional_embedding": "rope",
    "depformer_dim": 1024, "depformer_num_heads": 16, "depformer_num_layers": 4,
    "depformer_dim_feedforward": 3072, "depformer_multi_linear": True, "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "depformer_weights_per_step_schedule": list(range(8)) + [8] * 8 + [9] * 8 + [10] * 8,
    "depformer_low_rank_embeddings": 128, "demux_second_stream": True, "text_card_out": None,
    "cross_attention": True,
    "conditioners": {
        "speaker_wavs": {"type": "tensor", "tensor": {"dim": 512}},
        "cfg": {"type": "lut", "lut": {"n_bins": 7, "dim": 16, "tokenizer": "noop",
                                       "possible_values": ["1.0", "1.5", "2.0", "2.5", "3.0",
                                                           "3.5", "4.0"]}},
        "control": {"type": "lut", "lut": {"dim": 2048, "n_bins": 1, "tokenizer": "noop",
                                           "possible_values": ["ok"]}},
    },
    "fuser": {"cross_attention_pos_emb": True, "cross_attention_pos_emb_scale": 1,
              "sum": ["control", "cfg"], "prepend": [], "cross": ["speaker_wavs"]},
    "tts_config": {"audio_delay": 1.28, "second_stream_ahead": 2},
    "model_id": {"sig": "1e68beda", "epoch": 240},
    "tokenizer_name": "tokenizer_spm_8k_en_fr_audio.model",
    "mimi_name": "tokenizer-e351c8d8-checkpoint125.safetensors",
    "moshi_name": "dsm_tts_1e68beda@240.safetensors",
    "model_type": "tts", "lm_gen_config": {"temp": 0.6, "text_temp": 0.6},
}
# Keys moshi's `CheckpointInfo` keeps for itself (not LM kwargs).
HUB = ("tts_config", "model_id", "tokenizer_name", "mimi_name", "moshi_name", "model_type",
       "lm_gen_config")


def torch_section() -> dict:
    kwargs = {k: v for k, v in json.loads(json.dumps(CONFIG)).items() if k not in HUB}
    model = loaders.get_moshi_lm(None, lm_kwargs=kwargs, device="meta", dtype=torch.bfloat16)
    out: dict = {}
    pattern = re.compile(r"^(.*\.(?:self_attn|cross_attention))\.(in|out)_projs\.(\d+)\.weight$")
    for k, v in model.state_dict().items():
        dtype = "float32" if k.startswith(("condition_provider.", "fuser.")) else "bfloat16"
        assert str(v.dtype).removeprefix("torch.") == dtype, (k, v.dtype)
        match = pattern.match(k)
        if match is None:
            out[k] = [list(v.shape), dtype]
            continue
        prefix, kind, _ = match.groups()
        name = f"{prefix}.in_proj_weight" if kind == "in" else f"{prefix}.out_proj.weight"
        if name in out:
            out[name][0][0] += v.shape[0]
        else:
            out[name] = [list(v.shape), dtype]
    return out


def main() -> None:
    torch_keys = torch_section()
    OUT.write_text(json.dumps({"config": CONFIG, "torch": torch_keys}, sort_keys=True,
                              separators=(",", ":")) + "\n")
    dtypes = [d for _, d in torch_keys.values()]
    print(len(torch_keys), {d: dtypes.count(d) for d in set(dtypes)}, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
