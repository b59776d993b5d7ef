"""Write a random TTS repository at the real shape of `kyutai/tts-1.6b-en_fr`, for benchmarks.

    python -m moshi_mlx.testing.real_tts OUT_DIR [--seed N]    # ~3.8 GB, about a minute
    python -m moshi_mlx.testing.real_tts OUT_DIR --small       # small LM, real Mimi (smoke runs)

The LM checkpoint is written as the released one is (docs/tts.md): PyTorch key names (418
tensors), bf16 except the 8 conditioner tensors in float32, the depformer's per-set attention
weights concatenated along dim 0 (`in_proj_weight`, `out_proj.weight`), so that both our loader
(`moshi_mlx.weights.lm.map_lm_torch`) and Kyutai's `Lm.load_pytorch_weights` read the same file.
`torch_shapes(config)` derives every name and shape from the LM kwargs; at the real config it
equals the key manifest that PyTorch moshi gives (tests/test_real_tts_repo.py).

Weights are drawn so that the activations and logits have a realistic spread (not degenerate):
N(0, 1) embedding tables and voice, N(0, 1/fan_in) matrices (unit-variance outputs), RMS-norm
scales 1 + N(0, 0.1^2), cross-attention LayerNorm weight 1 and bias 0 plus the same noise.

Also written: a random Mimi of the released shape (`mimi_202407`, 32 codebooks of 2048,
unit-normal codebooks, output scaled to speech level by `tiny_repo.build_mimi_weights`), the
small sentencepiece model of `tiny_repo` under the real tokenizer's file name (only token ids
below `text_card` matter to the LM; the real one has 8000 pieces), a voice
`voices/random.<model_id>.safetensors` with `speaker_wavs` [1, 512, 125] float32, and the real
`config.json`. `write_real_tts_repo(..., config=..., mimi=...)` writes any smaller config the same
way (tests use a scaled-down one with the tiny Mimi, whose block then goes into `config.json`).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import MimiConfig

log = logging.getLogger(__name__)

# config.json of kyutai/tts-1.6b-en_fr (docs/tts.md); must equal the manifest's "config".
REAL_CONFIG: dict[str, Any] = {
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
VOICE_STEPS = 125  # speaker_wavs [1, dim, 125] as in kyutai/tts-voices
VOICE_NAME = "random"
Shapes = dict[str, tuple[tuple[int, ...], str]]


def small_config(n_q: int = 8, card: int = 128, text_card: int = 128,
                 dim: int = 64) -> dict[str, Any]:
    """The real config.json scaled down (2 + 2 layers, depformer dim 64, low rank 64, 5 weight
    sets), every feature kept: for tests and quick smoke runs of the benchmark (dim 256: every
    width a multiple of 64, as Kyutai's quantization needs; its config keeps hidden_scale)."""
    cfg = copy.deepcopy(REAL_CONFIG)
    cfg.update(
        dim=dim, num_heads=4, num_layers=2, context=50, card=card, n_q=n_q, dep_q=n_q,
        text_card=text_card, delays=[0, 0] + [2] * (n_q - 1), depformer_dim=64,
        depformer_num_heads=4, depformer_num_layers=2, depformer_dim_feedforward=192,
        depformer_weights_per_step_schedule=list(range(4)) + [4] * (n_q - 4),
        depformer_low_rank_embeddings=64,  # group 64 divides it (Kyutai quantizes the tables)
    )
    cfg["conditioners"]["speaker_wavs"]["tensor"]["dim"] = 32
    cfg["conditioners"]["control"]["lut"]["dim"] = 64
    cfg["model_id"] = {"sig": "00000000", "epoch": 0}
    cfg["moshi_name"] = "dsm_tts_00000000@0.safetensors"
    return cfg


def gated_hidden(dim_feedforward: int) -> int:
    """Width of a SiLU-gated MLP: 2/3 of the configured feed-forward size (as moshi)."""
    return 2 * dim_feedforward // 3


def torch_shapes(cfg: dict[str, Any]) -> Shapes:
    """Every tensor of a released-format TTS LM checkpoint (PyTorch names) -> (shape, dtype)
    for the LM kwargs `cfg`. Covers the tts-1.6b family: per-step depformer weights with a
    schedule, low-rank depformer embeddings, demuxed text, cross-attention, LUT/tensor
    conditioners."""
    for key in ("depformer_weights_per_step_schedule", "depformer_low_rank_embeddings"):
        if not cfg.get(key):
            raise ValueError(f"torch_shapes needs {key} (the TTS model family)")
    d, dd, rank = cfg["dim"], cfg["depformer_dim"], cfg["depformer_low_rank_embeddings"]
    hidden = gated_hidden(int(cfg["hidden_scale"] * d))
    dhidden = gated_hidden(cfg["depformer_dim_feedforward"])
    sets = max(cfg["depformer_weights_per_step_schedule"]) + 1
    text_rows = cfg["text_card"] + 1
    bf, f32 = "bfloat16", "float32"
    out: Shapes = {
        "text_emb.weight": ((text_rows, d), bf),
        "text_linear.weight": ((cfg["text_card_out"] or cfg["text_card"], d), bf),
        "out_norm.alpha": ((1, 1, d), bf),
        "depformer_text_emb.weight": ((text_rows, rank), bf),
        "depformer_text_emb.low_rank.weight": ((dd, rank), bf),
    }
    if cfg["demux_second_stream"]:
        for o in ("out1", "out2"):
            out[f"text_emb.{o}.weight"] = ((d, d), bf)
            out[f"depformer_text_emb.{o}.weight"] = ((dd, rank), bf)
    for k in range(cfg["n_q"]):
        out[f"emb.{k}.weight"] = ((cfg["card"] + 1, d), bf)
    for i in range(cfg["num_layers"]):
        p = f"transformer.layers.{i}"
        out[f"{p}.self_attn.in_proj_weight"] = ((3 * d, d), bf)
        out[f"{p}.self_attn.out_proj.weight"] = ((d, d), bf)
        out[f"{p}.norm1.alpha"] = out[f"{p}.norm2.alpha"] = ((1, 1, d), bf)
        out[f"{p}.gating.linear_in.weight"] = ((2 * hidden, d), bf)
        out[f"{p}.gating.linear_out.weight"] = ((d, hidden), bf)
        if cfg["cross_attention"]:
            out[f"{p}.cross_attention.in_proj_weight"] = ((3 * d, d), bf)
            out[f"{p}.cross_attention.out_proj.weight"] = ((d, d), bf)
            out[f"{p}.norm_cross.weight"] = out[f"{p}.norm_cross.bias"] = ((d,), bf)
    for s in range(sets):
        out[f"depformer_in.{s}.weight"] = ((dd, d), bf)
    for k in range(cfg["dep_q"]):
        out[f"linears.{k}.weight"] = ((cfg["card"], dd), bf)
        if k > 0:
            out[f"depformer_emb.{k - 1}.weight"] = ((cfg["card"] + 1, rank), bf)
            out[f"depformer_emb.{k - 1}.low_rank.weight"] = ((dd, rank), bf)
    for i in range(cfg["depformer_num_layers"]):
        p = f"depformer.layers.{i}"
        # One attention matrix per weight set, concatenated along dim 0 as in released files.
        out[f"{p}.self_attn.in_proj_weight"] = ((3 * dd * sets, dd), bf)
        out[f"{p}.self_attn.out_proj.weight"] = ((dd * sets, dd), bf)
        out[f"{p}.norm1.alpha"] = out[f"{p}.norm2.alpha"] = ((1, 1, dd), bf)
        for s in range(sets):
            out[f"{p}.gating.{s}.linear_in.weight"] = ((2 * dhidden, dd), bf)
            out[f"{p}.gating.{s}.linear_out.weight"] = ((dd, dhidden), bf)
    for name, spec in cfg.get("conditioners", {}).items():
        p = f"condition_provider.conditioners.{name}"
        if spec["type"] == "lut":
            lut = spec["lut"]
            out[f"{p}.embed.weight"] = ((lut["n_bins"] + 1, lut["dim"]), f32)
            out[f"{p}.output_proj.weight"] = ((d, lut["dim"]), f32)
        elif spec["type"] == "tensor":
            out[f"{p}.output_proj.weight"] = ((d, spec["tensor"]["dim"]), f32)
        else:
            raise ValueError(f"conditioner {name}: unsupported type {spec['type']!r}")
        out[f"{p}.learnt_padding"] = ((1, 1, d), f32)
    return out


def random_tensor(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """float32 values at a realistic scale for tensor `name` (module docstring)."""
    if name.endswith((".alpha", "norm_cross.weight")):
        return 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
    if name.endswith("norm_cross.bias"):
        return 0.1 * rng.standard_normal(shape, dtype=np.float32)
    lookup = name.endswith(("embed.weight", "learnt_padding")) or (
        name.startswith(("emb.", "text_emb.", "depformer_emb.", "depformer_text_emb."))
        and not name.endswith(("low_rank.weight", "out1.weight", "out2.weight")))
    if lookup:  # embedding tables and padding vectors
        return rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal(shape, dtype=np.float32)
    return w * np.float32(shape[-1] ** -0.5)  # unit-variance outputs for unit-variance inputs


def write_lm(path: Path, cfg: dict[str, Any], seed: int) -> int:
    """Write the random LM checkpoint; returns its number of parameters."""
    import mlx.core as mx

    rng = np.random.default_rng(seed)
    weights = {}
    for name, (shape, dtype) in torch_shapes(cfg).items():
        # Converted one tensor at a time, so memory holds the bf16 model plus one float32 tensor.
        w = mx.array(random_tensor(name, shape, rng)).astype(getattr(mx, dtype))
        mx.eval(w)
        weights[name] = w
    mx.save_safetensors(str(path), weights, metadata={"format": "pt"})
    return sum(w.size for w in weights.values())


def write_real_tts_repo(out_dir: str | Path, seed: int = 0, config: dict[str, Any] | None = None,
                        mimi: MimiConfig | None = None) -> Path:
    """Write the repository (module docstring) into `out_dir`; returns it. `config` replaces
    the real config.json (same keys), `mimi` the released Mimi's config (then stored in
    config.json's "mimi" block, as tiny repos do)."""
    from safetensors.numpy import save_file

    from ..config import mimi_202407
    from .tiny_repo import write_tokenizer_and_mimi

    cfg = copy.deepcopy(REAL_CONFIG if config is None else config)
    mimi_cfg = mimi if mimi is not None else mimi_202407(cfg["n_q"])
    if mimi_cfg.quantizer_bins != cfg["card"] or mimi_cfg.quantizer_n_q < cfg["n_q"]:
        raise ValueError("the Mimi must have the LM's card and at least its n_q codebooks")
    out = Path(out_dir)
    t0 = time.perf_counter()
    # Unit-normal codebooks at the real size: fitting them to data takes long and does not
    # change the speed; decoding random codes gives speech-level noise either way.
    vocab = write_tokenizer_and_mimi(out, cfg["tokenizer_name"], cfg["mimi_name"], mimi_cfg,
                                     seed, codebooks_from_data=mimi is not None)
    if vocab > cfg["text_card"]:
        raise ValueError(f"tokenizer has {vocab} pieces, more than text_card {cfg['text_card']}")
    if mimi is not None:
        cfg["mimi"] = mimi.to_dict()
    n = write_lm(out / cfg["moshi_name"], cfg, seed)
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    voices = out / "voices"
    voices.mkdir(exist_ok=True)
    dim = cfg["conditioners"]["speaker_wavs"]["tensor"]["dim"]
    rng = np.random.default_rng(seed + 2)
    voice = rng.standard_normal((1, dim, VOICE_STEPS), dtype=np.float32)
    mid = cfg["model_id"]
    path = voices / f"{VOICE_NAME}.{mid['sig']}@{mid['epoch']}.safetensors"
    save_file({"speaker_wavs": voice}, str(path))
    path.chmod(0o644)  # safetensors writes 0600
    log.info("wrote a random TTS repo (%.0f M LM parameters) to %s in %.0f s", n / 1e6, out,
             time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m moshi_mlx.testing.real_tts",
                                description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true",
                   help="small_config(n_q=32, card=2048, dim=256) with the real-size Mimi")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        write_real_tts_repo(a.out_dir, a.seed, small_config(32, 2048, dim=256) if a.small else None)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
