"""Find a conversion source: a Hugging Face repo id, a model directory, or a single weight file.

Accepted layouts (Kyutai's repos: `docs/checkpoints.md`):
- a directory with `config.json` (Kyutai's lm_kwargs form; `moshi_name` names the LM file) and the LM
  weights as one file or as mlx-lm shards with `model.safetensors.index.json`;
- a Kyutai MLX / PyTorch repo directory without `config.json` (`model.safetensors`,
  `model.q8.safetensors`, `model.q4.safetensors`): the LM is the v0.1 preset;
- a single `.safetensors` file (a sibling `config.json` is used when it names that file or names
  no file; otherwise the v0.1 preset, or `--config`);
- a Hugging Face repo id, resolved (and downloaded) through `moshi_mlx.hub`.

Mimi and the text tokenizer found beside the weights are listed so they can be copied to the output.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER_FILE = "tokenizer_spm_32k_3.model"
LM_CANDIDATES = ("model.safetensors", "model.q8.safetensors", "model.q4.safetensors")
INDEX_FILE = "model.safetensors.index.json"


class SourceError(ValueError):
    """The conversion source cannot be used; the message says why."""


@dataclass
class Source:
    """Resolved inputs of a conversion."""

    weight_files: list[Path]
    config: dict[str, Any] | None  # None -> v0.1 preset
    extras: dict[str, Path] = field(default_factory=dict)  # config key -> file to copy
    description: str = ""


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SourceError(f"{path} is not valid JSON: {e}") from None


def _shards(index: Path) -> list[Path]:
    wm = _load_json(index).get("weight_map")
    if not isinstance(wm, dict) or not wm:
        raise SourceError(f"{index} has no weight_map")
    return [index.parent / f for f in sorted(set(wm.values()))]


def _extras(folder: Path, cfg: dict[str, Any] | None) -> dict[str, Path]:
    out: dict[str, Path] = {}
    cfg = cfg or {}
    for key, default in (("mimi_name", MIMI_FILE), ("tokenizer_name", TOKENIZER_FILE)):
        p = folder / str(cfg.get(key) or default)
        if p.is_file():
            out[key] = p
    return out


def from_dir(d: Path) -> Source:
    cfg_path = d / "config.json"
    cfg = _load_json(cfg_path) if cfg_path.is_file() else None
    name = (cfg or {}).get("moshi_name")
    if name:
        p = d / name
        if not p.is_file():
            raise SourceError(f"{d}: config.json names moshi_name={name!r}, which is missing")
        files = _shards(p) if name.endswith(".index.json") else [p]
    elif (d / INDEX_FILE).is_file():
        files = _shards(d / INDEX_FILE)
    else:
        found = [d / f for f in LM_CANDIDATES if (d / f).is_file()]
        if not found:
            raise SourceError(f"{d}: no LM weights ({', '.join(LM_CANDIDATES)} or {INDEX_FILE})")
        if len(found) > 1:
            log.warning("%s holds several LM files; using %s", d, found[0].name)
        files = found[:1]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SourceError(f"{d}: missing weight shards {missing}")
    return Source(files, cfg, _extras(d, cfg), str(d))


def from_file(p: Path) -> Source:
    if p.name.endswith(".index.json"):
        return Source(_shards(p), None, _extras(p.parent, None), str(p))
    if p.suffix != ".safetensors":
        raise SourceError(f"{p}: expected a .safetensors LM file")
    cfg = None
    sib = p.parent / "config.json"
    if sib.is_file():
        c = _load_json(sib)
        if c.get("moshi_name") in (None, p.name):
            cfg = c
    return Source([p], cfg, _extras(p.parent, cfg), str(p))


def from_repo(repo: str) -> Source:
    try:
        from moshi_mlx import hub
    except ImportError:  # pragma: no cover - hub ships with the package
        raise SourceError(f"{repo!r} is not a local path, and moshi_mlx.hub is unavailable") from None
    try:
        files = hub.from_repo(repo)
    except hub.HubError as e:
        raise SourceError(str(e)) from None
    cfg = files.config_dict() or None
    lm = Path(files.lm_weight)
    weights = _shards(lm) if lm.name.endswith(".index.json") else [lm]
    extras = {"mimi_name": Path(files.mimi_weight), "tokenizer_name": Path(files.tokenizer)}
    return Source(weights, cfg, {k: v for k, v in extras.items() if v.is_file()}, repo)


def resolve(src: str | Path, config: str | Path | None = None) -> Source:
    """Resolve SRC; `config` (a json path) overrides the source's own config.json."""
    p = Path(src).expanduser()
    if p.is_dir():
        source = from_dir(p)
    elif p.is_file():
        source = from_file(p)
    elif isinstance(src, str) and src.count("/") == 1 and not src.startswith((".", "/", "~")):
        source = from_repo(src)
    else:
        raise SourceError(f"{src!r}: no such file or directory (and not a Hugging Face repo id)")
    if config is not None:
        source.config = _load_json(Path(config))
    return source
