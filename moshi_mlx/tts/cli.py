"""`cli.py speak`: argument checks and wiring for text to speech (see `moshi_mlx.tts.speak`).

The model: `--model-dir DIR`, else the Hugging Face repo `--hf-repo` (default: the `TTS` row of
`moshi_mlx.checkpoint.layout`) through `moshi_mlx.hub.from_repo` (config.json first, then the
files it names; offline, the cache only, and one error naming what is missing). Sampling:
`--text-temp/--audio-temp` default to the checkpoint's `lm_gen_config`, `--temp` sets both.

Without `--output` the audio plays as it is generated (`moshi_mlx.tts.play`); the display
(`moshi_mlx.ui.speech`) highlights the word being heard on a terminal, or prints the words as the
model starts them (pipes, `--plain`); then one summary line. Ctrl-C stops at once with one line
(an `--output` file, written as the audio comes, holds everything made so far). Every user mistake is found before the model
loads and raised as ValueError / OSError, which `cli.py` prints as one line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from ..sampling import Sampler
from .speak import TtsModel, find_voice

EXIT_INTERRUPTED = 130


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


def _check(a: argparse.Namespace) -> None:
    for flag in ("temp", "text_temp", "audio_temp"):
        value = getattr(a, flag)
        if value is not None and not value >= 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 0")
    if a.temp is not None and (a.text_temp is not None or a.audio_temp is not None):
        raise ValueError("--temp sets both temperatures: give it or --text-temp/--audio-temp")
    for flag in ("text_top_k", "audio_top_k"):
        if getattr(a, flag) < 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 0 (0 = off)")
    if a.max_seconds <= 0:
        raise ValueError("--max-seconds must be > 0")
    if not 0 <= a.seed < 2**64:
        raise ValueError("--seed must be in [0, 2**64)")
    if a.output is not None and (a.output.is_dir() or not a.output.resolve().parent.is_dir()):
        raise ValueError(f"--output {a.output}: not a writable file path")
    if a.output is not None and a.output_device is not None:
        raise ValueError("--output-device plays the audio; it cannot be combined with --output")
    if a.model_dir is not None and a.hf_repo is not None:
        raise ValueError("choose one of --model-dir and --hf-repo")
    if a.model_dir is not None and not a.model_dir.is_dir():
        raise FileNotFoundError(f"--model-dir {a.model_dir}: no such directory")


def _model_dir(a: argparse.Namespace) -> Path:
    """`--model-dir`, else the snapshot directory of the hub repo (downloaded if needed)."""
    if a.model_dir is not None:
        return a.model_dir
    from ..checkpoint.layout import TTS
    from ..hub import from_repo

    files = from_repo(a.hf_repo or TTS.default_repo, TTS)
    assert files.config is not None  # the TTS family requires it
    return files.config.parent


def _samplers(a: argparse.Namespace, model: TtsModel) -> tuple[Sampler, Sampler]:
    """(text, audio) samplers: the flags, else the checkpoint's `lm_gen_config` temperatures."""
    from .generate import TTS_AUDIO, TTS_TEXT

    gen = model.config.get("lm_gen_config", {})
    text_temp = a.temp if a.temp is not None else a.text_temp
    audio_temp = a.temp if a.temp is not None else a.audio_temp
    if text_temp is None:
        text_temp = float(gen.get("text_temp", TTS_TEXT.temp))
    if audio_temp is None:
        audio_temp = float(gen.get("temp", TTS_AUDIO.temp))
    return (Sampler.from_flags(text_temp, a.text_top_k),
            Sampler.from_flags(audio_temp, a.audio_top_k))


