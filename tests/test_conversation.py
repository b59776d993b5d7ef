"""conversation.py: the per-frame pipeline with the real tiny Mimi and tokenizer.

A scripted generator stands in for `LmGen` here so that the pipeline's own logic is checked exactly
(what is encoded, what is decoded, which events come out); the end-to-end runs with the real engine
are in test_cli.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from moshi_mlx.codec import load_mimi
from moshi_mlx.conversation import (
    AudioFrame,
    Conversation,
    FrameTiming,
    TextPiece,
    choose_schedule,
    frames_of,
)
from moshi_mlx.tokenizer import TextTokenizer


@dataclass(frozen=True)
class Out:
    text: np.ndarray
    audio: np.ndarray | None


class ScriptedGen:
    """Emits Moshi audio = the user's codes of the previous step (an echo), text from a script."""

    def __init__(self, tokens):
        self.tokens = tokens
        self.seen: list[np.ndarray] = []

    def reset(self):
        self.seen = []

    def step(self, codes):
        codes = np.asarray(codes)
        assert codes.shape == (1, 8) and codes.dtype == np.int32
        self.seen.append(codes)
        s = len(self.seen) - 1
        audio = None if s == 0 else self.seen[s - 1]
        return Out(np.array([self.tokens[s % len(self.tokens)]]), audio)


@pytest.fixture(scope="module")
def parts(tiny_repo):
    mimi = load_mimi(tiny_repo, num_codebooks=8)
    tok = TextTokenizer(tiny_repo / "tokenizer_spm_32k_3.model")
    return mimi, tok


def test_frames_of_pads_to_whole_frames_plus_silence():
    pcm = np.arange(1920 * 2 + 5, dtype=np.float32)
    frames = list(frames_of(pcm, pad_s=0.16))
    assert len(frames) == 3 + 2
    np.testing.assert_array_equal(np.concatenate(frames)[: len(pcm)], pcm)
    assert not np.concatenate(frames)[len(pcm):].any()


def test_pipeline_encodes_steps_and_decodes_in_order(parts):
    mimi, tok = parts
    hello = tok.encode("Hello")
    script = [3, 0] + hello + [3]
    gen = ScriptedGen(script)
    conv = Conversation(gen, mimi, tok)
    rng = np.random.default_rng(0)
    user = (0.1 * rng.standard_normal(1920 * 6)).astype(np.float32)
    events = [ev for f in frames_of(user) for ev in conv.step(f)]

    # The user's codes are exactly Mimi's streaming encoding of the input.
    expect_codes = mimi.encode(user.reshape(1, 1, -1))
    np.testing.assert_array_equal(np.concatenate(gen.seen, 0).T, expect_codes[0])
    audio = [e for e in events if isinstance(e, AudioFrame)]
    assert [a.frame for a in audio] == list(range(6))
    assert [a.generated for a in audio] == [False] + [True] * 5
    assert not audio[0].pcm.any()
    # Moshi's frames 1..5 are the decode of the echoed codes 0..4, streamed.
    got = np.concatenate([a.pcm for a in audio[1:]])
    want = mimi.decode(expect_codes[:, :, :5]).reshape(-1)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.sqrt(np.mean(got**2)) > 0.01  # the tiny Mimi is audible

    pieces = [e for e in events if isinstance(e, TextPiece)]
    assert "".join(p.text for p in pieces).strip() == "Hello"
    assert [p.frame for p in pieces] == [2 + i for i in range(len(hello))][: len(pieces)]
    assert pieces[0].time_s == pytest.approx(0.16)
    timing = [e for e in events if isinstance(e, FrameTiming)]
    assert len(timing) == 6 and all(t.total_ms > 0 for t in timing)


def test_reset_and_warmup_start_over(parts):
    mimi, tok = parts
    gen = ScriptedGen([3])
    conv = Conversation(gen, mimi, tok)
    f = (0.05 * np.random.default_rng(1).standard_normal(1920)).astype(np.float32)
    first = [e for e in conv.step(f) if isinstance(e, AudioFrame)]
    times = conv.warmup(3)
    assert len(times) == 3 and all(t.total_ms > 0 for t in times)
    assert conv.frame == 0 and gen.seen == []
    again = conv.step(f)
    np.testing.assert_array_equal(np.asarray(gen.seen[0]),
                                  mimi.encode(f.reshape(1, 1, -1))[:, :, 0])
    assert [e.frame for e in again if isinstance(e, AudioFrame)] == [a.frame for a in first]


def test_wrong_frame_size_is_an_error(parts):
    mimi, tok = parts
    conv = Conversation(ScriptedGen([3]), mimi, tok)
    with pytest.raises(ValueError, match="1920 samples"):
        conv.step(np.zeros(100, np.float32))


def run_schedule(parts, schedule, user, script=(3, 0, 5, 7, 3)):
    mimi, tok = parts
    gen = ScriptedGen(list(script))
    conv = Conversation(gen, mimi, tok, schedule=schedule)
    per_call = [conv.step(f) for f in frames_of(user)]
    tail = conv.flush()
    return per_call, tail


