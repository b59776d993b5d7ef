"""Wiring shared by `chat`, `run` and `bench`: resolved model files -> LM, Mimi, tokenizer -> Conversation.

`Settings` holds what the user chose (sampling, seed, compute dtype, Mimi backend); `load_model`
builds the pieces (call it on the thread that will run the model: MLX streams are per thread);
`Model.conversation()` makes a fresh `Conversation` with its own generation and codec state;
`Model.start()` also warms it up and applies the schedule (`--schedule`, or the automatic choice
from the warm-up stage times).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..conversation import SCHEDULES, Conversation, FrameTiming, ScheduleChoice, choose_schedule
from ..hub import ModelFiles
from ..sampling import DEFAULT_AUDIO, DEFAULT_TEXT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    text_temp: float = DEFAULT_TEXT.temp
    text_top_k: int = DEFAULT_TEXT.top_k
    audio_temp: float = DEFAULT_AUDIO.temp
    audio_top_k: int = DEFAULT_AUDIO.top_k
    seed: int | None = 299792458  # Kyutai's MLX entry points use this seed
    dtype: str = "auto"
    mimi_backend: str = "mlx"
    schedule: str = "auto"  # or one of conversation.SCHEDULES

    def __post_init__(self) -> None:
        if self.schedule not in ("auto", *SCHEDULES):
            raise ValueError(f"unknown schedule {self.schedule!r}; choose auto or one of {SCHEDULES}")

    def compute_dtype(self) -> str | None:
        """The `dtype` for `load_lm`: `auto` -> None, which lets `load_lm` pick per platform (stored
        bf16 on Metal; float32 activations on CPU, see `moshi_mlx.loading`)."""
        return None if self.dtype == "auto" else self.dtype

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Model:
    files: ModelFiles
    lm: Any
    mimi: Any
    tokenizer: Any
    settings: Settings

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.files.name, "precision": self.files.precision, "source": self.files.source,
            "lm_weight": str(self.files.lm_weight), "mimi_weight": str(self.files.mimi_weight),
            "tokenizer": str(self.files.tokenizer), "dtype": self.settings.dtype,
            "act_dtype": str(getattr(self.lm, "act_dtype", "")).replace("mlx.core.", ""),
            "mimi_backend": self.settings.mimi_backend,
        }

    def conversation(self) -> Conversation:
        from ..engine import LmGen
        from ..sampling import Sampler

        s = self.settings
        gen = LmGen(self.lm, text_sampler=Sampler.from_flags(s.text_temp, s.text_top_k),
                    audio_sampler=Sampler.from_flags(s.audio_temp, s.audio_top_k), seed=s.seed)
        schedule = "serial" if s.schedule == "auto" else s.schedule
        return Conversation(gen, self.mimi, self.tokenizer, schedule=schedule)

    def start(self, warmup_frames: int = 4) -> tuple[Conversation, ScheduleChoice, list[FrameTiming]]:
        """A warmed-up conversation with its schedule applied; returns the warm-up timings too
        (the first one includes compilation)."""
        conv = self.conversation()
        warm = conv.warmup(warmup_frames)
        if self.settings.schedule == "auto":
            choice = choose_schedule(warm[1:])
        else:
            choice = ScheduleChoice(self.settings.schedule, "--schedule")
        conv.schedule = choice.schedule
        log.info("schedule %s (%s)", choice.schedule, choice.reason)
        return conv, choice, warm


def _lm_config(files: ModelFiles) -> dict[str, Any] | None:
    """The source's config for the LM; its "quantization" block describes the source's own LM file,
    so it is dropped when `--lm-weight` points elsewhere (quantization is read from the tensors)."""
    if files.config is None:
        return None
    cfg = files.config_dict()
    own = files.config.parent / cfg.get("moshi_name", files.lm_weight.name)
    if files.lm_weight.resolve() != own.resolve():
        cfg.pop("quantization", None)
    return cfg


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """MLX's own load errors ("[load] Unknown file format wav") do not say which file: add it."""
    try:
        yield
    except (RuntimeError, ValueError, OSError) as e:
        if str(path) in str(e) or path.name in str(e):
            raise
        raise ValueError(f"cannot load {path}: {e}") from None


def load_model(files: ModelFiles, settings: Settings) -> Model:
    """Load LM, Mimi and tokenizer; raises ValueError/FileNotFoundError with clear messages."""
    import mlx.core as mx

    from ..codec import check_backend, load_mimi
    from ..loading import load_lm
    from ..tokenizer import TextTokenizer

    check_backend(settings.mimi_backend)  # before the (slow) LM: a missing rustymimi fails at once
    if settings.seed is not None:
        mx.random.seed(settings.seed)
    log.info("loading LM from %s", files.lm_weight)
    with _naming(files.lm_weight):
        lm = load_lm(files.lm_weight, config=_lm_config(files), dtype=settings.compute_dtype())
    log.info("loading Mimi from %s (%s)", files.mimi_weight, settings.mimi_backend)
    with _naming(files.mimi_weight):
        mimi = load_mimi(files.mimi_weight, num_codebooks=lm.cfg.n_q - lm.cfg.dep_q,
                         backend=settings.mimi_backend, config=files.config_dict().get("mimi"))
    try:
        tokenizer = TextTokenizer(files.tokenizer)
    except (RuntimeError, OSError) as e:
        raise ValueError(f"cannot read the text tokenizer {files.tokenizer}: {e}") from None
    if tokenizer.vocab_size > lm.cfg.text_card:
        raise ValueError(f"tokenizer {files.tokenizer} has {tokenizer.vocab_size} pieces but the LM "
                         f"only {lm.cfg.text_card} text ids: mismatched files")
    return Model(files, lm, mimi, tokenizer, settings)
