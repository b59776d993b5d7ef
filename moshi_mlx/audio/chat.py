"""The live chat session: sound card <-> Conversation, with the UI drawn on its own thread.

Threads:
- PortAudio's callback threads (inside `LiveAudio`): move 80 ms blocks through queues only.
- the main thread runs the model: loads it, runs warm-up frames (which also pick the frame
  schedule, see moshi_mlx/conversation.py), opens the sound card, then loops
  `read_frame -> Conversation.step -> write_frame`, feeding the session recorder and posting events.
  The main thread (not a worker) because MLX 0.32 aborts the process at exit ("terminate called
  without an active exception") in about 1 run in 7 once a non-main thread has evaluated arrays,
  and because Ctrl-C (SIGINT) is delivered there anyway.
- a UI thread draws Moshi's text and the status line from the event queue and the counters.

Echo cancellation (`--echo auto|on|off`, `moshi_mlx.audio.echo`): on the main thread, each
microphone frame goes through the canceller with what the output callback played since the previous
frame (`LiveAudio.take_played`), before Moshi hears it and before it is recorded (channel 0 of
`--record` is the microphone as Moshi heard it). `auto` (the default) is `on`, except that a missing
library only warns and runs without; `off` is for headphones.

Ending: `--duration` or Ctrl-C ends the loop after the current frame; the streams are closed, the UI
thread finishes, and the transcript and recording that were asked for are written.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..conversation import BUDGET_MS, AudioFrame, FrameTiming
from ..hub import ModelFiles
from ..ui.terminal import BaseUI, Status
from .echo import EchoCanceller, EchoCancellerUnavailable
from .live import LiveAudio, check_devices
from .pipeline import Settings, load_model
from .session import SessionRecorder, percentile

log = logging.getLogger(__name__)

ECHO_MODES = ("auto", "on", "off")
NO_ECHO_WARNING = ("without echo cancellation Moshi hears itself through laptop speakers: use "
                   "headphones")
NO_INPUT_TIMEOUT_S = 10.0
STATUS_EVERY_S = 0.25


@dataclass
class ChatOptions:
    input_device: str | int | None = None
    output_device: str | int | None = None
    duration: float | None = None
    transcript: Path | None = None
    record: Path | None = None
    warmup_frames: int = 4
    jitter_frames: int = 1
    echo: str = "auto"  # auto | on | off (see the module docstring)


class _Session:
    """What the model loop produces and the UI thread reads (counters, event queue)."""

    def __init__(self, files: ModelFiles, opts: ChatOptions) -> None:
        self.files = files
        self.events: queue.Queue[list[Any]] = queue.Queue()
        self.recorder = SessionRecorder(keep_audio=opts.record is not None)
        self.recent_ms: deque[float] = deque(maxlen=125)  # last 10 s of frame times
        self.slow_frames = 0
        self.audio: LiveAudio | None = None
        self.echo: EchoCanceller | None = None
        self.model: Any = None
        self.schedule = ""
        self.schedule_reason = ""
        self.buffer_ms: deque[float] = deque(maxlen=12 * 60 * 60)  # output buffer latency per frame
        self.t_start = 0.0  # the session clock starts with the first microphone frame

    def status(self) -> Status:
        recent = list(self.recent_ms)
        a = self.audio
        return Status(
            model=self.files.name, precision=self.files.precision,
            p50_ms=percentile(recent, 50), p95_ms=percentile(recent, 95),
            lag_frames=a.lag_frames if a else 0,
            in_level=a.input_level if a else 0.0, out_level=a.output_level if a else 0.0,
            elapsed_s=time.monotonic() - self.t_start if self.t_start else 0.0,
            late_frames=a.stats.late_frames if a else 0,
            lost_frames=a.stats.lost_frames if a else 0,
            schedule=self.schedule, buffer_ms=a.buffer_ms if a else 0.0,
            echo_db=self.echo.erle_db if self.echo else None,
        )


class _UiThread(threading.Thread):
    def __init__(self, ui: BaseUI, session: _Session) -> None:
        super().__init__(name="moshi-ui", daemon=True)
        self.ui, self.session = ui, session
        self.stop_flag = threading.Event()

    def run(self) -> None:
        try:
            with self.ui:
                last = 0.0
                while not self.stop_flag.is_set():
                    try:
                        self.ui.on_events(self.session.events.get(timeout=0.05))
                    except queue.Empty:
                        pass
                    if time.monotonic() - last >= STATUS_EVERY_S:
                        self.ui.set_status(self.session.status())
                        last = time.monotonic()
                while not self.session.events.empty():
                    self.ui.on_events(self.session.events.get_nowait())
                self.ui.set_status(self.session.status())
        except Exception as e:  # a display problem must not end the conversation
            log.warning("UI stopped: %s", e)


def _loop(session: _Session, conv: Any, audio: LiveAudio, duration: float | None) -> None:
    waited = 0.0
    while True:
        if duration and session.t_start and time.monotonic() - session.t_start >= duration:
            return
        frame = audio.read_frame(timeout=0.2)
        if frame is None:
            waited += 0.2
            if waited >= NO_INPUT_TIMEOUT_S:
                raise RuntimeError(f"the input device delivered no audio for {waited:.0f} s")
            continue
        waited = 0.0
        if not session.t_start:
            session.t_start = time.monotonic()
        if session.echo is not None:
            frame = _cancel_echo(session.echo, audio, frame)
        events = conv.step(frame)
        for ev in events:
            if isinstance(ev, AudioFrame):
                audio.write_frame(ev.pcm)
            elif isinstance(ev, FrameTiming):
                session.recent_ms.append(ev.total_ms)
                session.slow_frames += ev.total_ms > BUDGET_MS
        session.buffer_ms.append(audio.buffer_ms)
        session.recorder.add_user(frame)
        session.recorder.add(events)
        session.events.put(events)


def _cancel_echo(ec: EchoCanceller, audio: LiveAudio, frame: Any) -> Any:
    if ec.delay_source == "default":  # PortAudio's stream offset, known once both streams ran
        delay = audio.echo_delay_ms()
        if delay is not None:
            ec.set_stream_delay_ms(delay, source="portaudio")
    played = audio.take_played()
    dropped = audio.take_dropped_input()
    if dropped.size:  # input lost past the lag bound: keep the two streams aligned
        ec.process(dropped, played)
        played = played[:0]
    return ec.process(frame, played)


def make_echo_canceller(mode: str, ui: BaseUI) -> EchoCanceller | None:
    """The canceller for `--echo MODE`; None when off. `on` with the library missing raises
    `EchoCancellerUnavailable` (one line); `auto` warns and runs without."""
    if mode not in ECHO_MODES:
        raise ValueError(f"--echo must be one of {', '.join(ECHO_MODES)}, not {mode!r}")
    if mode == "off":
        ui.info("echo cancellation off (--echo off): use headphones")
        return None
    try:
        return EchoCanceller()
    except EchoCancellerUnavailable as e:
        if mode == "on":
            raise
        ui.warn(f"echo cancellation unavailable ({e.reason}; pip install pyaec): "
                + NO_ECHO_WARNING)
        return None


def run_chat(files: ModelFiles, settings: Settings, opts: ChatOptions, ui: BaseUI) -> dict[str, Any]:
    """Run one live session until `opts.duration`, Ctrl-C or an error; returns the stats."""
    echo = make_echo_canceller(opts.echo, ui)  # both before a long model load
    check_devices(opts.input_device, opts.output_device)
    ui.info(f"loading {files.name} {files.precision} from {files.source} ...")
    session = _Session(files, opts)
    session.echo = echo
    session.model = load_model(files, settings)
    # Warm-up compiles kernels before the first real frame and times the stages for the schedule.
    conv, choice, warm = session.model.start(opts.warmup_frames)
    session.schedule, session.schedule_reason = choice.schedule, choice.reason
    ui.info(f"schedule {choice.schedule} ({choice.reason})")
    per_frame = [t.serial_ms if choice.schedule == "serial" else
                 t.encode_ms + max(t.lm_ms, t.decode_ms) for t in warm[1:]]
    if per_frame and min(per_frame) > BUDGET_MS:
        ui.warn(f"this model takes about {min(per_frame):.0f} ms per 80 ms frame here: it cannot "
                "keep real time (expect gaps); try --quant q4, or `cli.py bench` to compare")
    audio = session.audio = LiveAudio(opts.input_device, opts.output_device,
                                      jitter_frames=opts.jitter_frames,
                                      keep_played=echo is not None)
    interrupted = False
    error: Exception | None = None
    ui_thread = _UiThread(ui, session)
    try:
        audio.start()
        ui.info("listening: speak now" + (f" ({opts.duration:g} s)" if opts.duration else
                                           " (Ctrl-C to stop)"))
        ui_thread.start()
        _loop(session, conv, audio, opts.duration)
        session.recorder.add(conv.flush())  # pipelined: the last step's audio, for the record
    except KeyboardInterrupt:
        interrupted = True
    except Exception as e:  # e.g. the microphone went away: save what was recorded, then report
        error = e
    finally:
        audio.stop()
        ui_thread.stop_flag.set()
        if ui_thread.is_alive():
            ui_thread.join(timeout=10)
    if error is not None and not session.recorder.frames:
        raise error
    stats = _save(session, settings, opts, interrupted, ui)
    if error is not None:
        raise error
    return stats


def _save(session: _Session, settings: Settings, opts: ChatOptions, interrupted: bool,
          ui: BaseUI) -> dict[str, Any]:
    a = session.audio
    rec = session.recorder
    stats = rec.stats(
        late_frames=a.stats.late_frames if a else 0, lost_frames=a.stats.lost_frames if a else 0,
        slow_frames=session.slow_frames,
        input_frames=a.stats.input_frames if a else 0,
        output_frames=a.stats.output_frames if a else 0,
        dropped_input=a.stats.dropped_input if a else 0,
        dropped_output=a.stats.dropped_output if a else 0,
        skipped_quiet=a.stats.skipped_quiet if a else 0,
        catchup_frames=a.stats.catchup_frames if a else 0,
        input_overflows=a.stats.input_overflows if a else 0,
        output_underflows=a.stats.output_underflows if a else 0,
        max_input_burst=a.stats.max_input_burst if a else 0,
        max_output_burst=a.stats.max_output_burst if a else 0,
        jitter_target_frames=a.jitter.target if a else 0,
        jitter_max_target_frames=a.jitter.stats.max_target if a else 0,
        output_buffer_ms_p50=round(percentile(list(session.buffer_ms), 50), 1),
        output_buffer_ms_p95=round(percentile(list(session.buffer_ms), 95), 1),
        output_buffer_ms_max=round(max(session.buffer_ms, default=0.0), 1),
        device_input_latency_ms=round(a.input_latency_ms, 1) if a else None,
        device_output_latency_ms=round(a.output_latency_ms, 1) if a else None,
        input_rate=a.input_rate if a else None, output_rate=a.output_rate if a else None,
        schedule=session.schedule, schedule_reason=session.schedule_reason,
        interrupted=interrupted,
        echo=opts.echo, **(session.echo.stats() if session.echo else {"echo_canceller": None}),
    )
    model_info = session.model.describe()
    sets = settings.to_dict() | {"input_device": opts.input_device,
                                 "output_device": opts.output_device, "duration": opts.duration,
                                 "echo": opts.echo}
    if opts.transcript:
        rec.write_transcript(opts.transcript, model=model_info, settings=sets,
                             seed=settings.seed, stats=stats)
        ui.info(f"transcript saved to {opts.transcript}")
    if opts.record:
        rec.write_recording(opts.record)
        ui.info(f"recording (user, Moshi) saved to {opts.record}")
    ui.info(f"{stats['frames']} frames ({stats['schedule']}), p50 {stats['frame_ms_p50']:.1f} ms, "
            f"p95 {stats['frame_ms_p95']:.1f} ms, output buffer p50 "
            f"{stats['output_buffer_ms_p50']:.0f} ms, late {stats['late_frames']}, "
            f"lost {stats['lost_frames']}"
            + (f", echo removed {stats['echo_erle_db_p50']:.0f} dB (median)"
               if stats.get("echo_erle_db_p50") is not None else ""))
    return stats

