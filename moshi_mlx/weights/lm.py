"""Pure key maps for the LM checkpoints (no I/O): detect the format, map PyTorch names to ours.

Kyutai's MLX files (bf16, q8, q4) already use our parameter names. Their PyTorch release
(`moshiko-pytorch-bf16/model.safetensors`, and what `tests/golden/make_golden_lm.py` writes) uses
moshi's names; `map_lm_torch` translates them (rules below; Kyutai's `moshi_mlx/models/lm.py` has our names):

- `emb.{i}` -> `audio_embs.{i}`; `...self_attn.in_proj_weight` -> `...self_attn.in_proj.weight`
  (moshi 0.2.x `state_dict()` names `in_projs.{i}.weight` / `out_projs.{i}.weight` and the
  `in_proj.weight` spelling are accepted too); RMSNorm `alpha` [1, 1, D] -> `weight` [D];
  non-gated FFN `linear1/linear2` -> `gating.linear1/gating.linear2`.
- depformer: per step k, `depformer_in.{i}` -> `slices.{k}.linear_in`, `linears.{k}` ->
  `slices.{k}.linear_out`, `depformer_text_emb` / `depformer_emb.{k-1}` -> `slices.{k}.emb`,
  attention weights concatenated over the weight sets along dim 0 -> chunk i,
  `gating.{i}` -> `slices.{k}...gating`, norms and layer scales (shared) copied to every slice;
  i = `cfg.depformer_weight_index(k)` (schedule aware; 0 when weights are not per step), and for
  `depformer_in` i = schedule[k] / k with `depformer_multi_linear`, 0 without.

- dep_q = 0 (STT): PT's unused `depformer_in.*` is dropped; `extra_heads.{i}.weight` keeps its name.

Tied depformer slices (LMs with a weight schedule, e.g. tts-1.6b-en_fr: 32 slices, 11 weight
sets): the map gives slices of one set the same arrays. `cli.py quantize` writes such an array once,
under the first slice of its set, and `fill_tied_slices` puts it back for the others at load:
`depformer.slices.{k}.transformer.layers.{L}.{self_attn,gating}.*` from the first slice j with the
same weight index, `depformer.slices.{k}.linear_in.*` from the first with the same input index.
Only keys a file lacks are filled, so files with every slice (any MLX file) load as before.

Keys the map does not consume are passed through under their own name, so a strict load lists
them as unexpected; a source key that is absent leaves its target absent (listed as missing).
Works on any array type with numpy-style indexing (mx.array, np.ndarray).
"""

from __future__ import annotations

import re
from typing import Any

from ..config import LmConfig

Weights = dict[str, Any]

_TORCH_MARKERS = ("emb.0.weight", "out_norm.alpha", "depformer_in.0.weight", "linears.0.weight")
_TORCH_PATTERNS = (".in_proj_weight", ".alpha", ".in_projs.", ".out_projs.")


def detect_format(weights: Weights) -> str:
    """'torch' (PyTorch release / state_dict names) or 'mlx' (Kyutai MLX names, ours)."""
    keys = list(weights)
    if any(k in weights for k in _TORCH_MARKERS) or any(
        p in k for k in keys for p in _TORCH_PATTERNS
    ):
        return "torch"
    return "mlx"


class _Source:
    """The source dict with consumption tracking."""

    def __init__(self, weights: Weights):
        self.w = weights
        self.used: set[str] = set()
        # Chunks already cut, so slices sharing a weight set share one array (no copy per slice).
        self.chunks: dict[tuple[str, int], Any] = {}

    def get(self, key: str) -> Any | None:
        if key in self.w:
            self.used.add(key)
            return self.w[key]
        return None

    def unused(self) -> Weights:
        return {k: v for k, v in self.w.items() if k not in self.used}


def _norm_params(src: _Source, prefix: str) -> Weights:
    """`{prefix}.alpha` [1,1,D] -> weight [D]; LayerNorm `weight`/`bias` kept."""
    out: Weights = {}
    alpha = src.get(f"{prefix}.alpha")
    if alpha is not None:
        out["weight"] = alpha.reshape(-1) if alpha.ndim == 3 else alpha
    for name in ("weight", "bias"):
        v = src.get(f"{prefix}.{name}")
        if v is not None:
            out[name] = v
    return out


def _attention_weight(src: _Source, prefix: str, kind: str, mult: int, idx: int) -> Any | None:
    """kind 'in' / 'out': chunk idx of the (possibly concatenated over `mult` sets) weight."""
    names = (
        (f"{prefix}.in_proj_weight", f"{prefix}.in_proj.weight") if kind == "in"
        else (f"{prefix}.out_proj.weight",)
    )
    for name in names:
        w = src.get(name)
        if w is not None:
            if mult == 1 or w.shape[0] % mult != 0:
                return w  # a wrong shape is reported by the strict load
            n = w.shape[0] // mult
            if (name, idx) not in src.chunks:
                src.chunks[(name, idx)] = w[idx * n:(idx + 1) * n]
            return src.chunks[(name, idx)]
    return src.get(f"{prefix}.{kind}_projs.{idx}.weight")


