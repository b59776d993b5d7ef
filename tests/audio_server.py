"""A private PulseAudio server used as a real sound card by the live-loop tests.

Two null sinks at 24 kHz mono: `moshi_mic` (tests play wavs into it with `paplay`; its monitor is the
server's default source, i.e. the microphone the app records) and `moshi_spk` (the default sink the app
plays into; tests record its monitor with `parec`). PortAudio reaches it through ALSA's `pulse` plugin
(`~/.asoundrc` in a private HOME, plus PULSE_SERVER). Everything lives in a tmp dir; the server runs as
the current user with `--exit-idle-time=-1` and is terminated at the end of the session.

Echo path (`add_echo_path`, or the `echo_path` fixture of `tests/conftest.py`): a
`module-loopback` from the speaker's monitor into the microphone sink, so the app hears what it
plays, as through a laptop's own speakers; `record(path, sink=MIC)` records the raw microphone
(echo included) beside a session.

Tests use the `pulse_server` fixture of `tests/conftest.py`, built on `start`; it skips the test
cleanly when pulseaudio is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIC, SPK = "moshi_mic", "moshi_spk"
RATE = 24000
ASOUNDRC = "pcm.!default {\n  type pulse\n}\nctl.!default {\n  type pulse\n}\n"


@dataclass
class PulseServer:
    root: Path
    env: dict[str, str]  # environment for clients (subprocesses) of this server
    proc: subprocess.Popen

    def pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env=self.env, check=True, capture_output=True,
                              text=True, timeout=10).stdout

    def play(self, wav: str | Path, after_s: float = 0.0, sink: str = MIC) -> subprocess.Popen:
        """Play a wav into the virtual microphone (or `sink`), starting `after_s` seconds from now
        (non-blocking; the returned process ends when the file has played)."""
        cmd = ["paplay", "-d", sink, str(wav)]
        if after_s > 0:
            cmd = ["sh", "-c", f'sleep {after_s:.3f} && exec "$@"', "play", *cmd]
        return subprocess.Popen(cmd, env=self.env)

    def record(self, raw_path: str | Path, sink: str = SPK) -> subprocess.Popen:
        """Record the virtual speaker's monitor (or `sink`'s: MIC gives the raw microphone, echo
        included) as float32 24 kHz mono raw (stop with terminate())."""
        f = open(raw_path, "wb")  # noqa: SIM115 - closed when the child has it
        p = subprocess.Popen(["parec", "-d", f"{sink}.monitor", f"--rate={RATE}", "--channels=1",
                              "--format=float32le", "--latency-msec=20"], env=self.env, stdout=f)
        f.close()
        return p

    def add_echo_path(self, latency_msec: int = 60) -> int:
        """Loop the speaker back into the microphone, as laptop speakers are heard by the laptop's
        microphone: `module-loopback` from the speaker sink's monitor into the microphone sink, at
        full volume (the echo is as loud as what is played). Returns the module index for
        `remove_echo_path`."""
        idx = int(self.pactl("load-module", "module-loopback", f"source={SPK}.monitor",
                             f"sink={MIC}", f"latency_msec={latency_msec}", "adjust_time=0",
                             "source_dont_move=true", "sink_dont_move=true").strip())
        for line in self.pactl("list", "short", "sink-inputs").splitlines():
            fields = line.split()  # index, sink, client, driver, sample spec
            if len(fields) > 3 and fields[3] == "module-loopback.c":
                self.pactl("set-sink-input-volume", fields[0], "100%")
        self.pactl("set-sink-volume", MIC, "100%")
        return idx

    def remove_echo_path(self, idx: int) -> None:
        self.pactl("unload-module", str(idx))

    @staticmethod
    def read_raw(raw_path: str | Path) -> np.ndarray:
        return np.fromfile(raw_path, dtype="<f4")

    @staticmethod
    def record_more(raw_path: str | Path, seconds: float = 0.5, timeout: float = 20.0) -> None:
        """Wait until a running `record` has written `seconds` more audio: what was played
        before this call has then crossed the monitor's latency into the file (the recorder
        keeps writing silence after it)."""
        path = Path(raw_path)
        target = path.stat().st_size + int(seconds * RATE) * 4
        deadline = time.monotonic() + timeout
        while path.stat().st_size < target and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def available() -> str | None:
    """None if a PulseAudio server can be started here, else the reason it cannot."""
    for tool in ("pulseaudio", "pactl", "paplay", "parec"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install pulseaudio pulseaudio-utils)"
    if not Path("/usr/lib/x86_64-linux-gnu/alsa-lib/libasound_module_pcm_pulse.so").exists() and \
            not list(Path("/usr/lib").glob("*/alsa-lib/libasound_module_pcm_pulse.so")):
        return "ALSA pulse plugin not installed (apt-get install libasound2-plugins)"
    return None


def start(root: Path) -> PulseServer:
    root.mkdir(parents=True, exist_ok=True)
    home, run = root / "home", root / "run"
    for d in (home, run, root / "xdg"):
        d.mkdir(exist_ok=True)
    (home / ".asoundrc").write_text(ASOUNDRC)
    sock = run / "native"
    env = dict(os.environ, HOME=str(home), PULSE_RUNTIME_PATH=str(run),
               XDG_RUNTIME_DIR=str(root / "xdg"), PULSE_SERVER=f"unix:{sock}")
    env.pop("PULSE_SINK", None)
    env.pop("PULSE_SOURCE", None)
    cmd = ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no",
           "--disable-shm=yes", "--log-target=stderr", "--log-level=error",
           f"--load=module-native-protocol-unix socket={sock} auth-anonymous=1",
           f"--load=module-null-sink sink_name={MIC} rate={RATE} channels=1",
           f"--load=module-null-sink sink_name={SPK} rate={RATE} channels=1"]
    log = open(root / "pulseaudio.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = PulseServer(root, env, proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            server.pactl("info")
            break
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError("pulseaudio did not start: "
                                   + (root / "pulseaudio.log").read_text()[-2000:]) from None
            time.sleep(0.1)
    server.pactl("set-default-source", f"{MIC}.monitor")
    server.pactl("set-default-sink", SPK)
    return server
