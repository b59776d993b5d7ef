"""Key/shape/dtype manifest of Kyutai's real TTS checkpoint, without any weights.

    REFENV/bin/python tests/golden/make_tts_manifest.py   # torch + moshi 0.2.13

Writes `tests/golden/data/tts_1.6b_manifest.json`:
- "config": the `config.json` of `kyutai/tts-1.6b-en_fr` as documented in docs/tts.md (LM kwargs,
  conditioners, fuser, tts_config, file names);
- "torch": every tensor of its released `dsm_tts_1e68beda@240.safetensors` as [shape, dtype]:
  moshi's `LMModel` built by moshi's own `loaders.get_moshi_lm` on torch's meta device (no
  memory), with the per-set attention weights `in_projs.{i}` / `out_projs.{i}` concatenated
  along dim 0 into `in_proj_weight` / `out_proj.weight` as in released files, bfloat16 except
  the conditioners, which moshi keeps in float32.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch
from moshi.models import loaders

OUT = Path(__file__).parent / "data" / "tts_1.6b_manifest.json"

# The released config.json, declared once in the package (pure Python, no MLX import).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from moshi_mlx.testing.real_tts import REAL_CONFIG as CONFIG  # noqa: E402

# Keys moshi's `CheckpointInfo` keeps for itself (not LM kwargs).
HUB = ("tts_config", "model_id", "tokenizer_name", "mimi_name", "moshi_name", "model_type",
       "lm_gen_config")


def torch_section() -> dict:
    kwargs = {k: v for k, v in json.loads(json.dumps(CONFIG)).items() if k not in HUB}
    model = loaders.get_moshi_lm(None, lm_kwargs=kwargs, device="meta", dtype=torch.bfloat16)
    out: dict = {}
    pattern = re.compile(r"^(.*\.(?:self_attn|cross_attention))\.(in|out)_projs\.(\d+)\.weight$")
    for k, v in model.state_dict().items():
        dtype = "float32" if k.startswith(("condition_provider.", "fuser.")) else "bfloat16"
        assert str(v.dtype).removeprefix("torch.") == dtype, (k, v.dtype)
        match = pattern.match(k)
        if match is None:
            out[k] = [list(v.shape), dtype]
            continue
        prefix, kind, _ = match.groups()
        name = f"{prefix}.in_proj_weight" if kind == "in" else f"{prefix}.out_proj.weight"
        if name in out:
            out[name][0][0] += v.shape[0]
        else:
            out[name] = [list(v.shape), dtype]
    return out


def main() -> None:
    torch_keys = torch_section()
    OUT.write_text(json.dumps({"config": CONFIG, "torch": torch_keys}, sort_keys=True,
                              separators=(",", ":")) + "\n")
    dtypes = [d for _, d in torch_keys.values()]
    print(len(torch_keys), {d: dtypes.count(d) for d in set(dtypes)}, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