def _voice(model: TtsModel, name: str | None) -> Path | None:
    """A voice file, a name in the model's `voices/` directory, else a voice of the Hugging Face
    repo `kyutai/tts-voices` (through the hub cache; offline: cached voices only). No name and
    no `voices/` directory (a model from the hub): Kyutai's default voice; a cloning model
    without a voice gets no prefix (None)."""
    from ..hub import VOICES_REPO, HubError, fetch_file
    from .voices import DEFAULT_VOICE, voice_suffix

    if name is None and not model.clones_voice and not (model.model_dir / "voices").is_dir():
        name = DEFAULT_VOICE
    path = find_voice(model, name)
    if name is None or path.is_file():  # None: find_voice found the only voice there
        return path
    filename = name if name.endswith(".safetensors") or model.clones_voice else name + voice_suffix(
        model.config.get("model_id"))
    try:
        return fetch_file(VOICES_REPO, filename)
    except HubError as e:
        raise HubError(f"voice {name!r} is not a file nor in {model.model_dir / 'voices'}; "
                       f"{e}") from None


def run_speak(a: argparse.Namespace) -> int:
    from rich.console import Console

    from ..audio.wav import WavWriter
    from ..conversation import FRAME_SIZE
    from ..ui.speech import SpeakProgress, make_speak_ui
    from .script import script_words
    from .speak import FRAME_RATE, load_tts, speak

    _check(a)
    if a.output is None:
        from ..audio.live import check_output_device

        check_output_device(a.output_device)  # a bad device fails before the model loads
    text = _text(a)
    model = load_tts(_model_dir(a), dtype=None if a.dtype == "auto" else a.dtype, quant=a.quant)
    voice = _voice(model, a.voice)
    text_sampler, audio_sampler = _samplers(a, model)
    player = None
    if a.output is None:
        from .play import SpeakerOutput

        player = SpeakerOutput(a.output_device)
        player.start()
    # --output: written as it comes, a valid file at every moment (an interrupted run keeps it all)
    writer = None if player is not None else WavWriter(a.output, model.codec.sample_rate)
    t0 = time.perf_counter()

    def progress() -> SpeakProgress:
        elapsed = time.perf_counter() - t0
        if player is None:
            return SpeakProgress(writer.samples // FRAME_SIZE, elapsed)
        st = player.audio.stats
        return SpeakProgress(player.frames, elapsed, player.waited_s, player.audio.jitter.depth,
                             player.audio.output_latency_ms, st.late_frames, st.lost_frames)

    # Text typed into the terminal would scribble over the live display: plain output then.
    plain = a.plain or (a.text == "-" and sys.stdin.isatty())
    ui = make_speak_ui(progress, script_words(text) if isinstance(text, str) else None,
                       Console(highlight=False), plain=True if plain else None)
    ui.start()
    result, drained = None, False
    try:
        result = speak(model, text, voice, cfg_coef=a.cfg, text_sampler=text_sampler,
                       audio_sampler=audio_sampler, seed=a.seed,
                       max_steps=int(a.max_seconds * FRAME_RATE) + model.delay_steps + 8,
                       on_audio=player.write if writer is None else writer.write,
                       on_word=ui.on_word, on_entry=ui.on_entry, keep_audio=False)
        ui.set_end(result.end_step)
        if player is not None:
            player.close()  # the display keeps following playback while the buffer drains
            drained = True
    except KeyboardInterrupt:
        pass
    except Exception:
        if writer is not None and writer.samples == 0:  # an error before any audio: no file
            writer.close()
            a.output.unlink(missing_ok=True)
        raise
    finally:
        if writer is not None:
            writer.close()
        if player is not None and not drained:
            player.close(drain=False)
        ui.stop(done=result is not None)
    frames = writer.samples // FRAME_SIZE if player is None else player.frames
    seconds = frames / FRAME_RATE
    wall = time.perf_counter() - t0
    if result is None:
        what = (f"wrote {a.output} with {seconds:.2f} s of audio" if player is None else
                f"played {player.audio.stats.output_frames / FRAME_RATE:.2f} s of audio")
        print(f"interrupted: {what}", file=sys.stderr)
        return EXIT_INTERRUPTED
    note = "" if result.end_step is not None else " (cut by --max-seconds)"
    if player is None:
        print(f"wrote {a.output}: {seconds:.2f} s of audio in {wall:.1f} s{note}")
    else:
        st = player.audio.stats
        print(f"played {seconds:.2f} s of audio in {wall:.1f} s{note}: "
              f"{st.output_frames} frames, late {st.late_frames}, lost {st.lost_frames}")
    return 0
