"""Text to speech with a Kyutai TTS repository: load it, stream text in, stream 24 kHz audio out.

`load_tts(model_dir, quant=None)` reads `config.json` (`moshi_name`, `mimi_name`,
`tokenizer_name`, `tts_config`, `model_id`) and loads the LM (strictly; quantized at load with
`quant` "q8" / "q4", see `moshi_mlx.tts.quant`; a quantized repository from `cli.py quantize`
needs no `quant`), Mimi (as many codebooks as the LM generates) and the tokenizer. `speak(model, text, voice)` runs `TtsGen` with the state machine settings of PyTorch
moshi's `TTSModel` (initial_padding 2, max_padding 8, one forced pad between words as in its
`simple_generate`, final_padding 4) and decodes each frame with Mimi as soon as its audio is
complete, calling `on_audio(pcm)` with 1920 samples at a time.

Audio timing (PT `simple_generate`): frame f carries audio once f >= delay_steps; the first two
decoded frames are dropped, and the audio ends `end_step` frames later (`end_step` = the step at
which the model asked for a word past the last one).

`text` is a string (the whole script, one speaker) or an iterable of pieces read on a thread
(standard input, line by line): pieces are tokenized as they arrive and the machine pads while
waiting for more, so speech starts before the text is complete.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from ..sampling import Sampler
from .generate import TtsGen
from .script import ScriptReader
from .state_machine import State, StateMachine, TokenIds
from .voices import load_voice, speaker_condition, voice_suffix

FRAME_RATE = 12.5
INITIAL_PADDING, MAX_PADDING, PADDING_BETWEEN, FINAL_PADDING = 2, 8, 1, 4
DROPPED_FRAMES = 2  # PT simple_generate drops the first two decoded frames (a click otherwise)


@dataclass
class TtsModel:
    lm: Any
    codec: Any
    tokenizer: Any
    config: dict
    model_dir: Path

    @property
    def tts_config(self) -> dict:
        return self.config.get("tts_config", {})

    @property
    def delay_steps(self) -> int:
        return int(self.tts_config.get("audio_delay", 0) * FRAME_RATE)

    @property
    def conditioners(self) -> dict:
        return self.config.get("conditioners", {})

    @property
    def cfg_values(self) -> list[str]:
        lut = self.conditioners.get("cfg", {}).get("lut", {})
        return list(lut.get("possible_values", []))

    def machine(self) -> StateMachine:
        return StateMachine(TokenIds(self.lm.cfg.text_card + 1),
                            second_stream_ahead=int(self.tts_config.get("second_stream_ahead", 0)),
                            max_padding=MAX_PADDING, initial_padding=INITIAL_PADDING)


def load_tts(model_dir: str | Path, dtype: str | None = None,
             quant: str | None = None) -> TtsModel:
    """A TTS repository directory (Kyutai's layout, `tiny_repo --kind tts`, or a `cli.py
    quantize` output); `quant` "q8" / "q4" quantizes a float LM at load (None, "bf16": as stored)."""
    from ..codec import load_mimi
    from ..loading import load_lm
    from ..tokenizer import TextTokenizer
    from .quant import check_quant, quantize_tts_lm

    d = Path(model_dir)
    cfg_file = d / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{d}: no config.json (not a TTS model directory)")
    config = json.loads(cfg_file.read_text())
    check_quant(quant)
    if config.get("model_type") != "tts" or "tts_config" not in config:
        raise ValueError(f"{cfg_file}: not a TTS model (model_type {config.get('model_type')!r})")
    for key in ("moshi_name", "mimi_name", "tokenizer_name"):
        if not (d / config.get(key, "")).is_file():
            raise FileNotFoundError(f"{d}: {key} {config.get(key)!r} is missing")
    if quant in (None, "bf16"):
        lm = load_lm(d / config["moshi_name"], dtype=dtype)
    else:  # quantized from the stored weights, then the compute policy (moshi_mlx.tts.quant)
        lm = load_lm(d / config["moshi_name"], dtype="stored")
        quantize_tts_lm(lm, quant, dtype)
    codec = load_mimi(d / config["mimi_name"], num_codebooks=lm.cfg.n_q)
    return TtsModel(lm, codec, TextTokenizer(d / config["tokenizer_name"]), config, d)


def find_voice(model: TtsModel, voice: str | None) -> Path:
    """A .safetensors path, or a voice name under `<model_dir>/voices` (the model's suffix
    appended); None: the only voice there."""
    suffix = voice_suffix(model.config.get("model_id"))
    if voice is not None and voice.endswith(".safetensors"):
        return Path(voice)
    voices = model.model_dir / "voices"
    if voice is not None:
        return voices / f"{voice}{suffix}"
    found = sorted(voices.glob(f"*{suffix}")) if voices.is_dir() else []
    if len(found) != 1:
        raise ValueError(f"give --voice (a .safetensors file or a name in {voices}); "
                         f"found {len(found)} voices there")
    return found[0]


def conditions_for(model: TtsModel, voice: Path, cfg_coef: float) -> tuple[Any, float]:
    """(conditions, cfg_coef for `TtsGen`): distilled CFG goes into the `cfg` LUT (coef 1);
    without one, real CFG doubles the batch with dropped conditions."""
    values: dict[str, Any] = {}
    if "speaker_wavs" in model.conditioners:
        tensor, mask = speaker_condition([load_voice(voice)])
        values["speaker_wavs"] = (mx.array(tensor), mx.array(mask))
    if "control" in model.conditioners:
        values["control"] = ["ok"]
    if "cfg" in model.conditioners:
        value = format(cfg_coef, ".1f")
        if value not in model.cfg_values or abs(float(value) - cfg_coef) > 1e-9:
            raise ValueError(f"--cfg must be one of {', '.join(model.cfg_values)}, got {cfg_coef}")
        values["cfg"] = [value]
        return model.lm.conditions(values), 1.0
    if not values:
        if cfg_coef != 1.0:
            raise ValueError("this model has no conditions to guide: use --cfg 1")
        return None, 1.0
    if cfg_coef != 1.0:
        values = {k: _with_dropped(v) for k, v in values.items()}
    return model.lm.conditions(values), cfg_coef


def _with_dropped(value: Any) -> Any:
    """One condition's values followed by its dropped version (PT `dropout_all_conditions`)."""
    if isinstance(value, tuple):
        tensor, mask = value
        return (mx.concatenate([tensor, mx.zeros_like(tensor)]),
                mx.concatenate([mask, mx.zeros_like(mask)]))
    return list(value) + [None] * len(value)


@dataclass
class SpeakResult:
    pcm: np.ndarray  # [N] float32, 24 kHz
    steps: int
    end_step: int | None
    transcript: list[tuple[str, int]]


class _TextFeed:
    """Pieces of text from an iterable, read on a daemon thread (standard input blocks)."""

    def __init__(self, pieces: Iterable[str]) -> None:
        self.q: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            try:
                for piece in pieces:
                    self.q.put(piece)
            finally:
                self.q.put(None)

        threading.Thread(target=read, daemon=True).start()

    def drain(self, wait: bool) -> tuple[list[str], bool]:
        """(pieces available now, whether the text ended); `wait` blocks for the first one."""
        out, done = [], False
        try:
            item = self.q.get(timeout=None if wait else 0)
            while True:
                if item is None:
                    done = True
                    break
                out.append(item)
                item = self.q.get_nowait()
        except queue.Empty:
            pass
        return out, done


def speak(
    model: TtsModel,
    text: str | Iterable[str],
    voice: Path,
    cfg_coef: float = 2.0,
    text_sampler: Sampler | None = None,
    audio_sampler: Sampler | None = None,
    seed: int | None = None,
    max_steps: int = 30000,
    on_audio: Callable[[np.ndarray], None] | None = None,
    on_word: Callable[[str, int], None] | None = None,
) -> SpeakResult:
    """Synthesize `text`; see the module docstring."""
    machine = model.machine()
    multi = "speaker_wavs" in model.conditioners
    reader = ScriptReader(model.tokenizer, machine.token_ids, FRAME_RATE, multi, PADDING_BETWEEN)
    reader.start_turn(0)
    feed = None
    if isinstance(text, str):
        state = machine.new_state(reader.add(text))
    else:
        state, feed = machine.new_state([], closed=False), _TextFeed(text)
    kwargs = {k: v for k, v in (("text_sampler", text_sampler), ("audio_sampler", audio_sampler))
              if v is not None}
    cond, coef = conditions_for(model, voice, cfg_coef)
    gen = TtsGen(model.lm, machine, [state], cond, model.delay_steps, seed=seed, cfg_coef=coef,
                 **kwargs)
    codec_state = model.codec.init_state(1)
    chunks: list[np.ndarray] = []
    decoded = 0
    n_words = 0
    for t in range(max_steps):
        if feed is not None and not state.closed:
            _feed(feed, reader, state, wait=not state.entries and not state.queued and t > 0)
        if state.end_step is not None and t >= state.end_step + gen.delay_steps + FINAL_PADDING:
            break
        out = gen.step()
        if on_word is not None:
            for word, step in state.transcript[n_words:]:
                on_word(word, step)
        n_words = len(state.transcript)
        if out.frame is None or t - gen.max_delay < gen.delay_steps:
            continue
        codes = np.asarray(out.frame[:, 1:], dtype=np.int32)[:, :, None]
        pcm = np.clip(model.codec.decode_step(codes, codec_state)[0, 0], -1.0, 1.0)
        decoded += 1
        if decoded <= DROPPED_FRAMES:
            continue
        if state.end_step is not None and decoded - DROPPED_FRAMES > state.end_step:
            continue
        chunks.append(pcm)
        if on_audio is not None:
            on_audio(pcm)
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return SpeakResult(pcm.astype(np.float32), gen.step_count, state.end_step, list(state.transcript))


def _feed(feed: _TextFeed, reader: ScriptReader, state: State, wait: bool) -> None:
    """Move the text that arrived into the machine's entries; close it at the end of the text.
    Blocks only when the machine has nothing at all to say (no entry, no queued token)."""
    pieces, done = feed.drain(wait)
    for piece in pieces:
        state.push(reader.add(piece))
    if done:
        state.close()
