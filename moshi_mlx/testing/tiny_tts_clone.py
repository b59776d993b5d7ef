"""Write a tiny random voice-cloning TTS repository, in the layout of `kyutai/tts-0.75b-en-public`.

    python -m moshi_mlx.testing.tiny_repo OUT_DIR --kind tts-clone [--seed N]

The voice is an audio prefix, not an embedding (docs/tts.md, moshi_mlx/tts/prefix.py): the LM
has no cross-attention and no conditioner (`"conditioners": {}`), so real CFG doubles the batch
(text and prefix dropped from the null half). Files, as `tiny_repo --kind tts` (tiny_tts.py):
- `dsm_tts_00000000@0.safetensors`: a random LM (dim 64, 2 layers, context 50, the tiny Mimi's
  8 codebooks of 128 bins all generated, delays [0, 0] + [2] * 7, one text stream, a depformer
  weight schedule); Kyutai's MLX names, bf16;
- the tiny Mimi and sentencepiece model of `tiny_repo`;
- `config.json`: LM kwargs, `conditioners` {}, `tts_config` (audio delay 1.28 s), `model_id`,
  file names, `model_type` "tts" and the tiny Mimi's block. No `voices/`: `speak --voice X.wav`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..checkpoint.layout import MIMI_FILE, TOKENIZER_FILE
from ..config import LmConfig
from .tiny_tts import MODEL_ID, TTS_FILE, write_tiny_tts_lm

log = logging.getLogger(__name__)


def tiny_tts_clone_config(text_card: int, card: int, n_q: int) -> dict:
    """config.json of the tiny voice-cloning TTS model (LM kwargs plus the TTS hub keys)."""
    lm = LmConfig(
        dim=64, text_card=text_card, n_q=n_q, dep_q=n_q, card=card, num_heads=4, num_layers=2,
        hidden_scale=3.0, context=50, depformer_dim=64, depformer_dim_feedforward=192,
        depformer_num_heads=4, depformer_num_layers=1,
        depformer_weights_per_step_schedule=tuple(list(range(4)) + [4] * (n_q - 4)),
        delays=tuple([0, 0] + [2] * (n_q - 1)),
    )
    cfg = lm.to_dict()
    cfg.update(
        conditioners={}, tts_config={"audio_delay": 1.28}, model_id=MODEL_ID,
        moshi_name=TTS_FILE, mimi_name=MIMI_FILE, tokenizer_name=TOKENIZER_FILE, model_type="tts",
        lm_gen_config={"temp": 0.6, "text_temp": 0.6},
    )
    return cfg


def write_tiny_tts_clone_repo(out_dir: str | Path, seed: int = 0) -> Path:
    out = Path(out_dir)
    write_tiny_tts_lm(out, seed, tiny_tts_clone_config)
    log.info("wrote tiny voice-cloning TTS model to %s", out)
    return out
