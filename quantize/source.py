"""Find a conversion source: a Hugging Face repo id, a model directory, or a single weight file.

Accepted layouts:
- a model directory, resolved by `moshi_mlx.checkpoint.layout.resolve_dir` (the same rule as
  loading and `--model-dir`); without `config.json` (Kyutai's MLX / PyTorch repos) the LM is the
  v0.1 preset;
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

from moshi_mlx.checkpoint.layout import (
    MIMI_FILE,
    TOKENIZER_FILE,
    CheckpointError,
    lm_weight_files,
    read_config,
    resolve_dir,
    shards_of,
)

log = logging.getLogger(__name__)


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
    try:
        return shards_of(index)
    except CheckpointError as e:
        raise SourceError(str(e)) from None


def _extras(folder: Path, cfg: dict[str, Any] | None) -> dict[str, Path]:
    out: dict[str, Path] = {}
    cfg = cfg or {}
    for key, default in (("mimi_name", MIMI_FILE), ("tokenizer_name", TOKENIZER_FILE)):
        p = folder / str(cfg.get(key) or default)
        if p.is_file():
            out[key] = p
    return out


def from_dir(d: Path) -> Source:
    try:
        md = resolve_dir(d)
    except CheckpointError as e:
        raise SourceError(str(e)) from None
    extras = {k: p for k, p in (("mimi_name", md.mimi), ("tokenizer_name", md.tokenizer))
              if p.is_file()}
    return Source(md.lm_files, md.config, extras, str(d))


def from_file(p: Path) -> Source:
    if p.name.endswith(".index.json"):
        return Source(_shards(p), None, _extras(p.parent, None), str(p))
    if p.suffix != ".safetensors":
        raise SourceError(f"{p}: expected a .safetensors LM file")
    try:
        sib = read_config(p.parent)
    except CheckpointError as e:
        raise SourceError(str(e)) from None
    cfg = sib if sib is not None and sib.get("moshi_name") in (None, p.name) else None
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
    try:
        weights = lm_weight_files(files.lm_weight)
    except CheckpointError as e:
        raise SourceError(str(e)) from None
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
