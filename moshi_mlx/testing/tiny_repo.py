"""Write a tiny random Moshi repository, in the layout of Kyutai's MLX repos, for tests and smoke runs.

    python -m moshi_mlx.testing.tiny_repo OUT_DIR [--quant bf16|q8|q4] [--seed N] [--full-mimi]
    python -m moshi_mlx.testing.tiny_repo OUT_DIR --kind tts [--seed N]   # see tiny_tts.py
    python -m moshi_mlx.testing.tiny_repo OUT_DIR --kind tts-clone   # see tiny_tts_clone.py
    python -m moshi_mlx.testing.tiny_repo OUT_DIR --kind stt   # speech-to-text, see tiny_stt.py

Files (same names, key formats and `config.json` form as the real repos, see docs/checkpoints.md):
- `model.safetensors` / `model.q8.safetensors` / `model.q4.safetensors`: a random `Lm` (dim 64, 2
  temporal layers, 8+8 audio codebooks of 128 bins) in Kyutai's MLX names, quantized with
  `moshi_mlx.quant` (q8: group 64, q4: group 32, as Kyutai's files);
- `tokenizer-e351c8d8-checkpoint125.safetensors`: a small random Mimi (same 24 kHz / 1920-sample
  frames, 8 codebooks of 128 bins fitted to its encoder, so different inputs get different codes)
  in the released PyTorch key names, its output scaled to speech level so that the audio path can
  be checked by ear and by meters;
- `tokenizer_spm_32k_3.model`: sentencepiece trained on a few sentences, with Kyutai's special ids
  (0 unk, 1 bos, 2 eos, 3 pad);
- `config.json`: the LM kwargs, hub keys `moshi_name`/`mimi_name`/`tokenizer_name`, a `"mimi"`
  block with the small Mimi's `MimiConfig`, and the `"quantization"` block for q8/q4.

Everything is deterministic for a given seed, and it takes a few seconds.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from pathlib import Path

import numpy as np

from ..checkpoint.layout import LM_FILES, MIMI_FILE, TOKENIZER_FILE
from ..checkpoint.spec import QParams
from ..config import LmConfig, MimiConfig, mimi_202407

log = logging.getLogger(__name__)

CARD = 128  # audio bins of the tiny Mimi and LM (real: 2048)
QUANT_SPECS = {"q8": QParams(8, 64).as_block(), "q4": QParams(4, 32).as_block()}  # Kyutai's
OUTPUT_RMS = 0.1  # Moshi's voice from the tiny Mimi: about -20 dBFS, no clipping

SENTENCES = [
    "Hello, I am Moshi, a speech model that listens and talks at the same time.",
    "How are you doing today? I am fine, thank you for asking.",
    "The weather is nice and the sun is shining over the hills.",
    "Can you tell me a story about a cat who lived in Paris?",
    "We made this tiny model to test the audio path of the application.",
    "Numbers like one, two, three and four are easy to say.",
    "Good morning, good evening, and good night to everyone here.",
    "Please speak slowly so that I can understand what you mean.",
]


def tiny_lm_config(text_card: int, card: int = CARD) -> LmConfig:
    """Every feature of the real config at toy sizes; group sizes 32 and 64 divide every input."""
    return LmConfig(
        dim=64, text_card=text_card, n_q=16, dep_q=8, card=card, num_heads=4, num_layers=2,
        hidden_scale=3.0,  # gated hidden 2 * 192 // 3 = 128
        context=3000, depformer_dim=64, depformer_dim_feedforward=192, depformer_num_heads=4,
        depformer_num_layers=1,
    )


def tiny_mimi_config() -> MimiConfig:
    return MimiConfig(
        dimension=32, n_filters=4, transformer_num_heads=2, transformer_num_layers=1,
        transformer_dim_feedforward=64, quantizer_dimension=16, quantizer_n_q=8,
        quantizer_bins=CARD,
    )


def train_tokenizer(vocab_size: int = 96) -> bytes:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 4), model_writer=buf, vocab_size=vocab_size,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3, num_threads=1, minloglevel=2,
        model_type="unigram", character_coverage=1.0,
    )
    return buf.getvalue()


def build_mimi_weights(cfg: MimiConfig, seed: int, codebooks_from_data: bool = True) -> dict:
    """Random Mimi with initialized codebooks, output scaled to OUTPUT_RMS; released PyTorch names.

    `codebooks_from_data`: codebooks fitted to the random encoder's latents (else unit-normal
    vectors, with which every input encodes to the same codes)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from ..models.mimi.mimi import Mimi
    from ..models.mimi.synthetic import fit_codebooks
    from ..weights.mimi import map_mimi_to_torch

    mx.random.seed(seed + 1)
    mimi = Mimi(cfg)
    w = dict(tree_flatten(mimi.parameters()))
    for k, v in w.items():  # a fresh codebook is "uninitialized" (all codes 0): give it vectors
        if k.endswith("codebook.embedding_sum"):
            w[k] = mx.random.normal(v.shape)
        elif k.endswith(("codebook.cluster_usage", "codebook.initialized")):
            w[k] = mx.ones(v.shape, v.dtype)
    mimi.load_weights(list(w.items()), strict=True)
    rng = np.random.default_rng(seed)
    if codebooks_from_data:
        # Small noise (1e-3 of the residuals' spread) keeps codes apart without blurring them.
        fit_codebooks(mimi, _probe(cfg, rng), seed, noise=1e-3)
        w = dict(tree_flatten(mimi.parameters()))
        mimi = Mimi(cfg)  # a fresh model: the first one's prepared steps hold the old codebooks
        mimi.load_weights(list(w.items()), strict=True)
    # Calibrate on what the app plays: the random LM samples codes all over the codebooks (a
    # round trip of user audio decodes far quieter, and calibrating on it made Moshi clip).
    codes = rng.integers(0, cfg.quantizer_bins, (1, 8, 16)).astype(np.uint32)
    rms = float(np.sqrt(np.mean(np.square(np.asarray(mimi.decode(mx.array(codes)))))))
    gain = OUTPUT_RMS / max(rms, 1e-8)
    for k in ("decoder.final_conv1d.conv.conv.weight", "decoder.final_conv1d.conv.conv.bias"):
        w[k] = w[k] * gain  # the last decoder conv is linear: this scales the output
    return {k: np.asarray(v, np.float32) for k, v in map_mimi_to_torch(w, cfg).items()}


