"""Timed words and end-of-turn events from the STT text stream (pure Python, no MLX).

The text stream of Kyutai's STT models puts PAD (3) on frames without a new word and EPAD (0)
right before each word's first token, so a 0 both closes the previous word and opens the next.
`WordTimer` follows the rules of Kyutai's PyTorch script (`stt_from_file_pytorch.py` of the
delayed-streams-modeling repo), in streaming form:

- a word's tokens are those (ids > PAD) between two 0s; its start is the step after the opening 0,
  its stop the step of the closing 0; tokens before the first 0 are dropped;
- a segment that decodes to several words (spoken too fast for a 0 between them) gives each
  word but the last as many steps as it has tokens, and the last word the rest;
- the last segment ends at an EOS token (id 2) or, at `finish`, one second after its start or
  at the last step, whichever is first;
- times are `step / frame_rate - offset_s`, floored at 0, where `offset_s` is the silence put
  before the audio plus the model's delay (`audio_delay_seconds`). PT's script uses the prefix
  rounded down to whole seconds; this uses the silence actually inserted (whole frames), which
  only differs when the prefix is not a multiple of 80 ms.

Kyutai's Rust server (`asr.rs`) times words differently: a word ends at the 0 that follows it,
stops at `(step + 1 - delay_frames) / 12.5`, and starts at the previous word's stop.

`VadTracker` turns the extra heads' probabilities into end-of-turn events the way Kyutai's
tools do: head 2 (trained to predict a pause of about 2 s) with its first class above 0.5, once
per turn (re-armed by the next word).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

EPAD, PAD, EOS = 0, 3, 2
FRAME_RATE = 12.5
VAD_HEAD, VAD_THRESHOLD = 2, 0.5


@dataclass(frozen=True)
class Word:
    """One transcribed word: `text`, `start` and `stop` in seconds of the input audio."""

    text: str
    start: float
    stop: float

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "start": round(self.start, 3), "stop": round(self.stop, 3)}


@dataclass(frozen=True)
class VadEvent:
    """End of turn detected at `time` (seconds of the input audio, when the model had heard up
    to there), with the head's probability `prob`."""

    time: float
    prob: float

    def to_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 3), "prob": round(self.prob, 4)}


@dataclass
class WordTimer:
    """Streaming word timing: `push(step, token)` -> words completed by this token; `finish(step)`
    -> the last word. `decode(ids) -> str` and `count(word) -> number of tokens` come from the
    text tokenizer."""

    decode: Callable[[Sequence[int]], str]
    count: Callable[[str], int]
    offset_s: float = 0.0
    frame_rate: float = FRAME_RATE
    _start: int | None = None  # step after the 0 that opened the current segment
    _tokens: list[int] = field(default_factory=list)
    _last_stop: float = 0.0

    def _time(self, step: int) -> float:
        return max(0.0, step / self.frame_rate - self.offset_s)

    def _segment(self, start: int, end: int) -> list[Word]:
        words = self.decode(self._tokens).split()
        out: list[Word] = []
        for i, w in enumerate(words):
            stop = end if i == len(words) - 1 else min(end, start + self.count(w))
            t0, t1 = self._time(start), self._time(stop)
            t0 = max(t0, self._last_stop) if out else t0
            out.append(Word(w, t0, max(t0, t1)))
            start = stop
        if out:
            self._last_stop = out[-1].stop
        return out

    def push(self, step: int, token: int) -> list[Word]:
        token = int(token)
        if token == EPAD:
            done = self._segment(self._start, step) if self._start is not None else []
            self._start, self._tokens = step + 1, []
            return done
        if self._start is None:
            return []
        if token == EOS:
            done = self._segment(self._start, step)
            self._start, self._tokens = None, []
            return done
        if token > PAD:
            self._tokens.append(token)
        return []

    def finish(self, step: int) -> list[Word]:
        """End of stream at `step` (the number of steps run): the pending word, if any."""
        if self._start is None:
            return []
        end = min(step, self._start + int(self.frame_rate))
        done = self._segment(self._start, max(end, self._start))
        self._start, self._tokens = None, []
        return done


@dataclass
class VadTracker:
    """`push(step, probs, token)` -> a VadEvent when head `head`'s first class crosses
    `threshold`, at most once between two words. `probs` is [n_heads, dim] for one stream."""

    offset_s: float = 0.0
    head: int = VAD_HEAD
    threshold: float = VAD_THRESHOLD
    frame_rate: float = FRAME_RATE
    _armed: bool = False

    def push(self, step: int, probs: Any, token: int) -> VadEvent | None:
        # As Kyutai's tools: the head is read before this step's text re-arms the tracker.
        ev = None
        if len(probs) > self.head:
            p = float(probs[self.head][0])
            if self._armed and p > self.threshold:
                self._armed = False
                ev = VadEvent(max(0.0, (step + 1) / self.frame_rate - self.offset_s), p)
        if int(token) > PAD:
            self._armed = True  # speech since the last event: a new turn can end
        return ev
