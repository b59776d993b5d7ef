"""What a checkpoint looks like on disk: file names per model family, and the one directory resolver.

A model directory (a Hugging Face repo snapshot, a `cli.py quantize` output, a tiny test repo) holds
- the LM weights: one safetensors file, or shards `model-0000i-of-0000N.safetensors` listed by
  `model.safetensors.index.json` (mlx-lm's layout for large files);
- the Mimi codec and the text tokenizer;
- optionally `config.json`: the LM kwargs, `moshi_name` / `mimi_name` / `tokenizer_name` naming the
  three files (Kyutai's newer repos and ours), a `"mimi"` block of `MimiConfig` fields (tiny repos),
  and the `"quantization"` block (`moshi_mlx.checkpoint.spec`).

File names are data: a `Family` row per model family (default file names, Kyutai's repo naming);
a new family (speech-to-text, text-to-speech) adds a row to `FAMILIES`, not code. `moshi_mlx.hub`
resolves a repo of any family (`from_repo(repo, family)`).

The rule for the LM weights of a directory (`lm_weight_files`), used by loading, the hub, the
quantizer and the tiny repos alike:
1. `config.json`'s `moshi_name`, when set, names the file (or the shard index); it must exist.
2. Otherwise exactly one candidate must be present: a known LM file name of any family, or
   `model.safetensors.index.json`. None is an error listing the expected names; several (for
   example `model.safetensors` next to `model.q4.safetensors`) is an error naming them: no
   precision is preferred silently. Pass the file itself, or set `moshi_name`, to choose.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"


class CheckpointError(FileNotFoundError):
    """A model directory or file cannot be used as asked; the message names the files."""


@dataclass(frozen=True)
class Family:
    """Default file names of one model family and how Kyutai names its MLX repos."""

    name: str
    lm_files: Mapping[str, str]  # precision ("bf16", "q8", "q4") -> LM weight file name
    mimi_file: str
    tokenizer_file: str
    models: tuple[str, ...] = ()  # short names with Kyutai MLX repos (`repo_template`)
    repo_template: str = "kyutai/{model}-mlx-{precision}"
    sizes: Mapping[str, float] = field(default_factory=dict)  # approximate bytes, for messages
    default_repo: str = ""  # the repo used when none is named (families without `models`)
    config_required: bool = False  # the repo's config.json carries settings the model needs
    voices_repo: str = ""  # speaker voices, one file per voice (text-to-speech)

    def repo(self, model: str, precision: str) -> str:
        return self.repo_template.format(model=model, precision=precision)


MOSHI = Family(
    "moshi",
    {"bf16": "model.safetensors", "q8": "model.q8.safetensors", "q4": "model.q4.safetensors"},
    mimi_file="tokenizer-e351c8d8-checkpoint125.safetensors",
    tokenizer_file="tokenizer_spm_32k_3.model",
    models=("moshiko", "moshika"),
    # From the Hugging Face listings of kyutai/moshiko-mlx-*, for the offline "download" message.
    sizes={"model.safetensors": 15.4e9, "model.q8.safetensors": 8.17e9,
           "model.q4.safetensors": 4.81e9, "tokenizer-e351c8d8-checkpoint125.safetensors": 385e6,
           "tokenizer_spm_32k_3.model": 553e3, CONFIG_FILE: 2e3},
)
# Kyutai's speech-to-text repos (kyutai/stt-1b-en_fr-candle, -mlx): the LM files keep Moshi's
# names; their config.json names the files (stt-2.6b-en uses tokenizer_en_audio_4000.model).
STT = Family(
    "stt",
    MOSHI.lm_files,
    mimi_file="mimi-pytorch-e351c8d8@125.safetensors",
    tokenizer_file="tokenizer_en_fr_audio_8000.model",
)
# Kyutai's text-to-speech repo (PyTorch names; the loader reads them): its config.json names the
# files and holds `tts_config` and the conditioners, so it is required. Voices are separate files
# of `kyutai/tts-voices`, fetched one by one (`<voice>.<sig>@<epoch>.safetensors`).
TTS = Family(
    "tts",
    {"bf16": "dsm_tts_1e68beda@240.safetensors"},
    mimi_file=MOSHI.mimi_file,
    tokenizer_file="tokenizer_spm_8k_en_fr_audio.model",
    default_repo="kyutai/tts-1.6b-en_fr",
    config_required=True,
    voices_repo="kyutai/tts-voices",
)
FAMILIES: dict[str, Family] = {MOSHI.name: MOSHI, STT.name: STT, TTS.name: TTS}

# The Moshi names, used where no config.json names the files.
LM_FILES = MOSHI.lm_files
MIMI_FILE = MOSHI.mimi_file
TOKENIZER_FILE = MOSHI.tokenizer_file


def known_lm_files() -> tuple[str, ...]:
    """Every family's LM file names (the candidates of rule 2), without repeats."""
    return tuple(dict.fromkeys(n for f in FAMILIES.values() for n in f.lm_files.values()))


