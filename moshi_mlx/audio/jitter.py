"""The output jitter buffer between the model loop (push) and the sound card's callback (pop).

Sound cards do not consume one 80 ms block every 80 ms: PulseAudio, Bluetooth headsets and busy
machines call the output callback in bursts (several blocks back to back, then nothing), and the
microphone delivers in bursts too, so the model produces its frames in bursts as well. A buffer
that drops Moshi's frames to bound latency cuts its speech; this one never drops a voiced frame
except past a hard cap (seconds of backlog: counted as lost). Its policy, all on the model's side
except the per-block bookkeeping the callback must do:

- Target depth (`target`, in blocks): playback (re)starts once `target` blocks are queued. It
  starts at `min_frames` and grows by one after each underrun mid-session (the device consumed a
  burst larger than what was queued), up to `max_target`, and never below the largest consumption
  burst observed (`max_pop_burst`, blocks pulled back to back). After `DECAY_PUSHES` frames without
  an underrun it shrinks by one again (not below `min_frames` or that burst), so a bursty spell does
  not cost latency forever.
- Excess latency: the buffer's low point over the last `WINDOW` pushes (the depth found when a new
  frame arrives) is what the device never needed. While it stays above `target`, quiet frames
  (peak < -40 dBFS) arriving are skipped (`skipped_quiet`): Moshi's pauses absorb the extra
  latency. When the excess lasts `CATCHUP_AFTER` pushes with no quiet frame to skip, the caller
  plays frames `CATCHUP_SPEED` times faster (`catchup` is True; counted in `catchup_frames`) until
  the excess is gone: a slight pitch rise instead of a cut.
- `lost` counts only blocks dropped past `max_frames` queued: what could truly not be played.

`latency_ms` (queued blocks x block duration) is what the status line and the transcript report.
The class holds no device code and is driven block by block in tests.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

import numpy as np

QUIET_PEAK = 0.01  # -40 dBFS: a block this quiet can be skipped without an audible cut
WINDOW = 12  # pushes (~1 s) over which the buffer's low point is taken
CATCHUP_AFTER = 25  # pushes (~2 s) of excess with no quiet frame before speeding up
CATCHUP_SPEED = 1.1  # at most 10% faster: a pitch rise, never a cut
DECAY_PUSHES = 250  # ~20 s without an underrun: the target may shrink by one block
BURST_GAP = 0.25  # pops closer than this fraction of a block's duration belong to one burst


@dataclass
class JitterStats:
    pushed: int = 0
    played: int = 0
    underruns: int = 0  # the callback found the buffer empty while playing
    skipped_quiet: int = 0  # quiet blocks skipped to bring an excess latency down
    catchup_frames: int = 0  # frames played CATCHUP_SPEED times faster for the same reason
    lost: int = 0  # blocks dropped past max_frames (could not be played at all)
    max_pop_burst: int = 1  # largest number of blocks the device pulled back to back
    max_target: int = 0  # largest target depth reached


class JitterBuffer:
    """Blocks of one fixed size; `push` from the model thread, `pop_into` from the callback."""

    def __init__(self, block_s: float, min_frames: int = 1, max_target: int = 8,
                 max_frames: int = 25, clock=time.monotonic) -> None:
        if min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {min_frames}")
        self.block_s = float(block_s)
        self.min_frames = int(min_frames)
        self.max_target = max(int(max_target), self.min_frames)
        self.max_frames = max(int(max_frames), self.max_target + 1)
        self.clock = clock
        self.stats = JitterStats(max_target=self.min_frames)
        self.target = self.min_frames
        # (block, quiet) pairs; deque append/popleft are atomic, so both threads may use it.
        self._q: collections.deque[tuple[np.ndarray, bool]] = collections.deque()
        self._playing = False
        # Callback-side bookkeeping (ints and floats only).
        self._underruns_seen = 0
        self._last_pop = -1.0
        self._burst = 0
        # Model-side policy state.
        self._underruns_handled = 0
        self._lows: collections.deque[int] = collections.deque(maxlen=WINDOW)
        self._excess_pushes = 0
        self._since_underrun = 0
        self.catchup = False

    # --- callback side ---------------------------------------------------------------------------
    def pop_into(self, out: np.ndarray) -> bool:
        """Fill `out` with the next block (True) or silence (False). No allocation, no locks."""
        now = self.clock()
        close = self._last_pop >= 0 and now - self._last_pop < BURST_GAP * self.block_s
        self._burst = self._burst + 1 if close else 1
        self._last_pop = now
        # Bursts count while playing only: the device's priming pulls at start-up are not bursts
        # that the buffer has to feed.
        if self._playing and self._burst > self.stats.max_pop_burst:
            self.stats.max_pop_burst = self._burst
        if not self._playing and len(self._q) >= self.target:
            self._playing = True
        if self._playing and self._q:
            try:
                out[:] = self._q.popleft()[0]
                self.stats.played += 1
                return True
            except IndexError:  # the model thread trimmed it meanwhile
                pass
        out.fill(0)
        if self._playing:  # underrun: refill to the target before resuming
            self._underruns_seen += 1
            self._playing = False
        return False

    # --- model side ------------------------------------------------------------------------------
    def push(self, block: np.ndarray) -> bool:
        """Queue one block; returns False if it was skipped (quiet, while latency is in excess)."""
        block = np.asarray(block, np.float32)
        quiet = bool(np.abs(block).max(initial=0.0) < QUIET_PEAK)
        self.stats.pushed += 1
        self._adapt_target()
        depth = len(self._q)
        self._lows.append(depth)
        excess = self._playing and len(self._lows) == WINDOW and min(self._lows) > self.target
        self._excess_pushes = self._excess_pushes + 1 if excess else 0
        if excess and quiet:
            self.stats.skipped_quiet += 1
            self._lows.clear()  # judge the next skip on fresh evidence
            self._excess_pushes = 0
            self.catchup = False
            return False
        if excess and self._excess_pushes >= CATCHUP_AFTER:
            self.catchup = True
        elif not excess:
            self.catchup = False
        self._q.append((block, quiet))
        while len(self._q) > self.max_frames:  # hard cap: seconds behind, nothing else helps
            try:
                self._q.popleft()
                self.stats.lost += 1
            except IndexError:
                break
        return True

    def finish(self) -> None:
        """The stream ended: play what is queued even if it is less than the target depth (a
        stream that never reaches the target, or one that underran near its end, would otherwise
        keep its last blocks forever)."""
        self.target = 1

    def note_catchup(self, frames: int = 1) -> None:
        """The caller played `frames` frames faster because `catchup` was set."""
        self.stats.catchup_frames += frames

    def _adapt_target(self) -> None:
        new = self._underruns_seen - self._underruns_handled
        if new:
            self._underruns_handled += new
            self.stats.underruns += new
            self.target = min(self.max_target, self.target + new)
            self._since_underrun = 0
        else:
            self._since_underrun += 1
        floor = max(self.min_frames, min(self.stats.max_pop_burst, self.max_target))
        if self._since_underrun >= DECAY_PUSHES and self.target > floor:
            self.target -= 1
            self._since_underrun = 0
        self.target = max(self.target, floor)
        self.stats.max_target = max(self.stats.max_target, self.target)

    @property
    def depth(self) -> int:
        return len(self._q)

    @property
    def latency_ms(self) -> float:
        return len(self._q) * self.block_s * 1e3

    @property
    def pending_underruns(self) -> int:
        """Underruns the callback saw that the model side has not counted yet."""
        return self._underruns_seen - self._underruns_handled
