"""Where model files come from: names, Hugging Face repos, local directories, the offline cache.

This is the only module of the package that imports `huggingface_hub` (lazily, inside functions).

A model is three files plus an optional `config.json`, laid out like Kyutai's MLX repos (file
names and the directory rule: `moshi_mlx.checkpoint.layout`). Kyutai's moshiko/moshika MLX repos
have no `config.json` (the LM is the v0.1 preset); our own repos (tiny test models, `cli.py
quantize` outputs) have one, with `moshi_name`/`mimi_name`/`tokenizer_name` naming the files, as
in Kyutai's newer repos.

Selection, most specific first: explicit `--lm-weight/--mimi-weight/--tokenizer` files override
single files of whatever else is chosen; `--model-dir DIR`; `--hf-repo REPO`; `--model NAME
--quant Q` (a known name); default `kyutai/moshiko-mlx-q4`. Other model families resolve a repo
with `from_repo(repo, family)` (e.g. `layout.TTS`: its default names, and config.json required).

Offline (`HF_HUB_OFFLINE=1`, or the hub unreachable) cached files are used; a file that is not in the
cache raises `HubError` whose message says what to download, how large it is and the command to do it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint.layout import (
    LM_FILES,
    MOSHI,
    TTS,
    CheckpointError,
    Family,
    part_names,
    precision_of_name,
    resolve_dir,
)
from .checkpoint.spec import precision_label

log = logging.getLogger(__name__)

NAMES = MOSHI.models
QUANTS = tuple(LM_FILES)
DEFAULT_NAME, DEFAULT_QUANT = "moshiko", "q4"
DEFAULT_REPO = MOSHI.repo(DEFAULT_NAME, DEFAULT_QUANT)
VOICES_REPO = TTS.voices_repo  # the TTS speaker voices (`cli.py speak --voice NAME`)
FILE_SIZES = MOSHI.sizes  # approximate, for the offline message


class HubError(Exception):
    """A user-facing problem finding model files; the message is one clear line (or a few)."""


@dataclass(frozen=True)
class ModelFiles:
    """Resolved local paths of one model, plus what to call it in the UI and transcripts."""

    lm_weight: Path
    mimi_weight: Path
    tokenizer: Path
    config: Path | None  # config.json if the source has one
    source: str  # repo id or directory
    name: str  # e.g. "moshiko" or the repo/dir name
    precision: str  # "bf16", "q8", "q4", or what the config's quantization block says

    def config_dict(self) -> dict[str, Any]:
        """The parsed `config.json`, or {} when the source has none."""
        if self.config is None:
            return {}
        with open(self.config) as f:
            return json.load(f)


def repo_for(name: str, quant: str) -> str:
    """`moshiko`/`moshika` x `bf16`/`q8`/`q4` -> Kyutai's MLX repo id."""
    if name not in NAMES:
        raise HubError(f"unknown model name {name!r}; known names: {', '.join(NAMES)}")
    if quant not in QUANTS:
        raise HubError(f"unknown precision {quant!r} for {name}; known: {', '.join(QUANTS)}")
    return MOSHI.repo(name, quant)


def parse_model_name(spec: str, quant: str | None = None) -> tuple[str, str]:
    """Accepts `moshiko`, `moshiko-q8`, `moshika:bf16`; returns (name, quant)."""
    for sep in (":", "-", "/"):
        if sep in spec:
            head, tail = spec.split(sep, 1)
            if tail in QUANTS:
                if quant is not None and quant != tail:
                    raise HubError(f"--model {spec} and --quant {quant} disagree; give one")
                spec, quant = head, tail
                break
    if spec not in NAMES:
        known = ", ".join(f"{n}[-{'|'.join(QUANTS)}]" for n in NAMES)
        raise HubError(f"unknown model name {spec!r}; known names: {known}")
    quant = quant or DEFAULT_QUANT
    if quant not in QUANTS:
        raise HubError(f"unknown precision {quant!r}; known: {', '.join(QUANTS)}")
    return spec, quant