def precision_of_name(filename: str) -> str | None:
    """"bf16" / "q8" / "q4" for a known LM file name (display only: loading reads the tensors)."""
    for fam in FAMILIES.values():
        for precision, name in fam.lm_files.items():
            if Path(filename).name == name:
                return precision
    return None


def shard_name(i: int, n: int) -> str:
    """Name of shard `i` (0-based) of `n`, as mlx-lm and `huggingface_hub` write them."""
    return f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def read_config(folder: Path) -> dict[str, Any] | None:
    """`folder/config.json` parsed, or None when absent; invalid JSON is a `CheckpointError`."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return cfg


def shards_of(index: Path) -> list[Path]:
    """The shard files an index lists (sorted, each once); all must exist."""
    try:
        weight_map = json.loads(Path(index).read_text()).get("weight_map")
    except (json.JSONDecodeError, AttributeError) as e:
        raise CheckpointError(f"{index} is not a valid shard index: {e}") from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index} has no weight_map")
    files = [Path(index).parent / n for n in sorted(set(weight_map.values()))]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{index} lists shards that are missing: {missing}")
    return files


def lm_weight_name(folder: Path, config: Mapping[str, Any] | None) -> str:
    """The LM weight file (or shard index) name of a directory, by the module docstring's rule."""
    d = Path(folder)
    name = (config or {}).get("moshi_name")
    if name:
        if not (d / name).is_file():
            raise CheckpointError(f"{d}: config.json names moshi_name={name!r}, which is missing")
        return str(name)
    found = [n for n in (*known_lm_files(), INDEX_FILE) if (d / n).is_file()]
    if not found:
        raise CheckpointError(
            f"no LM weights in {d}: expected one of {', '.join(known_lm_files())} or shards "
            f"listed by {INDEX_FILE}")
    if len(found) > 1:
        raise CheckpointError(
            f"several LM weight files in {d}: {', '.join(found)}; pass the one to use as the "
            "file itself, or name it with \"moshi_name\" in config.json")
    return found[0]


def lm_weight_files(path: str | Path) -> list[Path]:
    """The safetensors files of an LM given as a file, a shard index, or a model directory."""
    p = Path(path)
    if p.is_dir():
        p = p / lm_weight_name(p, read_config(p))
    elif not p.is_file():
        raise CheckpointError(f"no LM checkpoint file or directory at {p}")
    return shards_of(p) if p.name.endswith(".index.json") else [p]


def find_mimi_file(path: str | Path) -> Path:
    """The Mimi checkpoint for `path`: the file itself, or in a directory `mimi_name` of its
    config.json, else a family's default name, else the one `tokenizer-*` / `mimi*` safetensors."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise CheckpointError(f"Mimi checkpoint not found: {p}")
    named = (read_config(p) or {}).get("mimi_name")
    defaults = list(dict.fromkeys(f.mimi_file for f in FAMILIES.values()))
    cands = [p / n for n in ([named] if named else []) + defaults]
    cands += sorted(p.glob("tokenizer-*.safetensors")) + sorted(p.glob("mimi*.safetensors"))
    for c in cands:
        if c.is_file():
            return c
    raise CheckpointError(f"no Mimi checkpoint ({' or '.join(defaults)}, tokenizer-*.safetensors "
                          f"or mimi*.safetensors) in {p}")


def part_names(config: Mapping[str, Any] | None, family: Family = MOSHI) -> tuple[str, str]:
    """(Mimi, tokenizer) file names: as config.json names them, else the family's defaults."""
    c = config or {}
    return (str(c.get("mimi_name") or family.mimi_file),
            str(c.get("tokenizer_name") or family.tokenizer_file))


def part_paths(folder: Path, config: Mapping[str, Any] | None,
               family: Family = MOSHI) -> tuple[Path, Path]:
    """(Mimi, tokenizer) paths of a model directory (`part_names`)."""
    mimi, tokenizer = part_names(config, family)
    return Path(folder) / mimi, Path(folder) / tokenizer


@dataclass(frozen=True)
class ModelDir:
    """A resolved model directory: its config and the paths of its three parts (the Mimi and
    tokenizer paths may be absent on disk: callers decide whether they need them)."""

    root: Path
    config: dict[str, Any] | None
    lm_name: str  # file name, or INDEX_FILE for shards
    lm_files: list[Path]
    mimi: Path
    tokenizer: Path

    @property
    def config_path(self) -> Path | None:
        return self.root / CONFIG_FILE if self.config is not None else None

    @property
    def lm_path(self) -> Path:
        """What `load_lm` takes: the weight file, or the directory for shards."""
        return self.root if self.lm_name.endswith(".index.json") else self.root / self.lm_name


def resolve_dir(folder: str | Path, family: Family = MOSHI) -> ModelDir:
    """Resolve a model directory (see the module docstring for the LM rule)."""
    d = Path(folder).expanduser()
    if not d.is_dir():
        raise CheckpointError(f"{str(d)!r} is not a directory")
    cfg = read_config(d)
    name = lm_weight_name(d, cfg)
    files = shards_of(d / name) if name.endswith(".index.json") else [d / name]
    return ModelDir(d, cfg, name, files, *part_paths(d, cfg, family))
