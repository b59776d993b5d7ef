"""Delays: aligned <-> delayed layout, checked against an explicit per-element definition."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moshi_mlx.delays import (
    UNGENERATED,
    delay_codes,
    initial_tokens,
    input_frame,
    sampled_frame,
    undelay,
    undelay_mask,
    user_frame,
)

MOSHI_DELAYS = [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]


def test_delay_matches_definition():
    rng = np.random.default_rng(0)
    delays = [0, 2, 1, 3]
    codes = rng.integers(0, 100, size=(2, 4, 7))
    pads = [1000, 2000, 3000, 4000]
    out = np.array(delay_codes(codes, delays, pad=pads))
    for k, d in enumerate(delays):
        for t in range(7):
            want = codes[:, k, t - d] if t >= d else np.full(2, pads[k])
            np.testing.assert_array_equal(out[:, k, t], want)


def test_round_trip_moshi_delays():
    rng = np.random.default_rng(1)
    T = 9
    codes = rng.integers(0, 2048, size=(3, 17, T)).astype(np.int32)
    delayed = delay_codes(mx.array(codes), MOSHI_DELAYS, pad=initial_tokens(32000, 2048, 16))
    back = np.array(undelay(delayed, MOSHI_DELAYS, fill=UNGENERATED))
    mask = undelay_mask(MOSHI_DELAYS, T)
    np.testing.assert_array_equal(back[:, mask], codes[:, mask])
    assert (back[:, ~mask] == UNGENERATED).all()
    # Exactly the last step of each delayed stream is lost.
    assert (~mask).sum() == sum(1 for d in MOSHI_DELAYS if d)
    # Padded positions hold the initial tokens: text 32000 on time, audio 2048 where delayed.
    d = np.array(delayed)
    assert (d[:, 2:9, 0] == 2048).all() and (d[:, 0, 0] == codes[:, 0, 0]).all()


def test_undelay_logits_trailing_dims_and_nan_fill():
    x = mx.arange(2 * 3 * 4 * 5, dtype=mx.float32).reshape(2, 3, 4, 5)
    out = np.array(undelay(x, [0, 1, 2]))
    xn = np.array(x)
    np.testing.assert_array_equal(out[:, 0], xn[:, 0])
    np.testing.assert_array_equal(out[:, 1, :3], xn[:, 1, 1:])
    np.testing.assert_array_equal(out[:, 2, :2], xn[:, 2, 2:])
    assert np.isnan(out[:, 1, 3]).all() and np.isnan(out[:, 2, 2:]).all()


def test_delay_longer_than_sequence_and_bad_input():
    out = np.array(delay_codes(np.ones((1, 2, 2), np.int32), [0, 5], pad=7))
    np.testing.assert_array_equal(out[0, 1], [7, 7])
    with pytest.raises(ValueError):
        delay_codes(np.ones((1, 2, 2), np.int32), [0])
    with pytest.raises(ValueError):
        delay_codes(np.ones((1, 2, 2), np.int32), [0, -1])


def test_streaming_rules_match_whole_sequence_layout():
    """Column s of the model input (initial column + delayed codes) holds input_frame(s, d)."""
    T, delays = 6, [0, 1, 2]
    frames = np.arange(T)[None, None].repeat(3, 1)  # codes = their own frame index
    delayed = np.array(delay_codes(frames, delays, pad=-1))
    inputs = np.concatenate([np.full((1, 3, 1), -1), delayed], axis=2)
    for s in range(T + 1):
        for k, d in enumerate(delays):
            f = input_frame(s, d)
            assert inputs[0, k, s] == (f if f >= 0 else -1)
    # A token sampled at step s is the target of input column s + 1 of its delayed row.
    for s in range(T):
        for d in delays:
            assert input_frame(s + 1, d) == sampled_frame(s, d)


def test_user_frame_follows_pt_lmgen_cache():
    """PT `LMGen` writes the user frame passed at step t into column t + d and reads column s,
    with initial tokens on every column s <= d; `user_frame` is that rule."""
    T = 8
    for d in range(4):
        cache = {t + d: t for t in range(T)}
        for s in range(T):
            expect = -1 if s <= d else cache[s]
            assert user_frame(s, d) == expect


@settings(max_examples=40, deadline=None)
@given(
    delays=st.lists(st.integers(0, 4), min_size=1, max_size=6),
    T=st.integers(1, 9),
    B=st.integers(1, 2),
    seed=st.integers(0, 1000),
)
def test_round_trip_random_delays(delays, T, B, seed):
    codes = np.random.default_rng(seed).integers(0, 50, size=(B, len(delays), T)).astype(np.int32)
    back = np.array(undelay(delay_codes(codes, delays, pad=-7), delays, fill=UNGENERATED))
    mask = undelay_mask(delays, T)
    np.testing.assert_array_equal(back[:, mask], codes[:, mask])
    assert (back[:, ~mask] == UNGENERATED).all()
