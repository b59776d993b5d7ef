"""Setup for `bench_lm.py`: benchmark configs, random checkpoints in Kyutai's MLX layout, and the
two CPU speed-up prototypes measured as "proposal" rows (not part of the package).

`prepare(name, cfg, work, quants, seed)` writes `config.json`, `model.safetensors` (bf16),
`model.q8.safetensors` (8 bits / group 64) and `model.q4.safetensors` (4 bits / group 32) with every
Linear and Embedding quantized, as Kyutai's `quantize_mlx.py` does; Kyutai's `Lm.load_weights`
(strict) and our `load_lm` both read them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from moshi_mlx.checkpoint.layout import LM_FILES

log = logging.getLogger("bench_lm")

QUANTS = {"bf16": None, "q8": (8, 64), "q4": (4, 32)}
FILES = LM_FILES


def bench_configs() -> dict[str, dict]:
    """Kyutai lm_kwargs dicts: a small config (dim 512) and reduced 7B shapes."""
    from moshi_mlx.config import LmConfig

    base = LmConfig()  # moshiko/moshika v0.1 field values
    small = dataclasses.replace(
        base,
        dim=512,
        num_heads=8,
        num_layers=6,
        depformer_dim=256,
        depformer_num_heads=8,
        depformer_num_layers=2,
        depformer_dim_feedforward=int(4.125 * 256),
    )
    out = {"small": small.to_dict()}
    for n in (1, 2, 4):
        out[f"7b-l{n}"] = dataclasses.replace(base, num_layers=n).to_dict()
    return out


# Random weights ----------------------------------------------------------------------------------
def kyutai_mlx_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of a bf16 Kyutai MLX checkpoint (`docs/checkpoints.md`) with its shape."""
    dim, ddim = cfg["dim"], cfg["depformer_dim"]
    hidden = 2 * int(cfg["hidden_scale"] * dim) // 3
    dff = cfg["depformer_dim_feedforward"] or int(cfg["hidden_scale"] * ddim)
    dhidden = 2 * dff // 3
    text_card, card = cfg["text_card"], cfg["card"]
    shapes: dict[str, tuple[int, ...]] = {
        "text_emb.weight": (text_card + 1, dim),
        "out_norm.weight": (dim,),
        "text_linear.weight": (text_card, dim),
    }
    for i in range(cfg["n_q"]):
        shapes[f"audio_embs.{i}.weight"] = (card + 1, dim)

    def layer(prefix: str, d: int, h: int) -> None:
        shapes[f"{prefix}.self_attn.in_proj.weight"] = (3 * d, d)
        shapes[f"{prefix}.self_attn.out_proj.weight"] = (d, d)
        shapes[f"{prefix}.norm1.weight"] = (d,)
        shapes[f"{prefix}.norm2.weight"] = (d,)
        shapes[f"{prefix}.gating.linear_in.weight"] = (2 * h, d)
        shapes[f"{prefix}.gating.linear_out.weight"] = (d, h)

    for n in range(cfg["num_layers"]):
        layer(f"transformer.layers.{n}", dim, hidden)
    for k in range(cfg["dep_q"]):
        p = f"depformer.slices.{k}"
        shapes[f"{p}.linear_in.weight"] = (ddim, dim)
        shapes[f"{p}.linear_out.weight"] = (card, ddim)
        shapes[f"{p}.emb.weight"] = ((text_card if k == 0 else card) + 1, ddim)
        for n in range(cfg["depformer_num_layers"]):
            layer(f"{p}.transformer.layers.{n}", ddim, dhidden)
    return shapes


def random_weights(cfg: dict, seed: int) -> dict:
    """bf16 mx arrays: N(0, 1) embeddings, N(0, 1/fan_in) linears, norms near 1."""
    import mlx.core as mx

    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in kyutai_mlx_shapes(cfg).items():
        if len(shape) == 1:
            w = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif "emb" in name.split(".")[-2] or name.startswith(("text_emb", "audio_embs")):
            w = rng.standard_normal(shape, dtype=np.float32)
        else:
            w = rng.standard_normal(shape, dtype=np.float32) * np.float32(shape[1] ** -0.5)
        out[name] = mx.array(w).astype(mx.bfloat16)
        mx.eval(out[name])
    return out


