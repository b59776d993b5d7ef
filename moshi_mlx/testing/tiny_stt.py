"""A tiny random speech-to-text repository in the layout of Kyutai's `stt-1b-en_fr-candle`.

    python -m moshi_mlx.testing.tiny_repo OUT_DIR --kind stt [--quant bf16|q8|q4] [--seed N]

Files (names and `config.json` keys as the real repo):
- `model.safetensors`: a random text-only LM (dim 64, 2 layers, `dep_q` 0, 32 user codebooks of
  128 bins, all delays 0, context 750, max_period 100000) with 4 extra VAD heads of 6 classes, in
  PyTorch key names as the candle repo (`--quant q8/q4`: `model.q8/q4.safetensors` in Kyutai's
  MLX names, quantized as their files are);
- `mimi-pytorch-e351c8d8@125.safetensors`: the tiny random Mimi of `tiny_repo`, 32 codebooks;
- `tokenizer_en_fr_audio_8000.model`: the tiny sentencepiece model of `tiny_repo`;
- `config.json`: LM kwargs, `model_type` "stt", `stt_config` (0.5 s delay, no silence prefix),
  `lm_gen_config`, the file names, and the `"mimi"` block of the small Mimi.

The random LM is shaped so that its output depends on what it hears and looks like a transcript:
text logits favour PAD (3) and EPAD (0) with word tokens in between, and VAD head 2 swings across
0.5, so words and end-of-turn events both occur on ordinary audio.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from ..checkpoint.layout import STT
from ..config import LmConfig

log = logging.getLogger(__name__)

STT_MIMI_FILE = STT.mimi_file
STT_TOKENIZER_FILE = STT.tokenizer_file
STT_CONFIG = {"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.0}
LM_GEN_CONFIG = {"temp": 0.0, "temp_text": 0.0, "top_k": 250, "top_k_text": 50}


def tiny_stt_config(text_card: int, card: int) -> LmConfig:
    return LmConfig(
        dim=64, text_card=text_card, n_q=32, dep_q=0, card=card, num_heads=4, num_layers=2,
        hidden_scale=3.0, context=750, max_period=100000, delays=(0,) * 33,
        depformer_multi_linear=False, extra_heads_num_heads=4, extra_heads_dim=6,
    )


def _shape_outputs(w: dict, rng: np.random.Generator) -> None:
    """Bias the random heads toward transcript-like output (see the module docstring)."""
    import mlx.core as mx

    tl = np.asarray(w["text_linear.weight"].astype(mx.float32))
    tl *= 4.0  # outputs depend on the input, not on ties
    # Token 0 and 3 follow the same direction of the hidden state with offsets: PAD most of the
    # time, EPAD at the edges, words otherwise.
    d = rng.standard_normal(tl.shape[1]).astype(np.float32)
    d /= np.linalg.norm(d)
    tl[3] = tl[3] + 6.0 * d
    tl[0] = tl[0] + 3.0 * d + 1.0 * rng.standard_normal(tl.shape[1]).astype(np.float32)
    w["text_linear.weight"] = mx.array(tl).astype(mx.bfloat16)
    h2 = np.asarray(w["extra_heads.2.weight"].astype(mx.float32)) * 30.0
    w["extra_heads.2.weight"] = mx.array(h2).astype(mx.bfloat16)


def write_tiny_stt_repo(out_dir: str | Path, quant: str = "bf16", seed: int = 0) -> Path:
    """Write the tiny STT repo into `out_dir` (created if needed); returns its path."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from safetensors.numpy import save_file

    from ..loading import save_lm
    from ..models.lm import Lm
    from ..quant import quantize_lm
    from .tiny_repo import (
        LM_FILES,
        QUANT_SPECS,
        tiny_mimi_config,
        write_tokenizer_and_mimi,
    )

    if quant not in LM_FILES:
        raise ValueError(f"unknown --quant {quant!r}; choose from {', '.join(LM_FILES)}")
    out = Path(out_dir)
    mimi_cfg = dataclasses.replace(tiny_mimi_config(), quantizer_n_q=32)
    vocab = write_tokenizer_and_mimi(out, STT_TOKENIZER_FILE, STT_MIMI_FILE, mimi_cfg, seed)

    cfg = tiny_stt_config(text_card=vocab, card=mimi_cfg.quantizer_bins)
    mx.random.seed(seed)
    lm = Lm(cfg)
    lm.set_dtype(mx.bfloat16)
    w = dict(tree_flatten(lm.parameters()))
    _shape_outputs(w, np.random.default_rng(seed + 7))
    lm.load_weights(list(w.items()), strict=True)
    config = cfg.to_dict()
    config.update(moshi_name=LM_FILES[quant], mimi_name=STT_MIMI_FILE,
                  tokenizer_name=STT_TOKENIZER_FILE, model_type="stt", stt_config=STT_CONFIG,
                  lm_gen_config=LM_GEN_CONFIG, mimi=mimi_cfg.to_dict())
    if quant in QUANT_SPECS:
        quantize_lm(lm, QUANT_SPECS[quant])
        mx.eval(lm.parameters())
        save_lm(lm, out, filename=LM_FILES[quant], config=config)
    else:
        # float32 holding the bf16 values (safetensors' NumPy writer has no bfloat16)
        pt = {k: np.asarray(v.astype(mx.float32)) for k, v in _to_torch_names(w, cfg).items()}
        save_file(pt, str(out / LM_FILES[quant]))
        (out / "config.json").write_text(json.dumps(config, indent=2))
    log.info("wrote tiny %s STT model to %s", quant, out)
    return out


def _to_torch_names(w: dict, cfg: LmConfig) -> dict:
    """Our (Kyutai MLX) names -> the PyTorch release names of a text-only LM."""
    import mlx.core as mx

    out = {}
    for k, v in w.items():
        if k.startswith("audio_embs."):
            k = "emb." + k[len("audio_embs."):]
        elif k.endswith(".in_proj.weight"):
            k = k.replace(".in_proj.weight", ".in_proj_weight")
        elif k.endswith(("norm1.weight", "norm2.weight")) or k == "out_norm.weight":
            k, v = k[: -len("weight")] + "alpha", v.reshape(1, 1, -1)
        out[k] = v
    # PT builds one unused `depformer_in` Linear when depformer_multi_linear is False.
    out["depformer_in.0.weight"] = mx.zeros((cfg.depformer_dim, cfg.dim), mx.bfloat16)
    return out
