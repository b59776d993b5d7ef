"""Load a `cli.py quantize` output into Kyutai's own `moshi_mlx`, exactly as their loaders do.

Runs ONLY under Kyutai's environment (`$KYUTAI_PYTHON quantize/kyutai_check.py OUT_DIR`,
see `docs/environments.md`);
it imports Kyutai's `moshi_mlx` (same package name as ours, so nothing of ours is imported here).
Model build follows their `run_inference.py` / `local.py`: `Lm(LmConfig.from_config_dict(cfg))`,
cast to bf16, `nn.quantize(model, bits, group_size)` (their default predicate: every Linear and
Embedding) for q4/q8, `load_weights(file, strict=True)`.

Prints one JSON line: what was loaded, and the text logits of the first step (initial tokens on
every stream; `--float32` computes in float32) so a caller can compare them with our `load_lm(OUT_DIR).forward`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from moshi_mlx import models


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0])
    float32 = "--float32" in argv[1:]  # compute in float32 (exact bf16 -> f32 upcast of weights)
    cfg = json.loads((out_dir / "config.json").read_text())
    weights = out_dir / cfg["moshi_name"]
    block = cfg.get("quantization")
    overrides = [k for k in (block or {}) if k not in ("bits", "group_size")]
    if overrides:
        print(json.dumps({"loaded": False, "why": "per-module overrides: not a plain q4/q8 file"}))
        return 1
    model = models.Lm(models.LmConfig.from_config_dict(cfg))
    model.set_dtype(mx.bfloat16)
    if block:
        nn.quantize(model, bits=block["bits"], group_size=block["group_size"])
    model.load_weights(str(weights), strict=True)
    if float32:
        model.set_dtype(mx.float32)
    mx.eval(model.parameters())
    text = mx.array([[cfg["text_card"]]])
    xs = model.text_emb(text)
    for emb in model.audio_embs:
        xs = xs + emb(mx.array([[cfg["card"]]]))
    h = model.out_norm(model.transformer(xs, cache=model.transformer_cache))
    logits = model.text_linear(h)[0, 0].astype(mx.float32)
    n_q = sum(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))
              for _, m in model.named_modules())
    print(json.dumps({
        "loaded": True, "file": weights.name, "bits": (block or {}).get("bits"),
        "group_size": (block or {}).get("group_size"), "quantized_modules": n_q,
        "mlx": mx.__version__, "text_logits_step0": logits.tolist(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
