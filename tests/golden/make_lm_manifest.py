"""Key/shape/dtype manifest of the real Moshi 7B v0.1 LM checkpoints, without any weights.

Writes `tests/golden/data/lm_7b_manifest.json.gz` with four sections:
- "mlx_bf16", "mlx_q8", "mlx_q4": Kyutai's MLX release files (`moshiko-mlx-bf16/model.safetensors`,
  `-q8/model.q8.safetensors`, `-q4/model.q4.safetensors`), made exactly as Kyutai's
  `scripts/quantize_mlx.py` / `local.py` do: `Lm(config_v0_1())`, `set_dtype(bfloat16)`,
  `nn.quantize(bits, group_size)` with q8 = 8 bits / group 64, q4 = 4 bits / group 32.
  Run with Kyutai's `moshi_mlx` env: `$KYUTAI_PYTHON tests/golden/make_lm_manifest.py`.
- "torch": the PyTorch release `moshiko-pytorch-bf16/model.safetensors`: moshi's `LMModel(**_lm_kwargs)`
  on torch's meta device, with the per-set attention weights `in_projs.{i}` / `out_projs.{i}`
  concatenated along dim 0 into `in_proj_weight` / `out_proj.weight` as in the released file (the
  inverse of moshi's `_load_hook`). Run with `$REF_PYTHON tests/golden/make_lm_manifest.py`.
Both environments: `docs/environments.md`.
Each run updates its own sections. MLX arrays are lazy and torch's meta tensors hold no data, so
neither run allocates the 7B weights.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

OUT = Path(__file__).parent / "data" / "lm_7b_manifest.json.gz"


def mlx_sections() -> dict:
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from moshi_mlx import models

    out = {}
    for name, q in (("mlx_bf16", None), ("mlx_q8", (8, 64)), ("mlx_q4", (4, 32))):
        m = models.Lm(models.config_v0_1())
        m.set_dtype(mx.bfloat16)
        if q is not None:
            nn.quantize(m, bits=q[0], group_size=q[1])
        out[name] = {k: [list(v.shape), str(v.dtype).replace("mlx.core.", "")]
                     for k, v in tree_flatten(m.parameters())}
    return out


def torch_section() -> dict:
    import torch
    from moshi.models import loaders
    from moshi.models.lm import LMModel

    with torch.device("meta"):
        m = LMModel(**loaders._lm_kwargs)
    sd = {k: list(v.shape) for k, v in m.state_dict().items()}
    out: dict = {}
    pattern = re.compile(r"^(.*\.self_attn)\.(in|out)_projs\.(\d+)\.weight$")
    for k, shape in sd.items():
        match = pattern.match(k)
        if match is None:
            out[k] = [shape, "bfloat16"]
            continue
        prefix, kind, _ = match.groups()
        name = f"{prefix}.in_proj_weight" if kind == "in" else f"{prefix}.out_proj.weight"
        if name in out:
            out[name][0][0] += shape[0]
        else:
            out[name] = [list(shape), "bfloat16"]
    return {"torch": out}


def main() -> None:
    data = json.loads(gzip.decompress(OUT.read_bytes())) if OUT.exists() else {}
    try:
        import torch  # noqa: F401
        data.update(torch_section())
    except ImportError:
        data.update(mlx_sections())
    OUT.write_bytes(gzip.compress(json.dumps(data, sort_keys=True, separators=(",", ":")).encode(),
                                  mtime=0))
    print({k: len(v) for k, v in data.items()}, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