def _layer(src: _Source, pt: str, out: str, mult: int, idx: int, per_step_ff: bool) -> Weights:
    """Map one transformer layer `pt` (PT prefix) to `out` (our prefix), weight set idx."""
    res: Weights = {}
    w = _attention_weight(src, f"{pt}.self_attn", "in", mult, idx)
    if w is not None:
        res[f"{out}.self_attn.in_proj.weight"] = w
    w = _attention_weight(src, f"{pt}.self_attn", "out", mult, idx)
    if w is not None:
        res[f"{out}.self_attn.out_proj.weight"] = w
    for n in ("norm1", "norm2"):
        for name, v in _norm_params(src, f"{pt}.{n}").items():
            res[f"{out}.{n}.{name}"] = v
    for n in ("layer_scale_1", "layer_scale_2"):
        v = src.get(f"{pt}.{n}.scale")
        if v is not None:
            res[f"{out}.{n}.scale"] = v
    gating = f"{pt}.gating.{idx}" if per_step_ff else f"{pt}.gating"
    for lin in ("linear_in", "linear_out"):
        for p in ("weight", "bias"):
            v = src.get(f"{gating}.{lin}.{p}")
            if v is not None:
                res[f"{out}.gating.{lin}.{p}"] = v
    for lin in ("linear1", "linear2"):
        for p in ("weight", "bias"):
            v = src.get(f"{pt}.{lin}.{p}")
            if v is not None:
                res[f"{out}.gating.{lin}.{p}"] = v
    # TTS cross-attention (one weight set): same spellings as self-attention.
    for kind, name in (("in", "in_proj"), ("out", "out_proj")):
        w = _attention_weight(src, f"{pt}.cross_attention", kind, 1, 0)
        if w is not None:
            res[f"{out}.cross_attention.{name}.weight"] = w
    for name, v in _norm_params(src, f"{pt}.norm_cross").items():
        res[f"{out}.norm_cross.{name}"] = v
    v = src.get(f"{pt}.layer_scale_cross.scale")
    if v is not None:
        res[f"{out}.layer_scale_cross.scale"] = v
    return res


def _depformer_in_index(cfg: LmConfig, k: int) -> int:
    if not cfg.depformer_multi_linear:
        return 0
    sched = cfg.depformer_weights_per_step_schedule
    return sched[k] if sched is not None else k


def map_lm_torch(weights: Weights, cfg: LmConfig) -> Weights:
    """PyTorch moshi LM weights (release or state_dict names) -> our (Kyutai MLX) names."""
    src = _Source(weights)
    out: Weights = {}

    def put(dst: str, key: str) -> None:
        v = src.get(key)
        if v is not None:
            out[dst] = v

    for name in ("weight", "out1.weight", "out2.weight"):  # out1/out2: demuxed text (TTS)
        put(f"text_emb.{name}", f"text_emb.{name}")
    put("text_linear.weight", "text_linear.weight")
    for i in range(cfg.n_q):
        put(f"audio_embs.{i}.weight", f"emb.{i}.weight")
    for name, v in _norm_params(src, "out_norm").items():
        out[f"out_norm.{name}"] = v
    for L in range(cfg.num_layers):
        out.update(_layer(src, f"transformer.layers.{L}", f"transformer.layers.{L}", 1, 0, False))

    mult = cfg.depformer_num_weights if cfg.depformer_weights_per_step else 1
    # Shared PT tensors (norms, layer scales, shared weight sets) are read by every slice.
    for k in range(cfg.dep_q):
        s = f"depformer.slices.{k}"
        idx = cfg.depformer_weight_index(k)
        put(f"{s}.linear_in.weight", f"depformer_in.{_depformer_in_index(cfg, k)}.weight")
        put(f"{s}.linear_out.weight", f"linears.{k}.weight")
        emb = "depformer_text_emb" if k == 0 else f"depformer_emb.{k - 1}"
        for name in ("weight", "low_rank.weight", "out1.weight", "out2.weight"):  # TTS: low rank, demux
            put(f"{s}.emb.{name}", f"{emb}.{name}")
        for L in range(cfg.depformer_num_layers):
            out.update(_layer(src, f"depformer.layers.{L}", f"{s}.transformer.layers.{L}",
                              mult, idx, cfg.depformer_weights_per_step))
    if cfg.dep_q == 0:
        # PT builds one `depformer_in` Linear even without a depformer (depformer_multi_linear
        # False, e.g. STT checkpoints); nothing reads it.
        for k in [k for k in weights if k.startswith("depformer_in.")]:
            src.get(k)
    out.update(src.unused())
    return out


_TIED = re.compile(r"^depformer\.slices\.(\d+)\.(transformer\.layers\.\d+\.(?:self_attn|gating)\.|"
                   r"linear_in\.)(.*)$")


def tied_slice(cfg: LmConfig, name: str) -> str | None:
    """The key whose array `name` shares in tied checkpoints (module docstring), or None."""
    m = _TIED.match(name)
    if m is None or cfg.depformer_weights_per_step_schedule is None:
        return None
    k, part, rest = int(m.group(1)), m.group(2), m.group(3)
    index = (lambda j: _depformer_in_index(cfg, j)) if part == "linear_in." else \
        cfg.depformer_weight_index
    j = next(j for j in range(k + 1) if index(j) == index(k))
    return None if j == k else f"depformer.slices.{j}.{part}{rest}"


def fill_tied_slices(weights: Weights, cfg: LmConfig) -> Weights:
    """`weights` (our names) plus, for each tied key it lacks, its first slice's array."""
    if cfg.depformer_weights_per_step_schedule is None:
        return weights
    out = dict(weights)
    prefix = "depformer.slices.0."
    suffixes = [n[len(prefix):] for n in weights if n.startswith(prefix)]
    for k in range(1, cfg.dep_q):
        for rest in suffixes:
            own = f"depformer.slices.{k}.{rest}"
            src = tied_slice(cfg, own) if own not in out else None
            if src is not None and src in out:
                out[own] = out[src]
    return out
