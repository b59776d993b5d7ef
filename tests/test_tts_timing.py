"""tts/timing.py: which word is heard at a given output frame, on constructed transcripts, and the
generation lag measured on a real `speak` run of the tiny model."""

from __future__ import annotations

import pytest

from moshi_mlx.sampling import Sampler
from moshi_mlx.tts.timing import Timeline, heard_position, lag_steps, word_at, words_spoken


def timeline(words, breaks=(), end=None) -> Timeline:
    """Words (text, step) and break steps fed in step order, as `speak` reports them."""
    t = Timeline()
    events = sorted([(s, w) for w, s in words] + [(b, None) for b in breaks])
    for step, word in events:
        if word is None:
            t.add_entry(step)
        else:
            t.add_entry(step)  # `speak` reports every entry, words included
            t.add_word(word, step)
    t.end_step = end
    return t


HELLO = [("Hello", 2), ("there,", 8), ("my", 15), ("friend.", 19)]


@pytest.mark.parametrize("position, word, spoken", [
    (-3.0, None, 0),  # nothing played yet
    (0, None, 0), (1.9, None, 0),  # the initial padding: silence before the first word
    (2, 0, 0), (7.99, 0, 0),
    (8, 1, 1), (14.5, 1, 1),
    (15, 2, 2), (18, 2, 2),
    (19, 3, 3), (25.9, 3, 3),  # the last word lasts until the end of the text
    (26, None, 4), (40, None, 4),  # the audio is over
])
def test_word_at_follows_word_starts_until_the_end(position, word, spoken):
    t = timeline(HELLO, end=26)
    assert word_at(t, position) == word
    assert words_spoken(t, position) == spoken


def test_a_break_silences_the_word_before_it():
    t = timeline([("One", 2), ("two.", 6), ("Three", 30)], breaks=[11], end=40)
    assert [word_at(t, p) for p in (5, 6, 10.9, 11, 20, 29.9, 30)] == [0, 1, 1, None, None, None, 2]
    assert [words_spoken(t, p) for p in (10.9, 11, 29.9, 30)] == [1, 2, 2, 2]


def test_a_break_before_the_first_word_and_back_to_back_breaks():
    t = timeline([("Late", 20), ("start.", 25)], breaks=[2, 9], end=31)
    assert [word_at(t, p) for p in (2, 9, 19, 20, 24, 25, 30, 31)] == [
        None, None, None, 0, 0, 1, 1, None]


def test_streamed_text_keeps_the_last_word_until_more_arrives():
    t = timeline(HELLO)  # end unknown: the text is still coming
    assert word_at(t, 500) == 3 and words_spoken(t, 500) == 3
    t.add_entry(600)
    t.add_word("again", 600)
    assert word_at(t, 500) == 3 and word_at(t, 600) == 4


def test_heard_position_subtracts_the_buffer_and_the_device_latency():
    # 30 frames written, 4 queued, the one just taken, and 160 ms (2 frames) in the device.
    assert heard_position(30, 4, 160.0) == 23.0
    assert heard_position(30, 4) == 25.0 and heard_position(1, 1) == -1.0
    t = timeline(HELLO, end=26)
    # The same frames generated: a deeper buffer means an earlier word is heard.
    assert [word_at(t, heard_position(21, q, 80.0)) for q in (0, 3, 5, 12, 18)] == [
        3, 2, 1, 0, None]


def test_speak_produces_a_words_audio_lag_steps_after_choosing_it(tiny_tts_repo):
    """In `speak`, the word started at step s is reported before output frame s - lag_steps
    exists and after frame s - lag_steps - 1 does: word i's audio leaves `speak` exactly
    lag_steps (delay 16 + acoustic delay 2 + 2 dropped frames) steps after the word entered."""
    from moshi_mlx.tts.speak import DROPPED_FRAMES, find_voice, load_tts, speak

    model = load_tts(tiny_tts_repo)
    lag = lag_steps(model.delay_steps, max(model.lm.cfg.delays), DROPPED_FRAMES)
    assert lag == 16 + 2 + 2
    frames_before: list[tuple[int, int]] = []
    made = [0]
    result = speak(model, "One two three four five six seven eight nine ten eleven twelve.",
                   find_voice(model, None), text_sampler=Sampler(0.0), audio_sampler=Sampler(0.0),
                   on_audio=lambda pcm: made.__setitem__(0, made[0] + 1),
                   on_word=lambda w, s: frames_before.append((s, made[0])))
    assert len(frames_before) == 12 and frames_before[-1][0] > lag + 10
    assert all(n == max(0, s - lag) for s, n in frames_before), frames_before
    assert made[0] == result.end_step  # frame k of the audio <-> step k: it ends at end_step