def _probe(cfg: MimiConfig, rng: np.random.Generator) -> np.ndarray:
    """Speech-level noise and tones (0.01-0.3), one frame each, to fit the codebooks on.
    Unit-normal codebooks are far larger than a random encoder's latents (~1e-3): every input
    then picked the same code and Moshi never heard the user."""
    n = 2 * cfg.quantizer_bins
    t = np.arange(cfg.frame_size) / cfg.sample_rate
    amps = np.geomspace(0.01, 0.3, n)
    tones = np.sin(2 * np.pi * rng.uniform(80, 2000, (n, 1)) * t)
    frames = np.where(rng.random((n, 1)) < 0.5, tones, rng.standard_normal((n, cfg.frame_size)))
    return (amps[:, None] * frames).astype(np.float32).reshape(1, 1, -1)


def write_tokenizer_and_mimi(out: Path, tokenizer_file: str, mimi_file: str, mimi_cfg: MimiConfig,
                             seed: int, codebooks_from_data: bool = True) -> int:
    """Create `out` and write the tiny tokenizer and a random Mimi (released PyTorch names) into it,
    as every tiny repo kind does; returns the tokenizer's vocabulary size."""
    import sentencepiece
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    spm_bytes = train_tokenizer()
    (out / tokenizer_file).write_bytes(spm_bytes)
    save_file(build_mimi_weights(mimi_cfg, seed, codebooks_from_data=codebooks_from_data),
              str(out / mimi_file))
    (out / mimi_file).chmod(0o644)  # safetensors writes 0600
    return sentencepiece.SentencePieceProcessor(model_proto=spm_bytes).vocab_size()


