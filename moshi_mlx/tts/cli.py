"""`cli.py speak`: argument checks and wiring for text to speech (see `moshi_mlx.tts.speak`).

Writes the words to standard output as the model starts them, then the wav at the end (`--output`)
or, without `--output`, plays the audio as it is generated (`moshi_mlx.tts.play`), then one
summary line. A bad `--output-device` is reported before the model loads. User mistakes raise ValueError / OSError, which `cli.py` prints as one line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from ..sampling import Sampler
from .speak import TtsModel, find_voice


def _text(a: argparse.Namespace) -> str | Iterable[str]:
    if (a.text is None) == (a.text_file is None):
        raise ValueError("give the text as an argument, '-' for standard input, or --text-file")
    if a.text_file is not None:
        if not a.text_file.is_file():
            raise FileNotFoundError(f"--text-file {a.text_file}: no such file")
        text = a.text_file.read_text()
    elif a.text == "-":
        return iter(sys.stdin.readline, "")
    else:
        text = a.text
    if not text.strip():
        raise ValueError("the text is empty")
    return text


def _voice(model: TtsModel, name: str | None) -> Path:
    """A voice file, a name in the model's `voices/` directory, else a voice of the Hugging Face
    repo `kyutai/tts-voices` (through the hub cache; offline: cached voices only)."""
    from ..hub import VOICES_REPO, HubError, fetch_file
    from .voices import voice_suffix

    path = find_voice(model, name)
    if name is None or path.is_file():  # None: find_voice found the only voice there
        return path
    filename = name if name.endswith(".safetensors") else name + voice_suffix(
        model.config.get("model_id"))
    try:
        return fetch_file(VOICES_REPO, filename)
    except HubError as e:
        raise HubError(f"voice {name!r} is not a file nor in {model.model_dir / 'voices'}; "
                       f"{e}") from None


def run_speak(a: argparse.Namespace) -> int:
    from ..audio.wav import write_wav
    from .speak import FRAME_RATE, load_tts, speak

    if a.temp < 0:
        raise ValueError("--temp must be >= 0")
    if a.max_seconds <= 0:
        raise ValueError("--max-seconds must be > 0")
    if not 0 <= a.seed < 2**64:
        raise ValueError("--seed must be in [0, 2**64)")
    if a.output is not None and (a.output.is_dir() or not a.output.resolve().parent.is_dir()):
        raise ValueError(f"--output {a.output}: not a writable file path")
    if a.output is not None and a.output_device is not None:
        raise ValueError("--output-device plays the audio; it cannot be combined with --output")
    if not a.model_dir.is_dir():
        raise FileNotFoundError(f"--model-dir {a.model_dir}: no such directory")
    if a.output is None:
        from ..audio.live import check_output_device

        check_output_device(a.output_device)  # a bad device fails before the model loads
    text = _text(a)
    model = load_tts(a.model_dir, dtype=None if a.dtype == "auto" else a.dtype, quant=a.quant)
    voice = _voice(model, a.voice)
    text_sampler = Sampler(a.temp, top_k=25) if a.temp > 0 else Sampler(0.0)
    audio_sampler = Sampler(a.temp, top_k=250) if a.temp > 0 else Sampler(0.0)
    player = None
    if a.output is None:
        from .play import SpeakerOutput

        player = SpeakerOutput(a.output_device)
        player.start()
    t0 = time.perf_counter()
    drained = False
    try:
        result = speak(model, text, voice, cfg_coef=a.cfg, text_sampler=text_sampler,
                       audio_sampler=audio_sampler, seed=a.seed,
                       max_steps=int(a.max_seconds * FRAME_RATE) + model.delay_steps + 8,
                       on_audio=None if player is None else player.write,
                       on_word=lambda word, step: print(word, end=" ", flush=True))
        print()
        if player is not None:
            player.close()
            drained = True
    finally:
        if player is not None and not drained:
            player.close(drain=False)
    seconds = len(result.pcm) / model.codec.sample_rate
    note = "" if result.end_step is not None else " (cut by --max-seconds)"
    if player is None:
        write_wav(a.output, result.pcm, model.codec.sample_rate)
        print(f"wrote {a.output}: {seconds:.2f} s of audio in {time.perf_counter() - t0:.1f} s{note}")
    else:
        st = player.audio.stats
        print(f"played {seconds:.2f} s of audio in {time.perf_counter() - t0:.1f} s{note}: "
              f"{st.output_frames} frames, late {st.late_frames}, lost {st.lost_frames}")
    return 0
