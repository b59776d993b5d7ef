"""Regenerate Mimi golden data from the PyTorch reference (`moshi` package).

Run with the reference environment (torch + moshi, see `docs/environments.md`), from the repository
root:

    $REF_PYTHON tests/golden/make_golden_mimi.py

Writes to tests/golden/data/:
- `mimi_manifest.json`: key names, shapes and dtypes of the released checkpoint
  `tokenizer-e351c8d8-checkpoint125.safetensors`, from `moshi.models.loaders.get_mimi` with the real
  `_seanet_kwargs` / `_transformer_kwargs` / `_quantizer_kwargs` (32 codebooks), exported in released
  naming (`self_attn.in_proj_weight` / `out_proj.weight`, not moshi 0.2's `in_projs.0.weight`).
- `mimi_{name}.safetensors` for small random configs: the weights (released naming), the input pcm,
  PyTorch's codes (full-sequence `encode`, all codebooks and a smaller count) and decoded audio, plus
  PyTorch's streaming outputs (one frame per call), and `mimi_{name}.json` with the MimiConfig fields.

`--full-size-check CKPT PCM.npy OUT.npz` instead runs PyTorch and rustymimi on a full-size random
checkpoint (e.g. from `moshi_mlx.models.mimi.synthetic.write_random_checkpoint`) for a one-off
comparison with ours at the real shape (the numbers quoted in tests/test_codec.py).

Fresh torch codebooks are "uninitialized" (all zero, every code would be 0): each level gets vectors
drawn from its actual residuals plus noise (like a k-means init, so codes vary), random cluster usage,
and `_initialized = 1`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from moshi.models import loaders
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from moshi_mlx.config import MimiConfig  # noqa: E402  (pure dataclasses, no MLX import)

OUT = ROOT / "tests" / "golden" / "data"


def pt_mimi_config(cfg: MimiConfig) -> dict:
    seanet = dict(loaders._seanet_kwargs)
    seanet.update(
        channels=cfg.channels, dimension=cfg.dimension, n_filters=cfg.n_filters,
        n_residual_layers=cfg.n_residual_layers, compress=cfg.compress,
        dilation_base=cfg.dilation_base, kernel_size=cfg.kernel_size,
        residual_kernel_size=cfg.residual_kernel_size, last_kernel_size=cfg.last_kernel_size,
        ratios=list(cfg.ratios),
    )
    quantizer = dict(
        dimension=cfg.quantizer_dimension, n_q=cfg.quantizer_n_q, bins=cfg.quantizer_bins,
        input_dimension=cfg.dimension, output_dimension=cfg.dimension,
    )
    transformer = dict(loaders._transformer_kwargs)
    transformer.update(
        d_model=cfg.dimension, num_heads=cfg.transformer_num_heads,
        num_layers=cfg.transformer_num_layers, layer_scale=cfg.transformer_layer_scale,
        context=cfg.transformer_context, max_period=cfg.transformer_max_period,
        dim_feedforward=cfg.transformer_dim_feedforward, input_dimension=cfg.dimension,
        output_dimensions=[cfg.dimension],
    )
    return dict(sample_rate=cfg.sample_rate, channels=cfg.channels, frame_rate=cfg.frame_rate,
                seanet=seanet, quantizer=quantizer, transformer=transformer)


def released_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict in the released file's naming (moshi 0.2 names attention weights in_projs.{i})."""
    out = {}
    for k, v in model.state_dict().items():
        k = k.replace(".self_attn.in_projs.0.weight", ".self_attn.in_proj_weight")
        k = k.replace(".self_attn.out_projs.0.weight", ".self_attn.out_proj.weight")
        out[k] = v.detach().clone().contiguous()
    return out


