"""Script preparation for the TTS state machine: text turns -> word entries (pure Python).

Reproduces `script_to_entries` of PyTorch moshi's `moshi/models/tts.py`, for the same tokenizer:

- a script is a list of turns, alternating main speaker / other speaker (an empty first turn
  starts with the other speaker);
- `’` becomes `'`, `:` a space, parentheses are dropped; words are split on whitespace and each
  word is tokenized on its own (`tokenizer.encode(word)`);
- for multi-speaker models the first word of a turn gets the speaker token (`main` 1 or `other`
  2) in front, unless the previous turn had the same speaker;
- `<break time="1.5s"/>` inserts an entry without tokens whose padding is round(1.5 * frame_rate)
  steps (Python's round, half to even);
- `padding_between` > 0 forces `padding_between + len(tokens) - 1` pad steps after each word
  (Kyutai's `simple_generate` uses 1: a word is not cut by the next one).

The break time's decimal point is matched literally; PyTorch accepts any character there and then
fails on `float()`, so only malformed tags differ (they stay text here).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Protocol

from .state_machine import Entry, TokenIds

_EVENT = re.compile(r"<break\s+time=\"([0-9]+(?:\.[0-9]*)?)s\"\s*/?>|\s+")
_REPLACE = (("\u2019", "'"), (":", " "), ("(", ""), (")", ""))


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


def _clean(line: str) -> str:
    for old, new in _REPLACE:
        line = line.replace(old, new)
    return line


def script_to_entries(
    tokenizer: Tokenizer,
    token_ids: TokenIds,
    frame_rate: float,
    script: Sequence[str],
    multi_speaker: bool = True,
    padding_between: int = 0,
) -> list[Entry]:
    """Turns of text -> entries for `StateMachine`; see the module docstring."""
    reader = ScriptReader(tokenizer, token_ids, frame_rate, multi_speaker, padding_between)
    entries: list[Entry] = []
    for turn, line in enumerate(script):
        reader.start_turn(turn)
        entries.extend(reader.add(line))
    return entries


class ScriptReader:
    """`script_to_entries` one piece at a time (streamed text): `add` continues the current turn
    (pieces must break at whitespace), `start_turn(i)` begins turn i (speaker i % 2)."""

    def __init__(self, tokenizer: Tokenizer, token_ids: TokenIds, frame_rate: float,
                 multi_speaker: bool = True, padding_between: int = 0) -> None:
        self.tokenizer, self.frame_rate = tokenizer, frame_rate
        self.speakers = (token_ids.main, token_ids.other)
        self.multi_speaker, self.padding_between = multi_speaker, padding_between
        self.last_speaker: int | None = None
        self.speaker = 0
        self.first_word = True

    def start_turn(self, turn: int) -> None:
        self.speaker = turn % len(self.speakers)
        self.first_word = True

    def add(self, text: str) -> list[Entry]:
        entries = []
        for word, pause in _split(_clean(text)):
            if word is None:
                entries.append(Entry(tokens=[], text="", padding=int(round(pause * self.frame_rate))))
                continue
            tokens = list(self.tokenizer.encode(word))
            if self.first_word:
                if self.multi_speaker and self.last_speaker != self.speaker:
                    self.last_speaker = self.speaker
                    tokens.insert(0, self.speakers[self.speaker])
                self.first_word = False
            between = self.padding_between
            padding = max(0, between + len(tokens) - 1) if between > 0 else 0
            entries.append(Entry(tokens=tokens, text=word, padding=padding))
        return entries


def _split(line: str) -> Iterator[tuple[str | None, float]]:
    """Words (word, 0.0) and breaks (None, seconds) of one turn, in order."""
    while line:
        m = _EVENT.search(line)
        if m is None:
            break
        word, line = line[: m.start()], line[m.end():]
        if word:
            yield word, 0.0
        if m.group(1):
            yield None, float(m.group(1))
    if line:
        yield line, 0.0


def script_words(text: str) -> list[str]:
    """The words of a text as `ScriptReader.add` makes entries of them (breaks left out): what a
    display shows before the model reaches them."""
    return [word for word, _ in _split(_clean(text)) if word is not None]
