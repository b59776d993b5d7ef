"""Find a conversion source: a Hugging Face repo id, a model directory, or a single weight file.

Accepted layouts:
- a model directory, resolved by `moshi_mlx.checkpoint.layout.resolve_dir` (the same rule as
  loading and `--model-dir`); without `config.json` (Kyutai's MLX / PyTorch repos) the LM is the
  v0.1 preset;
- a single `.safetensors` file (a sibling `config.json` is used when it names that file or names
  no file; otherwise the v0.1 preset, or `--config`);
- a Hugging Face repo id, resolved (and downloaded) through `moshi_mlx.hub`.

Mimi and the text tokenizer found beside the weights are listed so they can be copied to the output,
and so is a `voices/` folder (Kyutai's TTS layout: `tiny_repo --kind tts`, or voices fetched next
to a TTS model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moshi_mlx.checkpoint.layout import (
    CheckpointError,
    lm_weight_files,
    part_paths,
    read_config,
    resolve_dir,
    shards_of,
)


class SourceError(ValueError):
    """The conversion source cannot be used; the message says why."""


@dataclass
class Source:
    """Resolved inputs of a conversion."""

    weight_files: list[Path]
    config: dict[str, Any] | None  # None -> v0.1 preset
    extras: dict[str, Path] = field(default_factory=dict)  # config key -> file to copy
    description: str = ""
    folders: list[Path] = field(default_factory=list)  # folders to copy (TTS voices/)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SourceError(f"{path} is not valid JSON: {e}") from None


def _extras(folder: Path, cfg: dict[str, Any] | None) -> dict[str, Path]:
    parts = zip(("mimi_name", "tokenizer_name"), part_paths(folder, cfg), strict=True)
    return {key: p for key, p in parts if p.is_file()}


def from_dir(d: Path) -> Source:
    md = resolve_dir(d)
    voices = [d / "voices"] if (d / "voices").is_dir() else []
    return Source(md.lm_files, md.config, _extras(d, md.config), str(d), folders=voices)


def from_file(p: Path) -> Source:
    if p.name.endswith(".index.json"):
        return Source(shards_of(p), None, _extras(p.parent, None), str(p))
    if p.suffix != ".safetensors":
        raise SourceError(f"{p}: expected a .safetensors LM file")
    sib = read_config(p.parent)
    cfg = sib if sib is not None and sib.get("moshi_name") in (None, p.name) else None
    return Source([p], cfg, _extras(p.parent, cfg), str(p))


def from_repo(repo: str) -> Source:
    from moshi_mlx import hub

    try:
        files = hub.from_repo(repo)
    except hub.HubError as e:
        raise SourceError(str(e)) from None
    extras = {"mimi_name": Path(files.mimi_weight), "tokenizer_name": Path(files.tokenizer)}
    return Source(lm_weight_files(files.lm_weight), files.config_dict() or None,
                  {k: v for k, v in extras.items() if v.is_file()}, repo)


def resolve(src: str | Path, config: str | Path | None = None) -> Source:
    """Resolve SRC; `config` (a json path) overrides the source's own config.json."""
    p = Path(src).expanduser()
    try:
        if p.is_dir():
            source = from_dir(p)
        elif p.is_file():
            source = from_file(p)
        elif isinstance(src, str) and src.count("/") == 1 and not src.startswith((".", "/", "~")):
            source = from_repo(src)
        else:
            raise SourceError(f"{src!r}: no such file or directory (and not a Hugging Face repo id)")
    except CheckpointError as e:  # the layout's messages name the files
        raise SourceError(str(e)) from None
    if config is not None:
        source.config = _load_json(Path(config))
    return source
