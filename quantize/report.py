"""Quality report of converted checkpoints against their source: size, bits per weight, logit drift.

Metrics, on one probe sequence (seeded random text and audio codes, teacher-forced through
`lm.forward`, so every position sees the same context in both models; TTS LMs also get seeded
conditions, `probe_conditions`):

- `text_kl`, `audio_kl`: mean KL(reference || quantized) in nats per position, of the next-token
  distributions (softmax of the logits, float64). Audio is averaged over Moshi's dep_q codebooks
  (`audio_kl_per_codebook` lists them). Positions the delays leave undefined are excluded.
- `text_top1`, `audio_top1`: fraction of positions where both models' argmax agree.
- `size_bytes`: LM weight files on disk; `bits_per_weight`: their bytes x 8 / number of weights of
  the float model (scales and biases included, as mlx-lm's `compute_bits_per_weight` counts them);
  `scales`: the stored dtype of the quantization scales (bf16 in Kyutai's files, f16 with
  `quantize --scales float16`), "-" for a float model.

Models are loaded one at a time and freed after their logits are taken, so a report on the 7B needs
memory for one model, not two.
"""

from __future__ import annotations

import gc
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from moshi_mlx.checkpoint.safetensors_io import read_header
from moshi_mlx.config import LmConfig, moshi_v0_1
from moshi_mlx.delays import undelay_mask

from .source import Source, resolve

log = logging.getLogger(__name__)


