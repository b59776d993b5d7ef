"""Random Mimi checkpoints for tests and benchmarks (no download; any size, real layout).

A freshly initialised Mimi has codebooks unrelated to its latents, so almost every frame gets the
same code. `fit_codebooks` gives each RVQ level vectors drawn from its actual residuals plus noise
(like the k-means init of training), so codes vary and parity checks mean something.
`write_random_checkpoint` saves such a model in the released PyTorch naming, which both our loader
and `rustymimi` read.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ...config import MimiConfig
from .mimi import Mimi


def speech_like_signal(n: int, sample_rate: int, batch: int = 1, seed: int = 0) -> np.ndarray:
    """Speech-like test audio `[B, 1, n]`: gliding tones with a syllable envelope plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sample_rate
    rows = []
    for b in range(batch):
        f0 = 120 + 40 * b + 30 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        voice = sum(np.sin(h * phase) / h for h in range(1, 6))
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t + b)
        rows.append(0.2 * env * voice + 0.02 * rng.standard_normal(n))
    return np.stack(rows)[:, None].astype(np.float32)


def fit_codebooks(model: Mimi, pcm: np.ndarray, seed: int = 0, noise: float = 0.5) -> None:
    """Set every codebook (and usage) from the residuals of `pcm`'s latents, level by level."""
    rng = np.random.default_rng(seed)
    latent = model.encode_latent(pcm)  # [B, T, D]
    for rvq in (model.quantizer.rvq_first, model.quantizer.rvq_rest):
        residual = np.array(latent @ rvq.input_proj.weight[:, 0, :].T).reshape(-1, model.cfg.quantizer_dimension)
        for layer in rvq.vq.layers:
            cb = layer.codebook
            bins = cb.cluster_usage.shape[0]
            usage = (0.5 + 1.5 * rng.random(bins)).astype(np.float32)
            pick = rng.integers(0, residual.shape[0], bins)
            vecs = residual[pick] + noise * residual.std() * rng.standard_normal(
                (bins, residual.shape[1])).astype(np.float32)
            cb.embedding_sum = mx.array(vecs * usage[:, None])
            cb.cluster_usage = mx.array(usage)
            emb = vecs.astype(np.float32)
            d = 0.5 * (emb * emb).sum(-1)[None] - residual @ emb.T
            residual = residual - emb[np.argmin(d, axis=-1)]
    model.prepare()


def random_model(
    cfg: MimiConfig, seed: int = 0, seconds: float = 0.8, output_rms: float = 0.1
) -> Mimi:
    """A random Mimi of any config with codebooks fitted to `speech_like_signal` latents."""
    mx.random.seed(seed)
    model = Mimi(cfg, compiled=False)  # only builds weights: skip per-shape tracing
    mx.eval(model.parameters())
    n = int(seconds * cfg.sample_rate) // cfg.frame_size * cfg.frame_size
    pcm = speech_like_signal(n, cfg.sample_rate, seed=seed)
    fit_codebooks(model, pcm, seed)
    # Scale the last conv so decoded audio has a speech-like level instead of ~1e-5.
    rms = float(mx.sqrt(mx.mean(mx.square(model.decode(model.encode(pcm))))))
    final = model.decoder.final_conv1d.conv.conv
    final.weight = final.weight * (output_rms / max(rms, 1e-12))
    final.bias = final.bias * (output_rms / max(rms, 1e-12))
    mx.eval(model.parameters())
    model.prepare()
    return model


def write_random_checkpoint(path: str | Path, cfg: MimiConfig, seed: int = 0) -> Mimi:
    """Save `random_model(cfg, seed)` as a released-layout (PyTorch names) safetensors file."""
    from safetensors.numpy import save_file

    from ...weights.mimi import map_mimi_to_torch

    model = random_model(cfg, seed)
    ours = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    save_file({k: np.ascontiguousarray(v) for k, v in map_mimi_to_torch(ours, cfg).items()}, str(path))
    return model