def write_tiny_repo(out_dir: str | Path, quant: str = "bf16", seed: int = 0,
                    full_mimi: bool = False) -> Path:
    """Write the tiny repo into `out_dir` (created if needed); returns its path.

    `full_mimi`: a random Mimi of the released shape (32 codebooks of 2048, 385 MB, no "mimi"
    block in config.json) with an LM of 2048 audio bins, so that `--mimi-backend rustymimi` (which
    hard-codes the real configuration) runs too."""
    import mlx.core as mx

    from ..loading import save_lm
    from ..models.lm import Lm
    from ..quant import quantize_lm

    if quant not in LM_FILES:
        raise ValueError(f"unknown --quant {quant!r}; choose from {', '.join(LM_FILES)}")
    out = Path(out_dir)
    mimi_cfg = mimi_202407(32) if full_mimi else tiny_mimi_config()
    # The real-size random Mimi keeps unit-normal codebooks: fitting them would take ~25 s here.
    vocab = write_tokenizer_and_mimi(out, TOKENIZER_FILE, MIMI_FILE, mimi_cfg, seed,
                                     codebooks_from_data=not full_mimi)
    lm_cfg = tiny_lm_config(text_card=vocab, card=mimi_cfg.quantizer_bins)

    mx.random.seed(seed)
    lm = Lm(lm_cfg)
    lm.set_dtype(mx.bfloat16)  # as Kyutai's MLX files (their quantizer casts to bf16 first)
    if quant in QUANT_SPECS:
        quantize_lm(lm, QUANT_SPECS[quant])
    mx.eval(lm.parameters())
    config = lm_cfg.to_dict()
    config.update(moshi_name=LM_FILES[quant], mimi_name=MIMI_FILE, tokenizer_name=TOKENIZER_FILE,
                  model_type="moshi")
    if not full_mimi:
        config["mimi"] = mimi_cfg.to_dict()
    save_lm(lm, out, filename=LM_FILES[quant], config=config)
    log.info("wrote tiny %s Moshi to %s", quant, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m moshi_mlx.testing.tiny_repo",
                                description="Write a tiny random Moshi repo (tests, smoke runs).")
    p.add_argument("out_dir")
    p.add_argument("--kind", choices=["moshi", "stt", "tts", "tts-clone"], default="moshi",
                   help="moshi (default); stt: a speech-to-text model with VAD heads "
                        "(moshi_mlx.testing.tiny_stt); tts: a text-to-speech model with a voice "
                        "(moshi_mlx.testing.tiny_tts); tts-clone: a TTS model that clones a "
                        "voice from a recording (moshi_mlx.testing.tiny_tts_clone)")
    p.add_argument("--quant", choices=list(LM_FILES), default="bf16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full-mimi", action="store_true",
                   help="real-size random Mimi (385 MB), so --mimi-backend rustymimi works too")
    a = p.parse_args(argv)
    if a.kind == "tts":
        from .tiny_tts import write_tiny_tts_repo

        path = write_tiny_tts_repo(a.out_dir, a.seed)
        print(f"tiny TTS model written to {path}: use --model-dir {path}")
        return 0
    if a.kind == "tts-clone":
        from .tiny_tts_clone import write_tiny_tts_clone_repo

        path = write_tiny_tts_clone_repo(a.out_dir, a.seed)
        print(f"tiny voice-cloning TTS model written to {path}: use --model-dir {path} "
              "--voice RECORDING.wav")
        return 0
    if a.kind == "stt":
        from .tiny_stt import write_tiny_stt_repo

        path = write_tiny_stt_repo(a.out_dir, a.quant, a.seed)
        print(f"tiny {a.quant} STT model written to {path}: use --model-dir {path}")
        return 0
    path = write_tiny_repo(a.out_dir, a.quant, a.seed, full_mimi=a.full_mimi)
    print(f"tiny {a.quant} Moshi written to {path}: use --model-dir {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