def quantize_weights(weights: dict, bits: int, group_size: int) -> dict:
    """Kyutai's layout: every 2-D weight (Linear, Embedding) -> uint32 weight + scales + biases."""
    import mlx.core as mx

    out = {}
    for name, w in weights.items():
        if w.ndim == 2:
            q, scales, biases = mx.quantize(w, group_size=group_size, bits=bits)
            base = name[: -len(".weight")]
            out[name], out[f"{base}.scales"], out[f"{base}.biases"] = q, scales, biases
            mx.eval(q, scales, biases)
        else:
            out[name] = w
    return out


def prepare(name: str, cfg: dict, work: Path, quants: list[str], seed: int) -> Path:
    """Write config.json and the weight files of `name` under work/name (reused if present)."""
    import mlx.core as mx

    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    cfg_path = d / "config.json"
    stamp = json.dumps({"cfg": cfg, "seed": seed}, sort_keys=True)
    fresh = not (d / "stamp.json").exists() or (d / "stamp.json").read_text() != stamp
    if not fresh and all((d / FILES[q]).exists() for q in quants):
        log.info("reusing weights in %s", d)
        return d
    for q in FILES.values():
        (d / q).unlink(missing_ok=True)
    t0 = time.perf_counter()
    weights = random_weights(cfg, seed)
    mx.save_safetensors(str(d / FILES["bf16"]), weights)
    for q in quants:
        if QUANTS[q] is not None:
            bits, group = QUANTS[q]
            mx.save_safetensors(str(d / FILES[q]), quantize_weights(weights, bits, group))
    cfg_path.write_text(json.dumps(cfg, indent=1))
    (d / "stamp.json").write_text(stamp)
    n_params = sum(w.size for w in weights.values())
    log.info("%s: %.1f M params written in %.0f s", name, n_params / 1e6, time.perf_counter() - t0)
    return d


# Proposal prototypes (not the package) ----------------------------------------------------------
def repack_quantized_for_cpu(model: Any, bits: int = 8, group_size: int = 64) -> int:
    """Swap each QuantizedLinear for one holding W.T [in, out] re-quantized along `out` (8 bits,
    group 64), run by `quantized_matmul(transpose=False)`, 3-4x faster on MLX's CPU backend. The
    8-bit re-quantization of a 4-bit checkpoint adds ~1/16 of its error (see results/lm.md)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten

    class CpuQuantizedLinear(nn.Module):
        def __init__(self, q: nn.QuantizedLinear):
            super().__init__()
            w = mx.dequantize(q.weight, q.scales, q.biases, group_size=q.group_size, bits=q.bits)
            self.weight_t, self.scales_t, self.biases_t = mx.quantize(
                mx.contiguous(w.T), group_size=group_size, bits=bits)

        def __call__(self, x: mx.array) -> mx.array:
            return mx.quantized_matmul(x, self.weight_t, self.scales_t, self.biases_t,
                                       transpose=False, group_size=group_size, bits=bits)

    swaps = [(p, CpuQuantizedLinear(m)) for p, m in model.named_modules()
             if isinstance(m, nn.QuantizedLinear) and m.weight.shape[0] % group_size == 0]
    model.update_modules(tree_unflatten(swaps))
    mx.eval(model.parameters())
    return len(swaps)


def float32_scales(model: Any) -> int:
    """Keep packed weights but give each QuantizedLinear float32 scales/biases and cast its output
    back to the input dtype: with bf16 activations MLX's CPU kernel then takes its float32 path
    (~6x faster than bf16 x bf16 scales) and the residual stream stays bf16."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten

    class F32ScalesLinear(nn.Module):
        def __init__(self, q: nn.QuantizedLinear):
            super().__init__()
            self.weight = q.weight
            self.scales, self.biases = q.scales.astype(mx.float32), q.biases.astype(mx.float32)
            self.group_size, self.bits = q.group_size, q.bits

        def __call__(self, x: mx.array) -> mx.array:
            y = mx.quantized_matmul(x, self.weight, self.scales, self.biases, transpose=True,
                                    group_size=self.group_size, bits=self.bits)
            return y.astype(x.dtype)

    swaps = [(p, F32ScalesLinear(m)) for p, m in model.named_modules()
             if isinstance(m, nn.QuantizedLinear)]
    model.update_modules(tree_unflatten(swaps))
    mx.eval(model.parameters())
    return len(swaps)