def write_manifest() -> None:
    assert loaders._seanet_kwargs["ratios"] == [8, 6, 5, 4]
    model = loaders.get_mimi(None, device="cpu", num_codebooks=32)
    sd = released_state_dict(model)
    manifest = {
        "source": f"moshi.models.loaders.get_mimi (moshi {_moshi_version()}), released naming",
        "checkpoint": "tokenizer-e351c8d8-checkpoint125.safetensors",
        "num_values": int(sum(v.numel() for v in sd.values())),
        "tensors": {k: {"shape": list(v.shape), "dtype": "float32"} for k, v in sorted(sd.items())},
    }
    (OUT / "mimi_manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"manifest: {len(sd)} tensors, {manifest['num_values'] / 1e6:.2f} M values")


def _moshi_version() -> str:
    import moshi

    return getattr(moshi, "__version__", "?")


def randomize(model: torch.nn.Module, cfg: MimiConfig, pcm: torch.Tensor, gen: torch.Generator) -> None:
    """Random norms / layer scales, and codebooks at the scale of the real residuals."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".norm1.weight", ".norm2.weight")):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith((".norm1.bias", ".norm2.bias")):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".scale"):
                p.copy_(0.1 + 0.3 * torch.rand(p.shape, generator=gen))
        emb = model._encode_to_unquantized_latent(pcm)
        for rvq in (model.quantizer.rvq_first, model.quantizer.rvq_rest):
            residual = rvq.input_proj(emb).transpose(1, 2).reshape(-1, cfg.quantizer_dimension)
            for layer in rvq.vq.layers:
                cb = layer._codebook
                usage = 0.5 + 1.5 * torch.rand(cb.cluster_usage.shape, generator=gen)
                pick = torch.randint(0, residual.shape[0], (usage.shape[0],), generator=gen)
                noise = torch.randn(cb.embedding_sum.shape, generator=gen)
                vecs = residual[pick] + 0.5 * residual.std() * noise
                cb.embedding_sum.copy_(vecs * usage[:, None])
                cb.cluster_usage.copy_(usage)
                cb._initialized.fill_(1.0)
                cb.register_buffer("_embedding", None, persistent=False)
                codes = cb.encode(residual)
                residual = residual - cb.decode(codes)


def make_case(name: str, cfg: MimiConfig, frames: int, batch: int, n_q_small: int, seed: int) -> None:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = loaders.get_mimi(None, pt_mimi_config(cfg), device="cpu", num_codebooks=cfg.quantizer_n_q)
    n = frames * cfg.frame_size
    t = torch.arange(n, dtype=torch.float32) / cfg.sample_rate
    pcm = torch.stack([
        0.3 * torch.sin(2 * np.pi * (110 + 70 * b) * t) * torch.sin(2 * np.pi * 1.5 * t)
        + 0.05 * torch.randn(n, generator=gen)
        for b in range(batch)
    ])[:, None]
    with torch.no_grad():
        randomize(model, cfg, pcm, gen)
        codes = model.encode(pcm)
        audio = model.decode(codes)
        model.set_num_codebooks(n_q_small)
        codes_small = model.encode(pcm)
        audio_small = model.decode(codes_small)
        model.set_num_codebooks(cfg.quantizer_n_q)
        fs = cfg.frame_size
        with model.streaming(batch):
            s_codes = torch.cat([model.encode(pcm[..., i * fs:(i + 1) * fs]) for i in range(frames)], -1)
        with model.streaming(batch):
            s_audio = torch.cat([model.decode(codes[..., i:i + 1]) for i in range(frames)], -1)
    tensors = {f"weights.{k}": v for k, v in released_state_dict(model).items()}
    tensors.update({
        "pcm": pcm.contiguous(), "codes": codes.to(torch.int32).contiguous(),
        "audio": audio.contiguous(), "codes_small": codes_small.to(torch.int32).contiguous(),
        "audio_small": audio_small.contiguous(),
        "stream_codes": s_codes.to(torch.int32).contiguous(), "stream_audio": s_audio.contiguous(),
    })
    path = OUT / f"mimi_{name}.safetensors"
    save_file(tensors, str(path))
    meta = {"config": cfg.to_dict(), "frames": frames, "batch": batch, "n_q_small": n_q_small,
            "seed": seed, "moshi": _moshi_version()}
    (OUT / f"mimi_{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    distinct = [len(set(codes[0, k].tolist())) for k in range(codes.shape[1])]
    print(f"{name}: {path.stat().st_size / 1e6:.2f} MB, distinct codes per level {distinct}")


SMALL = dataclasses.replace(
    MimiConfig(), n_filters=8, dimension=32, ratios=(4, 3, 2), transformer_num_heads=4,
    transformer_num_layers=2, transformer_dim_feedforward=64, transformer_context=6,
    quantizer_dimension=16, quantizer_n_q=6, quantizer_bins=64, frame_rate=24000 / 24 / 2,
)
# Two residual blocks per stage (dilation 1 and 2), odd kernels, no layer scale, ratios (2, 5).
DILATED = dataclasses.replace(
    MimiConfig(), n_filters=4, dimension=16, ratios=(5, 2), n_residual_layers=2, kernel_size=5,
    residual_kernel_size=3, last_kernel_size=5, transformer_num_heads=2, transformer_num_layers=1,
    transformer_dim_feedforward=32, transformer_context=10, transformer_layer_scale=None,
    quantizer_dimension=8, quantizer_n_q=3, quantizer_bins=32, frame_rate=24000 / 10 / 2,
)

def full_size_check(checkpoint: str, pcm_file: str, out_file: str) -> None:
    """PyTorch and rustymimi on a full-size released-layout file (any codebook count): codes and
    audio to `out_file` (.npz), compared with ours by the caller. Not a golden (too large)."""
    import copy

    import rustymimi
    from safetensors.torch import load_file

    state = load_file(checkpoint)
    n_q = 1 + sum(k.startswith("quantizer.rvq_rest.") and k.endswith(".embedding_sum") for k in state)
    cfg = copy.deepcopy(loaders._mimi_config)
    cfg["quantizer"]["n_q"] = n_q
    model = loaders.get_mimi(None, cfg, device="cpu", num_codebooks=8)
    model.load_state_dict(state)
    pcm = torch.from_numpy(np.load(pcm_file))
    with torch.no_grad():
        codes = model.encode(pcm)
        audio = model.decode(codes)
    tok = rustymimi.Tokenizer(checkpoint, num_codebooks=8)
    r_codes = tok.encode(pcm.numpy())
    r_audio = tok.decode(r_codes)
    np.savez(out_file, pt_codes=codes.numpy(), pt_audio=audio.numpy(), rust_codes=r_codes,
             rust_audio=r_audio)
    print(f"PyTorch vs rustymimi: codes equal {np.mean(codes.numpy() == r_codes):.4f}, "
          f"audio max diff {np.abs(audio.numpy() - r_audio).max():.2e}, "
          f"rms {audio.pow(2).mean().sqrt().item():.3f}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--full-size-check":
        # $REF_PYTHON tests/golden/make_golden_mimi.py --full-size-check CKPT PCM.npy OUT.npz
        full_size_check(*sys.argv[2:])
        raise SystemExit(0)
    OUT.mkdir(parents=True, exist_ok=True)
    write_manifest()
    make_case("small", SMALL, frames=16, batch=2, n_q_small=3, seed=1)
    make_case("dilated", DILATED, frames=12, batch=1, n_q_small=2, seed=2)
