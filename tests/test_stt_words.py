"""Word timing and end-of-turn events on synthetic token sequences (hand-computed expectations)."""

from __future__ import annotations

import numpy as np
import pytest

from moshi_mlx.stt.words import VadEvent, VadTracker, Word, WordTimer

# A toy vocabulary: sentencepiece pieces, "▁" opening a word.
PIECES = {10: "\u2581hello", 11: "\u2581world", 12: "\u2581fo", 13: "o", 14: "\u2581a"}
WORDS = {"hello": 1, "world": 1, "foo": 2, "a": 1}


def decode(ids) -> str:
    return "".join(PIECES[i] for i in ids).replace("\u2581", " ").strip()


def count(word: str) -> int:
    return WORDS.get(word, 1 + len(word) // 4)


def run(tokens: list[int], offset_s: float = 0.0, end: int | None = None) -> list[Word]:
    timer = WordTimer(decode, count, offset_s=offset_s)
    out: list[Word] = []
    for step, tok in enumerate(tokens):
        out.extend(timer.push(step, tok))
    out.extend(timer.finish(len(tokens) if end is None else end))
    return out


def w(text: str, start_step: float, stop_step: float, offset: float = 0.0) -> Word:
    return Word(text, max(0.0, start_step / 12.5 - offset), max(0.0, stop_step / 12.5 - offset))


def test_words_between_epads():
    # 0 at steps 2, 6, 9: "hello" spans steps 3..6, "world" 7..9; text before the first 0 dropped
    toks = [11, 3, 0, 10, 3, 3, 0, 11, 3, 0, 3]
    assert run(toks) == [w("hello", 3, 6), w("world", 7, 9)]


def test_words_come_out_when_their_closing_epad_arrives():
    timer = WordTimer(decode, WORDS.__getitem__)
    got = [timer.push(s, t) for s, t in enumerate([0, 10, 3, 3, 0])]
    assert got[:4] == [[], [], [], []] and got[4] == [w("hello", 1, 4)]


def test_several_words_in_one_segment_share_it_by_token_count():
    # "hello foo a" between 0s at steps 0 and 9: hello 1 step, foo 2 steps, a the rest
    toks = [0, 10, 12, 13, 14, 3, 3, 3, 3, 0]
    assert run(toks) == [w("hello", 1, 2), w("foo", 2, 4), w("a", 4, 9)]


def test_last_word_ends_at_eos_or_one_second_or_the_end():
    assert run([0, 10, 3, 2, 3, 3]) == [w("hello", 1, 3)]  # EOS
    toks = [0, 10] + [3] * 30
    assert run(toks) == [w("hello", 1, 1 + 12)]  # int(12.5) steps after its start
    assert run([0, 10, 3, 3]) == [w("hello", 1, 4)]  # end of stream first


def test_times_subtract_the_offset_and_clamp_at_zero():
    toks = [0, 10, 3, 3, 3, 0, 11, 3, 3, 3, 3, 3, 3, 3, 0]
    got = run(toks, offset_s=0.2)
    assert got == [w("hello", 1, 5, 0.2), w("world", 6, 14, 0.2)]
    assert got[0].start == 0.0 and got[0].stop == pytest.approx(0.2)


def test_times_never_decrease_on_random_streams():
    rng = np.random.default_rng(0)
    for _ in range(50):
        toks = rng.choice([0, 3, 3, 3, 2, 10, 11, 12, 13, 14], size=60).tolist()
        words = run(toks, offset_s=float(rng.uniform(0, 1)))
        times = [t for x in words for t in (x.start, x.stop)]
        assert times == sorted(times)
        assert all(x.text for x in words)


def test_to_dict_rounds_to_milliseconds():
    assert Word("a", 0.1 + 0.2, 1 / 3).to_dict() == {"text": "a", "start": 0.3, "stop": 0.333}


def probs(p2: float) -> np.ndarray:
    p = np.full((4, 6), 0.1)
    p[2, 0] = p2
    return p


def test_vad_fires_once_per_turn_after_speech():
    vad = VadTracker(offset_s=0.16)
    # silence before any word: no event, however confident the head
    assert vad.push(0, probs(0.99), 3) is None
    assert vad.push(1, probs(0.2), 10) is None  # a word arms it
    ev = vad.push(4, probs(0.7), 3)
    assert ev == VadEvent(5 / 12.5 - 0.16, 0.7)
    assert vad.push(5, probs(0.9), 3) is None  # once per turn
    assert vad.push(6, probs(0.9), 11) is None  # a new word re-arms it for the next steps
    assert vad.push(7, probs(0.9), 3) == VadEvent(8 / 12.5 - 0.16, 0.9)


def test_vad_threshold_is_strict_and_models_without_head_2_never_fire():
    vad = VadTracker()
    vad.push(0, probs(0.0), 10)
    assert vad.push(1, probs(0.5), 3) is None
    assert vad.push(2, probs(0.51), 3) is not None
    two_heads = VadTracker()
    two_heads.push(0, np.zeros((2, 6)), 10)
    assert two_heads.push(1, np.ones((2, 6)), 3) is None
