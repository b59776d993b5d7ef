"""Streaming speech-to-text with Kyutai's STT checkpoints: the Python API behind `cli.py transcribe`.

    from moshi_mlx.stt import Transcriber
    tr = Transcriber.load(model="stt-1b")                  # or model_dir=..., hf_repo=...
    for ev in tr.stream(blocks):                           # float32 24 kHz mono blocks, any size
        ...                                                # Piece / Word / VadEvent, as they come
    t = tr.transcribe_file("talk.wav")                     # any rate, mono or stereo, streamed
    print(t.text, [(w.text, w.start, w.stop) for w in t.words])
    ts = tr.transcribe_files(paths, batch_size=4)          # several files in one batch

Models by name: `stt-1b` is `kyutai/stt-1b-en_fr-candle` (English and French, 0.5 s delay, the
only published files with the VAD heads; PyTorch key names, which `load_lm` maps), `stt-2.6b` is
`kyutai/stt-2.6b-en-mlx` (English, 2.5 s delay). `quant="q8"/"q4"` quantizes an unquantized
checkpoint at load time as Kyutai's MLX files are (q8: group 64, q4: group 32). Files come from
the hub cache with the same offline rules as Moshi (`moshi_mlx.hub`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .session import Event, Piece, SttConfig, SttSession
from .words import VAD_HEAD, VadEvent, Word

STT_MODELS = {"stt-1b": "kyutai/stt-1b-en_fr-candle", "stt-2.6b": "kyutai/stt-2.6b-en-mlx"}
QUANT_SPECS = {"q8": {"group_size": 64, "bits": 8}, "q4": {"group_size": 32, "bits": 4}}


@dataclass
class Transcript:
    """The result for one input: timed words, end-of-turn events, and what the run cost."""

    input: str
    words: list[Word] = field(default_factory=list)
    vad: list[VadEvent] = field(default_factory=list)
    duration: float = 0.0  # seconds of input audio
    steps: int = 0  # model steps, padding included
    wall_s: float = 0.0  # wall time of the run (of the whole batch, for batched files)

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    def add(self, events: Iterable[Event]) -> None:
        for ev in events:
            if isinstance(ev, Word):
                self.words.append(ev)
            elif isinstance(ev, VadEvent):
                self.vad.append(ev)

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "duration_s": round(self.duration, 3), "text": self.text,
                "words": [w.to_dict() for w in self.words],
                "vad": [v.to_dict() for v in self.vad],
                "steps": self.steps, "wall_s": round(self.wall_s, 3),
                "rtf": round(self.wall_s / self.duration, 4) if self.duration else None}


def resolve_files(model: str | None = None, **kw: Any) -> Any:
    """`moshi_mlx.hub.resolve` with the STT names (`--model stt-1b` / `stt-2.6b`)."""
    from ..hub import HubError, cache_dir, resolve

    if model is not None:
        if model not in STT_MODELS:
            raise HubError(f"unknown STT model {model!r}; known: {', '.join(STT_MODELS)}")
        if kw.get("hf_repo") or kw.get("model_dir"):
            raise HubError("choose one of --model-dir, --hf-repo and --model")
        kw["hf_repo"] = STT_MODELS[model]
    if kw.get("hf_repo") is None and kw.get("model_dir") is None and not kw.get("lm_weight"):
        kw["hf_repo"] = STT_MODELS["stt-1b"]
    try:
        return resolve(**kw)
    except HubError as e:
        repo = kw.get("hf_repo")
        if repo in STT_MODELS.values() and "not in the local cache" in str(e):
            # Without the repo's config.json the hub module lists Moshi's file names: the STT
            # repos name theirs in config.json, so ask for the whole repo instead.
            raise HubError(f"{str(e).split(':')[0]}: {repo} is not in the local cache "
                           f"({cache_dir()}). Download it while online with: hf download "
                           f"{repo}") from None
        raise


class Transcriber:
    """A loaded STT model (LM, Mimi, text tokenizer, `stt_config`); see the module docstring."""

    def __init__(self, lm: Any, codec: Any, tokenizer: Any, stt: SttConfig,
                 sampler: Any = None, seed: int | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self.lm, self.codec, self.tokenizer, self.stt = lm, codec, tokenizer, stt
        self.sampler, self.seed = sampler, seed
        self.info = dict(info or {})

    @property
    def has_vad(self) -> bool:
        return len(self.lm.extra_heads) > VAD_HEAD

    @classmethod
    def load(cls, model: str | None = None, *, quant: str | None = None,
             hf_repo: str | None = None, model_dir: str | Path | None = None,
             lm_weight: str | Path | None = None, mimi_weight: str | Path | None = None,
             tokenizer: str | Path | None = None, dtype: str = "auto",
             mimi_backend: str = "mlx", temp: float = 0.0, top_k: int = 0,
             seed: int | None = 299792458) -> Transcriber:
        """Resolve the files (names, repo, directory, single files) and load them."""
        from ..audio.pipeline import Settings, load_model
        from ..quant import quantize_lm, quantized_modules
        from ..sampling import Sampler
        from .gen import check_stt_model

        files = resolve_files(model, hf_repo=hf_repo, model_dir=model_dir, lm_weight=lm_weight,
                              mimi_weight=mimi_weight, tokenizer=tokenizer)
        stt = SttConfig.from_config(files.config_dict())
        if quant not in (None, "bf16", *QUANT_SPECS):
            raise ValueError(f"unknown quant {quant!r}; choose bf16, q8 or q4")
        settings = Settings(text_temp=temp, text_top_k=top_k, seed=seed, dtype=dtype,
                            mimi_backend=mimi_backend)
        m = load_model(files, settings)
        check_stt_model(m.lm.cfg)
        precision = files.precision
        if quant in QUANT_SPECS:
            if quantized_modules(m.lm):
                if precision != quant:
                    raise ValueError(f"{files.source} is already quantized ({precision}); "
                                     f"--quant {quant} applies to unquantized checkpoints")
            else:
                import mlx.core as mx

                quantize_lm(m.lm, QUANT_SPECS[quant])
                mx.eval(m.lm.parameters())
                precision = quant
        info = dict(m.describe(), precision=precision, stt_config=stt.to_dict(),
                    vad_heads=len(m.lm.extra_heads))
        return cls(m.lm, m.mimi, m.tokenizer, stt, Sampler.from_flags(temp, top_k),
                   seed, info)

    def session(self, batch_size: int = 1) -> SttSession:
        """A fresh streaming session of `batch_size` streams (prefix silence already fed)."""
        return SttSession(self.lm, self.codec, self.tokenizer, self.stt, batch_size,
                          sampler=self.sampler, seed=self.seed)

    def stream(self, blocks: Iterable[np.ndarray]) -> Iterator[Event]:
        """Events of one stream of float32 24 kHz mono blocks of any size, as they come; at the
        end of `blocks`, the trailing silence is fed and the last words come out."""
        sess = self.session(1)
        fs = sess.frame_size
        buf = np.zeros(0, np.float32)
        for block in blocks:
            buf = np.concatenate([buf, np.asarray(block, np.float32).reshape(-1)])
            n = len(buf) // fs
            for i in range(n):
                yield from sess.feed(buf[None, i * fs:(i + 1) * fs])[0]
            buf = buf[n * fs:]
        if len(buf):
            yield from sess.feed(np.pad(buf, (0, fs - len(buf)))[None])[0]
        yield from sess.finish()[0]

    def transcribe_file(self, path: str | Path,
                        on_event: Callable[[Event], None] | None = None) -> Transcript:
        return self.transcribe_files([path], batch_size=1, on_event=on_event)[0]

    def transcribe_files(self, paths: Sequence[str | Path], batch_size: int = 4,
                         on_progress: Callable[[int], None] | None = None,
                         on_event: Callable[[Event], None] | None = None) -> list[Transcript]:
        """Transcribe several files, `batch_size` at a time in one batch (streams in lockstep,
        shorter ones padded with silence). `on_progress(frames)` is called with the audio frames
        done per step; `on_event` gets the first stream's events (for a live display)."""
        from .audio_in import iter_wav, wav_info

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        infos = [wav_info(p) for p in paths]  # every header checked before any work
        out: list[Transcript] = []
        for i in range(0, len(paths), batch_size):
            group = infos[i:i + batch_size]
            out.extend(self._batch(group, [iter_wav(g.path, self.codec.sample_rate)
                                           for g in group], on_progress, on_event))
        return out

    def _batch(self, infos: list[Any], readers: list[Iterator[np.ndarray]],
               on_progress: Callable[[int], None] | None,
               on_event: Callable[[Event], None] | None) -> list[Transcript]:
        t0 = time.perf_counter()
        B = len(readers)
        sess = self.session(B)
        fs = sess.frame_size
        results = [Transcript(str(info.path)) for info in infos]
        bufs = [np.zeros(0, np.float32) for _ in range(B)]
        ended: list[int | None] = [None] * B  # audio frames of stream b, once its file is done
        closed = [False] * B
        while not all(closed):
            frames = np.zeros((B, fs), np.float32)
            for b in range(B):
                while ended[b] is None and len(bufs[b]) < fs:
                    block = next(readers[b], None)
                    if block is None:
                        ended[b] = sess.audio_frames + (1 if len(bufs[b]) else 0)
                        results[b].duration = (sess.audio_frames * fs + len(bufs[b])) / \
                            self.codec.sample_rate
                    else:
                        bufs[b] = np.concatenate([bufs[b], block])
                n = min(fs, len(bufs[b]))
                frames[b, :n] = bufs[b][:n]
                bufs[b] = bufs[b][n:]
            live = sum(1 for b in range(B) if ended[b] is None or sess.audio_frames < ended[b])
            events = sess.feed(frames)
            for b in range(B):
                if closed[b]:
                    continue
                results[b].add(events[b])
                if on_event is not None and b == 0:
                    for ev in events[b]:
                        on_event(ev)
                end = ended[b]
                if end is not None and sess.audio_frames >= end + self.stt.suffix_frames:
                    last = sess.timers[b].finish(sess.steps)
                    results[b].add(last)
                    if on_event is not None and b == 0:
                        for ev in last:
                            on_event(ev)
                    results[b].steps = sess.steps
                    closed[b] = True
            if on_progress is not None and live:
                on_progress(live)
        wall = time.perf_counter() - t0
        for r in results:
            r.wall_s = wall
        return results


__all__ = ["Transcriber", "Transcript", "Word", "VadEvent", "Piece", "STT_MODELS"]