def test_pipelined_gives_the_serial_output_one_call_later(parts):
    """Same text at the same frames, same audio by frame index; pipelined returns frame f-1's audio
    from the call for frame f, and `flush()` returns the last one."""
    user = (0.1 * np.random.default_rng(2).standard_normal(1920 * 7)).astype(np.float32)
    serial, s_tail = run_schedule(parts, "serial", user)
    piped, p_tail = run_schedule(parts, "pipelined", user)
    assert s_tail == []
    s_audio = [e for evs in serial for e in evs if isinstance(e, AudioFrame)]
    p_audio = [e for evs in piped for e in evs if isinstance(e, AudioFrame)] + p_tail
    assert [a.frame for a in s_audio] == [a.frame for a in p_audio] == list(range(7))
    for a, b in zip(s_audio, p_audio, strict=True):
        assert a.generated == b.generated
        np.testing.assert_array_equal(a.pcm, b.pcm)
    for f, evs in enumerate(piped):
        assert [e.frame for e in evs if isinstance(e, AudioFrame)] == ([] if f == 0 else [f - 1])
    s_text = [(e.frame, e.text) for evs in serial for e in evs if isinstance(e, TextPiece)]
    p_text = [(e.frame, e.text) for evs in piped for e in evs if isinstance(e, TextPiece)]
    assert s_text == p_text and s_text
    for f, evs in enumerate(serial):  # serial: the call for frame f returns frame f's audio
        assert [e.frame for e in evs if isinstance(e, AudioFrame)] == [f]


class OrderedGen(ScriptedGen):
    """Logs when a step is issued and when its outputs are read (converted to numpy)."""

    def __init__(self, log):
        super().__init__([3])
        self.log = log

    def step(self, codes):
        out = super().step(codes)
        s = len(self.seen) - 1
        self.log.append(("issue", s))
        log = self.log

        class Lazy:
            def __array__(self, dtype=None, copy=None):
                log.append(("collect", s))
                return out.text

        return Out(Lazy(), out.audio)


class LoggingCodec:
    def __init__(self, mimi, log):
        self.mimi, self.log = mimi, log
        self.backend, self.frame_size = mimi.backend, mimi.frame_size

    def init_state(self, batch_size=1):
        return self.mimi.init_state(batch_size)

    def encode_step(self, frame, state):
        self.log.append(("encode", None))
        return self.mimi.encode_step(frame, state)

    def decode_step(self, codes, state):
        self.log.append(("decode", None))
        return self.mimi.decode_step(codes, state)


@pytest.mark.parametrize("schedule", ["serial", "pipelined"])
def test_schedules_order_the_work(parts, schedule):
    """serial: encode f, LM f, decode f. pipelined: encode f, issue LM f, decode f-1 while it
    runs, then wait for LM f."""
    mimi, tok = parts
    log = []
    conv = Conversation(OrderedGen(log), LoggingCodec(mimi, log), tok, schedule=schedule)
    for f in frames_of(np.zeros(1920 * 3, np.float32)):
        conv.step(f)
        log.append(("end", None))
    if schedule == "serial":  # step 0 has no audio yet (acoustic delay): nothing to decode
        want = [("encode", None), ("issue", 0), ("collect", 0), ("end", None)]
        for s in (1, 2):
            want += [("encode", None), ("issue", s), ("collect", s), ("decode", None),
                     ("end", None)]
    else:
        want = [("encode", None), ("issue", 0), ("collect", 0), ("end", None),
                ("encode", None), ("issue", 1), ("collect", 1), ("end", None),  # step 0: silence
                ("encode", None), ("issue", 2), ("decode", None), ("collect", 2), ("end", None)]
    assert log == want


def test_choose_schedule_from_stage_times():
    def t(e, lm, d):
        return FrameTiming(0, e, lm, d, e + lm + d)

    fast = choose_schedule([t(5, 30, 10)] * 3)
    assert fast.schedule == "serial" and "45 ms" in fast.reason
    slow = choose_schedule([t(8, 60, 15), t(8, 62, 15), t(8, 61, 15)])
    assert slow.schedule == "pipelined" and "84 ms" in slow.reason and "69 ms" in slow.reason
    assert choose_schedule([]).schedule == "serial"


def test_schedule_is_checked_and_fixed_during_a_conversation(parts):
    mimi, tok = parts
    with pytest.raises(ValueError, match="unknown schedule"):
        Conversation(ScriptedGen([3]), mimi, tok, schedule="parallel")
    conv = Conversation(ScriptedGen([3]), mimi, tok)
    conv.step(np.zeros(1920, np.float32))
    with pytest.raises(ValueError, match="between conversations"):
        conv.schedule = "pipelined"
    conv.reset()
    conv.schedule = "pipelined"
    assert conv.schedule == "pipelined"