# Math (numpy, float64) ---------------------------------------------------------------------------
def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def kl_divergence(ref_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """KL(p_ref || p_q) over the last axis, one value per position (nats)."""
    lp, lq = log_softmax(ref_logits), log_softmax(q_logits)
    return np.maximum((np.exp(lp) * (lp - lq)).sum(axis=-1), 0.0)


def top1_agreement(ref_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    """1.0 where both argmaxes agree, per position."""
    return (np.argmax(ref_logits, axis=-1) == np.argmax(q_logits, axis=-1)).astype(np.float64)


# Sizes ------------------------------------------------------------------------------------------
def size_stats(source: Source) -> dict[str, Any]:
    """Bytes of the LM files, and bits per weight relative to the float model of the config."""
    from moshi_mlx.models.lm import Lm

    cfg_dict = dict(source.config or moshi_v0_1().to_dict())
    cfg_dict.pop("quantization", None)
    cfg = LmConfig.from_dict(cfg_dict)
    n_weights = sum(v.size for _, v in tree_flatten(Lm(cfg).parameters()))  # lazy, not evaluated
    size = sum(f.stat().st_size for f in source.weight_files)
    data, scales = 0, set()
    for f in source.weight_files:
        header = read_header(f)
        data += sum(e["data_offsets"][1] - e["data_offsets"][0] for e in header.values())
        scales |= {e["dtype"].lower() for k, e in header.items() if k.endswith(".scales")}
    return {"size_bytes": size, "params": int(n_weights), "bits_per_weight": data * 8 / n_weights,
            "scales": "/".join(sorted(scales)) or "-"}


# Logits -----------------------------------------------------------------------------------------
def probe_codes(cfg: LmConfig, steps: int, seed: int) -> np.ndarray:
    """Seeded random codes [1, 1+n_q, T]: text ids below text_card, audio ids below card."""
    rng = np.random.default_rng(seed)
    text = rng.integers(0, cfg.text_card, size=(1, 1, steps))
    audio = rng.integers(0, cfg.card, size=(1, cfg.n_q, steps))
    return np.concatenate([text, audio], axis=1).astype(np.int32)


def load_for_report(source: Source, dtype: str | None) -> Any:
    from moshi_mlx import load_lm

    files = source.weight_files
    if len(files) > 1:  # sharded: the loader takes the directory
        return load_lm(files[0].parent, dtype=dtype)
    return load_lm(files[0], config=source.config, dtype=dtype)


def probe_conditions(lm: Any, seed: int) -> Any:
    """TTS LMs: conditions for the probe (each LUT's first value, a seeded random 10-step input
    per tensor conditioner, e.g. a voice); None for LMs without conditioners (Moshi)."""
    if "condition_provider" not in lm:
        return None
    from moshi_mlx.nn.conditioners import LutConditioner

    rng = np.random.default_rng(seed)
    values: dict[str, Any] = {}
    for name, c in lm.condition_provider.conditioners.items():
        if isinstance(c, LutConditioner):
            values[name] = [c.spec.possible_values[0] if c.spec.possible_values else None]
        else:  # conditioners stay float: output_proj's width is the input dim
            dim = c.output_proj.weight.shape[-1]
            values[name] = (mx.array(rng.standard_normal((1, 10, dim)).astype(np.float32)), None)
    return lm.conditions(values)


def model_logits(source: Source, codes: np.ndarray, dtype: str | None,
                 seed: int = 0) -> tuple[np.ndarray, ...]:
    """(text [1, T, V], audio [dep_q, T, card]) float32 numpy; the model is freed afterwards."""
    lm = load_for_report(source, dtype)
    text, audio = lm.forward(mx.array(codes), probe_conditions(lm, seed))
    out = (np.array(text[0].astype(mx.float32)), np.array(audio[0].astype(mx.float32)))
    del lm, text, audio
    gc.collect()
    mx.clear_cache()
    return out


@dataclass
class ModelReport:
    name: str
    path: str
    recipe: str
    size_bytes: int
    params: int
    bits_per_weight: float
    text_kl: float
    audio_kl: float
    text_top1: float
    audio_top1: float
    text_kl_max: float
    audio_kl_per_codebook: list[float] = field(default_factory=list)
    scales: str = "-"


def compare_logits(ref: tuple[np.ndarray, ...], q: tuple[np.ndarray, ...],
                   delays: list[int] | tuple[int, ...]) -> dict[str, Any]:
    """Drift metrics between two models' logits on the same probe (see module docstring)."""
    (rt, ra), (qt, qa) = ref, q
    steps = rt.shape[-2]
    valid = undelay_mask(delays, steps)
    vt = valid[0] & np.isfinite(rt).all(-1)[0] & np.isfinite(qt).all(-1)[0]
    text_kl = kl_divergence(rt[0][vt], qt[0][vt])
    out: dict[str, Any] = {
        "text_kl": float(text_kl.mean()), "text_kl_max": float(text_kl.max()),
        "text_top1": float(top1_agreement(rt[0][vt], qt[0][vt]).mean()),
    }
    per_cb, agree = [], []
    for k in range(ra.shape[0]):
        vk = valid[1 + k] & np.isfinite(ra[k]).all(-1) & np.isfinite(qa[k]).all(-1)
        per_cb.append(float(kl_divergence(ra[k][vk], qa[k][vk]).mean()))
        agree.append(top1_agreement(ra[k][vk], qa[k][vk]))
    out["audio_kl_per_codebook"] = per_cb
    out["audio_kl"] = float(np.mean(per_cb)) if per_cb else 0.0
    out["audio_top1"] = float(np.concatenate(agree).mean()) if agree else 1.0
    return out


def _recipe_of(source: Source) -> str:
    meta = {}
    with open(source.weight_files[0], "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n)).get("__metadata__", {}) or {}
    if "recipe" in meta:
        return str(meta["recipe"])
    block = (source.config or {}).get("quantization")
    return f"q{block['bits']}g{block['group_size']}" if block else "float"


def auto_dtype(params: int) -> str | None:
    """float32 compute for small models (exact comparison, fast on CPU); as stored for big ones
    (a float32 copy of the 7B would not fit next to nothing in 16-24 GB)."""
    return "float32" if params < 1_000_000_000 else None


def build_report(
    models: list[str | Path], reference: str | Path, steps: int = 64, seed: int = 0,
    dtype: str | None = "auto", reference_config: str | Path | None = None,
) -> dict[str, Any]:
    """Report every model in `models` against `reference` (see module docstring)."""
    ref_src = resolve(reference, reference_config)
    if ref_src.config is None and models:
        # A bare reference file: the converted model's config.json was made from it.
        own = resolve(models[0]).config
        if own is not None:
            ref_src.config = {k: v for k, v in own.items() if k not in ("quantization", "moshi_name")}
    ref_cfg = dict(ref_src.config or moshi_v0_1().to_dict())
    ref_cfg.pop("quantization", None)
    cfg = LmConfig.from_dict(ref_cfg)
    ref_size = size_stats(ref_src)
    dt = auto_dtype(ref_size["params"]) if dtype == "auto" else dtype
    codes = probe_codes(cfg, steps, seed)
    ref_logits = model_logits(ref_src, codes, dt, seed)
    rows = []
    for m in models:
        src = resolve(m)
        stats = size_stats(src)
        if stats["params"] != ref_size["params"]:
            raise ValueError(f"{m}: a different model than the reference ({stats['params']} vs "
                             f"{ref_size['params']} weights)")
        drift = compare_logits(ref_logits, model_logits(src, codes, dt, seed), cfg.delays)
        rows.append(ModelReport(Path(str(m)).name, str(m), _recipe_of(src), **stats, **drift))
    return {
        "reference": str(reference), "reference_size_bytes": ref_size["size_bytes"],
        "probe": {"kind": "random codes", "steps": steps, "seed": seed},
        "compute_dtype": dt or "as stored", "mlx": mx.__version__,
        "models": [asdict(r) for r in rows],
    }


def render(report: dict[str, Any], console: Any = None) -> Any:
    """The report as one rich table (returned; printed when a console is given)."""
    from rich.table import Table

    t = Table(title=f"Quantization quality vs {report['reference']} "
                    f"(probe: {report['probe']['steps']} steps, seed {report['probe']['seed']})")
    for col in ("model", "recipe", "scales", "size", "bits/w", "text KL", "audio KL", "text top-1",
                "audio top-1"):
        t.add_column(col, justify="left" if col in ("model", "recipe") else "right")
    for r in report["models"]:
        t.add_row(r["name"], r["recipe"], r.get("scales", "-"), f"{r['size_bytes'] / 1e6:.2f} MB",
                  f"{r['bits_per_weight']:.2f}", f"{r['text_kl']:.2e}", f"{r['audio_kl']:.2e}",
                  f"{100 * r['text_top1']:.1f}%", f"{100 * r['audio_top1']:.1f}%")
    if console is not None:
        console.print(t)
    return t


def markdown(report: dict[str, Any]) -> str:
    """The same table as markdown (for the README)."""
    lines = ["| model | recipe | scales | size | bits/weight | text KL | audio KL | text top-1 | "
             "audio top-1 |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["models"]:
        lines.append(f"| {r['name']} | {r['recipe']} | {r.get('scales', '-')} | "
                     f"{r['size_bytes'] / 1e6:.2f} MB | "
                     f"{r['bits_per_weight']:.2f} | {r['text_kl']:.2e} | {r['audio_kl']:.2e} | "
                     f"{100 * r['text_top1']:.1f}% | {100 * r['audio_top1']:.1f}% |")
    return "\n".join(lines)
