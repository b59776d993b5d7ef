"""TTS script preparation and text state machine against PyTorch moshi's (goldens from
tests/golden/make_golden_tts_machine.py), plus streaming text input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from moshi_mlx.tts.script import script_to_entries
from moshi_mlx.tts.state_machine import Entry, StateMachine, TokenIds, pack, unpack

DATA = json.loads((Path(__file__).parent / "golden" / "data" / "tts_machine.json").read_text())
CASES = sorted(DATA["cases"])


class DictTokenizer:
    """The words PyTorch tokenized; any other string (a different split or cleanup) fails."""

    def __init__(self, vocab: dict[str, list[int]]) -> None:
        self.vocab = vocab

    def encode(self, text: str) -> list[int]:
        return list(self.vocab[text])


def _setup(case: dict) -> tuple[StateMachine, list[Entry]]:
    ids = TokenIds(DATA["text_card"] + 1)
    entries = script_to_entries(
        DictTokenizer(DATA["vocab"]), ids, DATA["frame_rate"], case["script"],
        multi_speaker=case["multi_speaker"], padding_between=case["padding_between"],
    )
    machine = StateMachine(ids, second_stream_ahead=case["second_stream_ahead"],
                           max_padding=case["max_padding"], initial_padding=case["initial_padding"])
    return machine, entries


def _run(machine: StateMachine, state, proposals: list[int], feed=None) -> list[list[int]]:
    trace = []
    for step, proposal in enumerate(proposals):
        if feed is not None:
            feed(step, state)
        out, consumed = machine.process(step, state, proposal)
        trace.append([proposal, out, int(consumed), state.remaining_padding, state.forced_padding,
                      len(state.queued), len(state.lookahead_queued)])
    return trace


@pytest.mark.parametrize("name", CASES)
def test_entries_match_pytorch(name: str) -> None:
    case = DATA["cases"][name]
    _, entries = _setup(case)
    assert [[e.tokens, e.text, e.padding] for e in entries] == case["entries"]


@pytest.mark.parametrize("name", CASES)
def test_trace_matches_pytorch(name: str) -> None:
    case = DATA["cases"][name]
    machine, entries = _setup(case)
    state = machine.new_state(entries)
    trace = _run(machine, state, [row[0] for row in case["trace"]])
    assert trace == case["trace"]
    assert state.end_step == case["end_step"]
    assert state.consumption_times == case["consumption_times"]
    assert [list(t) for t in state.transcript] == case["transcript"]


def test_goldens_cover_the_features() -> None:
    """The goldens exercise breaks, speaker changes, the unknown id 0 and packed inputs."""
    cases = DATA["cases"].values()
    assert any(not e[0] and e[2] > 0 for c in cases for e in c["entries"])  # a break
    assert any(e[0][:1] == [2] for c in cases for e in c["entries"])  # the other speaker
    assert any(0 in e[0] for c in cases for e in c["entries"])  # unknown piece = new_word id
    card = DATA["text_card"] + 1
    assert any(row[1] >= card for c in cases for row in c["trace"])  # a packed second stream


@pytest.mark.parametrize("name", ["dialog_ahead", "breaks_single", "plain_ahead"])
def test_streamed_text_equals_whole_text(name: str) -> None:
    """Entries pushed one by one, each before the model can ask for it, give PyTorch's trace."""
    case = DATA["cases"][name]
    machine, entries = _setup(case)
    ahead = max(case["second_stream_ahead"], 1)
    state = machine.new_state(entries[:ahead], closed=False)
    pending = list(entries[ahead:])

    def feed(step: int, st) -> None:
        # Keep `ahead` entries queued so the lookahead stream sees what it would see in PyTorch.
        while pending and len(st.entries) < ahead + 1:
            st.push([pending.pop(0)])
        if not pending and not st.closed:
            st.close()

    trace = _run(machine, state, [row[0] for row in case["trace"]], feed)
    assert trace == case["trace"]
    assert state.end_step == case["end_step"]


def test_waiting_for_text_pads_and_does_not_end() -> None:
    ids = TokenIds(65)
    machine = StateMachine(ids, second_stream_ahead=0, max_padding=3, initial_padding=0)
    state = machine.new_state([], closed=False)
    outs = [machine.process(step, state, ids.new_word)[0] for step in range(10)]
    assert outs == [ids.pad] * 10 and state.end_step is None
    state.push([Entry(tokens=[7, 8], text="hi")])
    state.close()
    outs = [machine.process(10 + i, state, ids.new_word) for i in range(5)]
    # The word starts at once (padding already spent), its tokens follow, then the text ends.
    assert outs == [(ids.new_word, True), (7, False), (8, False), (ids.pad, False), (ids.pad, False)]
    assert state.transcript == [("hi", 10)] and state.end_step == 13
    with pytest.raises(ValueError, match="closed"):
        state.push([Entry(tokens=[1], text="x")])


def test_pack_unpack_round_trip() -> None:
    card = 8001
    for main in (0, 3, 7999, 8000):
        for second in (-1, 0, 5, 7999):
            assert unpack(pack(main, second, card), card) == (main, second)
    assert pack(5, -1, card) == 5  # nothing on the second stream: the plain id


def test_no_mlx_import() -> None:
    """The TTS text side is pure Python (usable without MLX)."""
    import subprocess

    code = ("import sys, moshi_mlx.tts.script, moshi_mlx.tts.state_machine; "
            "assert 'mlx.core' not in sys.modules and 'mlx' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
