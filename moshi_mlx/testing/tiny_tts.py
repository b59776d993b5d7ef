"""Write a tiny random TTS repository in the layout of `kyutai/tts-1.6b-en_fr`, with a voice.

    python -m moshi_mlx.testing.tiny_repo OUT_DIR --kind tts [--seed N]

Files (the real repo's names and `config.json` form; see docs/tts.md):
- `dsm_tts_00000000@0.safetensors`: a random LM (dim 64, 2 layers, context 50 or
  `write_tiny_tts_repo(context=...)`, 8 codebooks of 128 bins all generated,
  delays [0, 0] + [2] * 7) with every TTS feature of the real one: demuxed
  second text stream, low-rank depformer embeddings with a weight schedule, cross-attention to
  `speaker_wavs`, `cfg` and `control` LUT conditioners. Kyutai's MLX names, bf16 (the loader
  reads either naming);
- the tiny Mimi and sentencepiece model of `tiny_repo` (same file names as the Moshi tiny repo;
  the real TTS repo has `tokenizer_spm_8k_en_fr_audio.model`, named by `tokenizer_name`);
- `voices/default.wav.00000000@0.safetensors`: a random voice `speaker_wavs` [1, 32, 10];
- `config.json`: LM kwargs, conditioners, fuser, `tts_config` (audio delay 1.28 s, second
  stream 2 ahead), `model_id`, file names, `model_type` "tts" and the tiny Mimi's block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..checkpoint.layout import MIMI_FILE, TOKENIZER_FILE
from ..config import LmConfig

log = logging.getLogger(__name__)

MODEL_ID = {"sig": "00000000", "epoch": 0}
TTS_FILE = f"dsm_tts_{MODEL_ID['sig']}@{MODEL_ID['epoch']}.safetensors"
VOICE_DIM, VOICE_STEPS = 32, 10
CFG_VALUES = ["1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0"]


def tiny_tts_config(text_card: int, card: int, n_q: int, context: int = 50) -> dict:
    """config.json of the tiny TTS model (LM kwargs plus the TTS hub keys); `context`: the
    temporal attention context in steps (tts-1.6b-en_fr's is 500, for long-run benchmarks)."""
    lm = LmConfig(
        dim=64, text_card=text_card, n_q=n_q, dep_q=n_q, card=card, num_heads=4, num_layers=2,
        hidden_scale=3.0, context=context, depformer_dim=64, depformer_dim_feedforward=192,
        depformer_num_heads=4, depformer_num_layers=1,
        depformer_weights_per_step_schedule=tuple(list(range(4)) + [4] * (n_q - 4)),
        delays=tuple([0, 0] + [2] * (n_q - 1)), demux_second_stream=True,
        depformer_low_rank_embeddings=16, cross_attention=True,
    )
    cfg = lm.to_dict()
    cfg.update(
        conditioners={
            "speaker_wavs": {"type": "tensor", "tensor": {"dim": VOICE_DIM}},
            "cfg": {"type": "lut", "lut": {"n_bins": 7, "dim": 16, "tokenizer": "noop",
                                           "possible_values": CFG_VALUES}},
            "control": {"type": "lut", "lut": {"dim": 64, "n_bins": 1, "tokenizer": "noop",
                                               "possible_values": ["ok"]}},
        },
        fuser={"cross_attention_pos_emb": True, "cross_attention_pos_emb_scale": 1,
               "sum": ["control", "cfg"], "prepend": [], "cross": ["speaker_wavs"]},
        tts_config={"audio_delay": 1.28, "second_stream_ahead": 2}, model_id=MODEL_ID,
        moshi_name=TTS_FILE, mimi_name=MIMI_FILE, tokenizer_name=TOKENIZER_FILE, model_type="tts",
        lm_gen_config={"temp": 0.6, "text_temp": 0.6},
    )
    return cfg


def write_tiny_tts_lm(out: Path, seed: int, make_config: Callable[[int, int, int], dict]) -> None:
    """The tiny tokenizer and Mimi of `tiny_repo`, then a random bf16 LM saved as TTS_FILE with
    `make_config(text_card, card, n_q)` (plus the Mimi block) as config.json."""
    import mlx.core as mx

    from ..loading import save_lm
    from ..models.lm import Lm
    from .tiny_repo import tiny_mimi_config, write_tokenizer_and_mimi

    mimi_cfg = tiny_mimi_config()
    vocab = write_tokenizer_and_mimi(out, TOKENIZER_FILE, MIMI_FILE, mimi_cfg, seed)
    config = make_config(vocab, mimi_cfg.quantizer_bins, mimi_cfg.quantizer_n_q)
    config["mimi"] = mimi_cfg.to_dict()
    mx.random.seed(seed)
    lm = Lm(LmConfig.from_dict(config))
    lm.set_dtype(mx.bfloat16)
    mx.eval(lm.parameters())
    save_lm(lm, out, filename=TTS_FILE, config=config)


def write_tiny_tts_repo(out_dir: str | Path, seed: int = 0, context: int = 50) -> Path:
    from safetensors.numpy import save_file

    out = Path(out_dir)
    write_tiny_tts_lm(out, seed, lambda text_card, card, n_q: tiny_tts_config(text_card, card, n_q, context))
    voices = out / "voices"
    voices.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    voice = rng.standard_normal((1, VOICE_DIM, VOICE_STEPS)).astype(np.float32)
    path = voices / f"default.wav.{MODEL_ID['sig']}@{MODEL_ID['epoch']}.safetensors"
    save_file({"speaker_wavs": voice}, str(path))
    path.chmod(0o644)
    log.info("wrote tiny TTS model to %s", out)
    return out
