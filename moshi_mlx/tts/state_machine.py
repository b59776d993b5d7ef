"""The TTS text state machine: which text token the LM reads at each 80 ms step (pure Python).

Reproduces `StateMachine.process` of PyTorch moshi's `moshi/models/tts.py`. In Kyutai's TTS the
text leads: at every step the LM's text head proposes a token, of which only two values matter,
`new_word` (0: "the next step starts a word") and `pad` (3); anything else counts as `pad`. The
machine then overrides the proposal:

- while tokens of the current word are still queued, or `forced_padding` > 0, it pads;
- once `remaining_padding` is spent (`max_padding` pads in a row after a word), it starts a word;
- starting a word pops the next `Entry`: its tokens are queued and fed one per padded step, its
  `padding` becomes `forced_padding`; an entry without tokens is a `<break>` and counts as a pad;
- asking for a word with no entry left marks the end of the text (`end_step`).

With a second text stream (`second_stream_ahead` > 0, as in tts-1.6b-en_fr) the `new_word`
marker moves to the second stream, which otherwise carries the tokens of the word
`second_stream_ahead` entries ahead; the two ids are packed into one, `(second + 1) * card + main`
with second = -1 for "nothing" (`pack` / `unpack`), and the LM demuxes them in its embedding.

Streaming text: PyTorch knows the whole script up front. Here entries can also be appended while
generating (`State.push`) with `State.closed` False until the text is complete; while the
machine waits for text it pads instead of ending. With `closed` True from the start the behaviour
is PyTorch's exactly, including one quirk kept for parity: a word token equal to `new_word` (id 0,
sentencepiece's unknown piece) fed on the main stream is treated like the word marker.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenIds:
    """Special text ids of the TTS models; `card` = text_card + 1 (the packing base)."""

    card: int
    new_word: int = 0
    pad: int = 3
    main: int = 1
    other: int = 2
    zero: int = -1
    ungenerated: int = -2


@dataclass
class Entry:
    """One word (its tokens, speaker token first at a turn start) or a break (no tokens).

    `padding`: steps during which the model may not start the next word (a break's length)."""

    tokens: list[int]
    text: str
    padding: int = 0


@dataclass
class State:
    """Per-stream state of the machine (one per batch item)."""

    entries: deque[Entry]
    remaining_padding: int
    forced_padding: int
    queued: deque[int] = field(default_factory=deque)
    lookahead_queued: deque[int] = field(default_factory=deque)
    end_step: int | None = None
    consumption_times: list[int] = field(default_factory=list)
    transcript: list[tuple[str, int]] = field(default_factory=list)
    # False while more text may arrive (streaming input); see the module docstring.
    closed: bool = True

    def push(self, entries: Iterable[Entry]) -> None:
        """Append entries (streaming text); refused once the text is closed."""
        if self.closed:
            raise ValueError("cannot add entries to a closed TTS state")
        self.entries.extend(entries)

    def close(self) -> None:
        """No more text: the next word request past the last entry ends the text."""
        self.closed = True

    def tokens_ahead(self, ahead: int) -> list[int]:
        """Tokens of the `ahead`-th next entry that has tokens (breaks are skipped), or []."""
        if ahead <= 0:
            raise ValueError(f"ahead must be > 0, got {ahead}")
        for entry in self.entries:
            if entry.tokens:
                ahead -= 1
                if ahead == 0:
                    return list(entry.tokens)
        return []


def pack(main: int, second: int, card: int) -> int:
    """Two text ids in one (second = -1: nothing on the second stream)."""
    return (second + 1) * card + main


def unpack(packed: int, card: int) -> tuple[int, int]:
    """Inverse of `pack`: (main, second)."""
    second, main = divmod(packed, card)
    return main, second - 1


@dataclass(frozen=True)
class StateMachine:
    """Decides the next text input from the LM's proposal; see the module docstring."""

    token_ids: TokenIds
    second_stream_ahead: int = 0
    max_padding: int = 6
    initial_padding: int = 2

    def new_state(self, entries: Sequence[Entry], closed: bool = True) -> State:
        return State(
            entries=deque(entries),
            remaining_padding=self.initial_padding,
            forced_padding=self.initial_padding,
            closed=closed,
        )

    def _decide(self, state: State, token: int) -> int:
        """The proposal after the machine's constraints: `new_word` or `pad`."""
        ids = self.token_ids
        if state.queued or state.forced_padding > 0:
            return ids.pad
        if state.remaining_padding <= 0:
            return ids.new_word
        return token if token in (ids.new_word, ids.pad) else ids.pad

    def _start_word(self, step: int, state: State) -> int:
        """Pop the next entry for a `new_word` decision; returns the resulting decision."""
        ids = self.token_ids
        if not state.entries:
            if not state.closed:
                return ids.pad  # text still coming: wait without ending
            if state.end_step is None:
                state.end_step = step
                # The second stream's marker tells the model the text is over.
                return ids.new_word if self.second_stream_ahead else ids.pad
            return ids.pad
        entry = state.entries.popleft()
        state.consumption_times.append(step)
        state.forced_padding = entry.padding
        if not entry.tokens:
            return ids.pad  # a break: no word, just its forced padding
        state.transcript.append((entry.text, step))
        state.queued.extend(entry.tokens)
        if self.second_stream_ahead:
            state.lookahead_queued.extend(state.tokens_ahead(self.second_stream_ahead))
        state.remaining_padding = self.max_padding
        return ids.new_word

    def process(self, step: int, state: State, token: int) -> tuple[int, bool]:
        """LM proposal `token` at `step` -> (next text input id, whether an entry was consumed).

        The input id is packed (see `pack`) when the model has a second text stream."""
        ids = self.token_ids
        decision = self._decide(state, token)
        consumed = False
        if decision == ids.new_word:
            n_before = len(state.consumption_times)
            decision = self._start_word(step, state)
            consumed = len(state.consumption_times) > n_before
        if decision == ids.pad:
            if state.remaining_padding > 0:
                state.remaining_padding -= 1
            if state.forced_padding > 0:
                state.forced_padding -= 1
            main = state.queued.popleft() if state.queued else ids.pad
        else:
            main = ids.new_word
        if not self.second_stream_ahead:
            return main, consumed
        second = -1
        if main == ids.new_word:
            # The word marker goes on the second stream; the main one starts the word at once.
            second = ids.new_word
            main = state.queued.popleft() if state.queued else ids.pad
        elif state.lookahead_queued:
            second = state.lookahead_queued.popleft()
        return pack(main, second, ids.card), consumed
