"""audio/jitter.py (and LiveAudio's output path): bursts in and out, no voiced frame dropped.

A simulated clock drives the buffer period by period (80 ms); the device pulls blocks in bursts, or
the model pushes them in bursts after a stall. Blocks carry distinct constant values, so what was
played can be matched against what was pushed, block by block.
"""

from __future__ import annotations

import numpy as np
import pytest

from moshi_mlx.audio import live
from moshi_mlx.audio.jitter import CATCHUP_AFTER, WINDOW, JitterBuffer

BLOCK = 16  # samples per block: the policy does not depend on the size
PERIOD = 0.08


class Device:
    """Pops blocks from a buffer at simulated times; keeps what it played."""

    def __init__(self, jb: JitterBuffer):
        self.jb, self.t = jb, 0.0
        jb.clock = lambda: self.t
        self.played: list[float | None] = []

    def tick(self, pops: int) -> None:
        for i in range(pops):
            self.t += 0.001 if i else 0.0  # back to back within a burst
            out = np.empty(BLOCK, np.float32)
            self.played.append(float(out[0]) if self.jb.pop_into(out) else None)
        self.t += PERIOD - 0.001 * max(pops - 1, 0)


def voiced(i: int) -> np.ndarray:
    return np.full(BLOCK, 0.05 + 1e-3 * i, np.float32)


def test_bursty_device_loses_nothing_and_the_target_covers_its_bursts():
    jb = JitterBuffer(PERIOD, min_frames=1)
    dev = Device(jb)
    rng = np.random.default_rng(0)
    credit, k, pushed, late_at = 0, 1, [], []
    for p in range(400):
        credit += 1
        if credit >= k:  # the device pulls everything it is owed at once: bursts of 1..4
            before = jb.stats.underruns
            dev.tick(credit)
            credit, k = 0, int(rng.integers(1, 5))
            late_at += [p] * (jb.stats.underruns - before)
        else:
            dev.tick(0)
        jb.push(voiced(p))
        pushed.append(float(voiced(p)[0]))
    played = [v for v in dev.played if v is not None]
    assert played == pushed[: len(played)]  # every block, in order: nothing dropped
    assert len(played) >= len(pushed) - jb.depth - 1
    assert jb.stats.lost == 0 and jb.stats.skipped_quiet == 0
    assert jb.stats.max_pop_burst == 4 and jb.target >= 4
    assert jb.stats.underruns <= 4  # adaptation costs a few late frames at the start ...
    assert jb.stats.underruns == 0 or max(late_at, default=0) < 100  # ... and none afterwards
    assert jb.depth <= jb.target + 4


def test_model_burst_after_a_stall_is_absorbed_by_skipping_quiet_frames():
    jb = JitterBuffer(PERIOD, min_frames=1)
    dev = Device(jb)
    pushed_voiced, skipped_at, depth = [], [], []
    backlog = []
    for p in range(260):
        dev.tick(1)
        if 50 <= p < 55:  # the model stalls for 400 ms ...
            backlog.append(p)
            continue
        for q in [*backlog, p]:  # ... then catches up in a burst of 6
            block = voiced(q) if q % 8 else np.full(BLOCK, 1e-3, np.float32)  # quiet every 8th
            if q % 8:
                pushed_voiced.append(float(block[0]))
            before = jb.stats.skipped_quiet
            jb.push(block)
            skipped_at += [q] * (jb.stats.skipped_quiet - before)
        backlog = []
        depth.append(jb.depth)
    played = [v for v in dev.played if v is not None and v > 0.01]
    assert played == pushed_voiced[: len(played)]  # no voiced block dropped or reordered
    assert jb.stats.lost == 0 and jb.stats.catchup_frames == 0
    assert 1 <= jb.stats.underruns <= 2  # the stall itself: the device had nothing to play
    assert len(skipped_at) >= 3 and all(q % 8 == 0 for q in skipped_at)
    assert max(depth[55:70]) >= 5  # the burst raised the latency ...
    assert max(depth[-40:]) <= jb.target + 1  # ... and it came back to the target


def test_continuous_speech_catches_up_by_playing_faster():
    """LiveAudio's output path without a device: no quiet frame to skip, so frames are played up
    to 10% faster until the excess is gone; nothing is dropped."""
    a = live.LiveAudio(jitter_frames=1)
    jb = a.jitter
    dev = Device(jb)
    frame = live.FRAME_SIZE
    tone = lambda i: 0.3 * np.sin(2 * np.pi * 200 * (np.arange(frame) + i * frame) / 24000)  # noqa: E731
    written = 0
    depth = []
    for p in range(400):
        out = np.empty((frame, 1), np.float32)
        a._on_output(out, frame, None, None)
        dev.t += PERIOD
        n = 0 if 50 <= p < 55 else (6 if p == 55 else 1)
        for _ in range(n):
            a.write_frame(tone(written))
            written += 1
        depth.append(jb.depth)
    st = a.stats
    assert st.lost_frames == 0 and st.skipped_quiet == 0
    assert st.catchup_frames > 0 and st.late_frames >= 1
    assert max(depth[56:60]) >= 5
    assert max(depth[-40:]) <= jb.target + 1  # latency back at the target
    assert st.catchup_frames <= 120  # bounded: only while the excess lasted
    # It waited for evidence first: no catch-up before the excess had lasted CATCHUP_AFTER pushes.
    assert CATCHUP_AFTER > WINDOW and jb.stats.pushed > CATCHUP_AFTER


@pytest.mark.parametrize("min_frames", [1, 3])
def test_playback_waits_for_the_target_and_drains_without_late_frames(min_frames):
    jb = JitterBuffer(PERIOD, min_frames=min_frames)
    dev = Device(jb)
    for i in range(min_frames - 1):
        jb.push(voiced(i))
        dev.tick(1)
    assert dev.played == [None] * (min_frames - 1)  # below the target: silence, not late
    jb.push(voiced(min_frames - 1))
    dev.tick(min_frames)
    assert dev.played[-min_frames:] == [float(voiced(i)[0]) for i in range(min_frames)]
    dev.tick(3)  # session over: the device drains with nothing queued
    assert jb.stats.underruns == 0 and jb.pending_underruns == 1


def test_hard_cap_counts_lost_blocks():
    jb = JitterBuffer(PERIOD, min_frames=1, max_frames=10)
    for i in range(14):
        jb.push(voiced(i))
    assert jb.stats.lost == 4 and jb.depth == 10
    out = np.empty(BLOCK, np.float32)
    assert jb.pop_into(out) and out[0] == pytest.approx(voiced(4)[0])