def _known_repo(repo: str) -> tuple[str, str] | None:
    for n in NAMES:
        for q in QUANTS:
            if repo == MOSHI.repo(n, q):
                return n, q
    return None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE read at call time (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cache_dir() -> str:
    """The hub cache, honouring HF_HUB_CACHE / HF_HOME at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return os.path.join(home, "hub")


def _fmt_size(n: float) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}" if unit == "GB" else f"{n / div:.0f} {unit}"
    return f"{int(n)} B"


def _missing_message(repo: str, files: list[str], why: str, family: Family = MOSHI) -> str:
    sizes = [family.sizes.get(f) for f in files]
    listing = ", ".join(f"{f} ({_fmt_size(s)})" if s else f for f, s in zip(files, sizes, strict=True))
    total = sum(s for s in sizes if s)
    about = f" (about {_fmt_size(total)} in all)" if total else ""
    return (
        f"{why}: {repo} is not in the local cache ({cache_dir()}). Needed: {listing}{about}. "
        f"Download it while online with: hf download {repo} {' '.join(files)}"
    )


def _cached(repo: str, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo, filename, cache_dir=cache_dir())
    return hit if isinstance(hit, str) and os.path.isfile(hit) else None


def _fetch(repo: str, filename: str, offline: bool, optional: bool = False) -> str | None:
    """Local path of repo/filename (downloading with progress if online), None if unavailable
    (or, with `optional`, if the repo has no such file)."""
    hit = _cached(repo, filename)
    if hit is not None or offline:
        return hit
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return hf_hub_download(repo, filename, cache_dir=cache_dir())
    except GatedRepoError as e:
        raise HubError(f"{repo} is gated: log in with `hf auth login` ({e.__class__.__name__})") from None
    except RepositoryNotFoundError:
        raise HubError(f"Hugging Face repo {repo!r} does not exist (or is private)") from None
    except LocalEntryNotFoundError:
        return None  # no network and not cached
    except EntryNotFoundError:
        if optional:
            return None
        raise HubError(f"{repo} has no file {filename!r}") from None
    except KeyboardInterrupt:
        raise HubError(
            f"download of {repo}/{filename} interrupted; run the command again to resume it"
        ) from None
    except OSError as e:  # connection reset mid-file, disk full, ...
        raise HubError(
            f"download of {repo}/{filename} failed ({e.__class__.__name__}: {e}); "
            "run the command again to resume it"
        ) from None


def fetch_file(repo: str, filename: str) -> Path:
    """One file of a Hugging Face repo: from the cache, else downloaded (online). Offline or
    unreachable and not cached: HubError naming the file and the `hf download` command."""
    offline = hub_offline()
    path = _fetch(repo, filename, offline)
    if path is None:
        why = "offline (HF_HUB_OFFLINE=1)" if offline else "the Hugging Face hub cannot be reached"
        raise HubError(_missing_message(repo, [filename], why))
    return Path(path)


def _files_from_config(cfg: dict[str, Any], lm_default: str,
                       family: Family = MOSHI) -> tuple[str, str, str]:
    return (cfg.get("moshi_name") or lm_default, *part_names(cfg, family))


def _precision(cfg: dict[str, Any], lm_file: str) -> str:
    """Display only; loading detects quantization from the tensors."""
    return (precision_label(cfg.get("quantization")) or precision_of_name(lm_file)
            or ("bf16" if "quantization" not in cfg else "mixed"))


def from_repo(repo: str, family: Family = MOSHI) -> ModelFiles:
    """Resolve (and download if needed) the files of a Hugging Face repo of `family`: its
    config.json first (when there is one), then exactly the files it names (else the family's
    default names). Not cached and unreachable: one HubError listing every missing file."""
    offline = hub_offline()
    known = _known_repo(repo) if family is MOSHI else None
    why = "offline (HF_HUB_OFFLINE=1)" if offline else "the Hugging Face hub cannot be reached"
    cfg: dict[str, Any] = {}
    cfg_path: str | None = None
    missing: list[str] = []
    if known is None:  # our own / third-party repos carry a config.json naming the files
        cfg_path = _fetch(repo, "config.json", offline, optional=not family.config_required)
        if cfg_path is not None:
            with open(cfg_path) as f:
                cfg = json.load(f)
        elif family.config_required:
            missing.append("config.json")
            offline = True  # unreachable: the files below are only looked up in the cache
    lm_files = family.lm_files
    lm_default = lm_files[known[1]] if known else next(
        (f for q, f in lm_files.items() if repo.endswith(f"-{q}")), next(iter(lm_files.values()))
    )
    names = _files_from_config(cfg, lm_default, family)
    paths = []
    for f in names:
        paths.append(_fetch(repo, f, offline))
        # Unreachable hub: huggingface_hub retries each file for ~25 s; don't wait it out twice more.
        offline = offline or paths[-1] is None
    missing += [f for f, p in zip(names, paths, strict=True) if p is None]
    if missing:
        raise HubError(_missing_message(repo, missing, why, family))
    lm, mimi, tok = (Path(p) for p in paths)  # type: ignore[arg-type]
    return ModelFiles(
        lm, mimi, tok, Path(cfg_path) if cfg_path else None, repo,
        known[0] if known else repo.split("/")[-1], _precision(cfg, names[0]),
    )


def from_dir(model_dir: str | Path) -> ModelFiles:
    """Resolve a local directory in the same layout as the repos."""
    d = Path(model_dir).expanduser()
    if not d.is_dir():
        raise HubError(f"--model-dir {str(d)!r} is not a directory")
    try:
        md = resolve_dir(d)
    except CheckpointError as e:
        raise HubError(f"--model-dir: {e}") from None
    missing = [p.name for p in (md.mimi, md.tokenizer) if not p.exists()]
    if missing:
        raise HubError(f"--model-dir {str(d)!r} lacks {', '.join(missing)}")
    return ModelFiles(md.lm_path, md.mimi, md.tokenizer, md.config_path, str(d), d.name,
                      _precision(md.config or {}, md.lm_name))


def resolve(
    *,
    hf_repo: str | None = None,
    model: str | None = None,
    quant: str | None = None,
    model_dir: str | Path | None = None,
    lm_weight: str | Path | None = None,
    mimi_weight: str | Path | None = None,
    tokenizer: str | Path | None = None,
) -> ModelFiles:
    """Pick the model's files from the command-line style options (see module docstring)."""
    explicit = {"--lm-weight": lm_weight, "--mimi-weight": mimi_weight, "--tokenizer": tokenizer}
    for flag, p in explicit.items():
        if p is not None and not Path(p).expanduser().exists():
            raise HubError(f"{flag} {str(p)!r}: no such file")
    if lm_weight and mimi_weight and tokenizer and not (model_dir or hf_repo or model):
        lm = Path(lm_weight)
        return ModelFiles(lm, Path(mimi_weight), Path(tokenizer), None, str(lm.parent),
                          lm.stem, _precision({}, lm.name))
    if sum(x is not None for x in (hf_repo, model, model_dir)) > 1:
        raise HubError("choose one of --model-dir, --hf-repo and --model")
    if quant is not None and (hf_repo is not None or model_dir is not None):
        raise HubError("--quant selects a precision of --model; a repo or directory has its own")
    if model_dir is not None:
        base = from_dir(model_dir)
    elif model is not None:
        base = from_repo(repo_for(*parse_model_name(model, quant)))
    elif hf_repo is not None:
        base = from_repo(hf_repo)
    else:
        base = from_repo(repo_for(DEFAULT_NAME, quant or DEFAULT_QUANT))
    if not any(explicit.values()):
        return base
    return ModelFiles(
        Path(lm_weight) if lm_weight else base.lm_weight,
        Path(mimi_weight) if mimi_weight else base.mimi_weight,
        Path(tokenizer) if tokenizer else base.tokenizer,
        base.config, base.source, base.name,
        _precision({}, str(lm_weight)) if lm_weight else base.precision,
    )
