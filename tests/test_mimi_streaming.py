"""Mimi streaming: equals the full pass for any chunking into whole frames, is causal, keeps
independent streams apart, and runs past the transformer context with flat state.

Uses the PyTorch-golden "small" model (context 6 positions = 3 frames, so windows roll over), run
eagerly here (`compiled=False`: no per-shape tracing for the many chunk sizes); the compiled path is
checked against PyTorch in test_mimi_golden.py and against this eager one below.
Codes must be identical; audio within 1e-5 (summation order inside BLAS may differ by chunk size).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import load_mimi_case

TOL = 1e-5


@pytest.fixture(scope="module")
def small():
    model, data, meta = load_mimi_case("small", compiled=False)
    return model, data


def test_compiled_equals_eager(small):
    eager, data = small
    compiled, _, _ = load_mimi_case("small", compiled=True)
    np.testing.assert_array_equal(np.array(compiled.encode(data["pcm"])),
                                  np.array(eager.encode(data["pcm"])))
    state_c, state_e = compiled.init_state(2), eager.init_state(2)
    for i in range(3):
        c = data["codes"][..., i:i + 1]
        a, b = compiled.decode_step(c, state_c), eager.decode_step(c, state_e)
        assert np.abs(np.array(a) - np.array(b)).max() <= TOL


def test_steps_move_to_another_stream(small):
    """The pipelined schedule decodes under `mx.stream(cpu)`: the compiled step is traced again
    on that stream (a trace keeps its stream) and continues the same decoder state exactly."""
    _, data = small
    model, _, _ = load_mimi_case("small", compiled=True)
    ref_state, state = model.init_state(2), model.init_state(2)
    other = mx.new_stream(mx.cpu)
    for i in range(4):
        c = data["codes"][..., i:i + 1]
        want = np.array(model.decode_step(c, ref_state))
        if i % 2:
            with mx.stream(other):
                got = np.array(model.decode_step(c, state))
        else:
            got = np.array(model.decode_step(c, state))
        np.testing.assert_array_equal(got, want)
    streams = {key[2] for key in model._compiled if key[0] == "dec"}
    assert streams == {str(mx.default_stream(mx.cpu)), str(other)}


def _encode_chunks(model, pcm, cuts, state=None):
    fs = model.frame_size
    state = state or model.init_state(pcm.shape[0])
    out, pos = [], 0
    for c in cuts:
        out.append(np.array(model.encode_step(pcm[..., pos * fs:(pos + c) * fs], state)))
        pos += c
    return np.concatenate(out, -1), state


def _decode_chunks(model, codes, cuts, state=None):
    state = state or model.init_state(codes.shape[0])
    out, pos = [], 0
    for c in cuts:
        out.append(np.array(model.decode_step(codes[..., pos:pos + c], state)))
        pos += c
    return np.concatenate(out, -1), state


@settings(max_examples=8, deadline=None)
@given(cuts=st.lists(st.integers(1, 5), min_size=1, max_size=6).filter(lambda c: sum(c) <= 16))
def test_streaming_equals_batch_any_chunking(small, cuts):
    model, data = small
    n = sum(cuts)
    pcm = data["pcm"][..., : n * model.frame_size]
    codes_full = np.array(model.encode(pcm))
    codes, _ = _encode_chunks(model, pcm, cuts)
    np.testing.assert_array_equal(codes, codes_full)
    audio_full = np.array(model.decode(codes_full))
    audio, _ = _decode_chunks(model, codes_full, cuts)
    assert np.abs(audio - audio_full).max() <= TOL


def test_later_input_never_changes_earlier_output(small):
    model, data = small
    pcm = data["pcm"][..., : 8 * model.frame_size]
    other = pcm.copy()
    other[..., 4 * model.frame_size:] = np.random.default_rng(0).standard_normal(
        other[..., 4 * model.frame_size:].shape).astype(np.float32)
    a, b = np.array(model.encode(pcm)), np.array(model.encode(other))
    np.testing.assert_array_equal(a[..., :4], b[..., :4])
    assert (a[..., 4:] != b[..., 4:]).any()
    codes2 = a.copy()
    codes2[..., 4:] = (codes2[..., 4:] + 7) % model.cfg.quantizer_bins
    ya, yb = np.array(model.decode(a)), np.array(model.decode(codes2))
    np.testing.assert_array_equal(ya[..., : 4 * model.frame_size], yb[..., : 4 * model.frame_size])
    assert np.abs(ya - yb).max() > 1e-3


def test_independent_states_and_batch_rows(small):
    model, data = small
    fs = model.frame_size
    pcm = data["pcm"][..., : 6 * fs]  # [2, 1, N]
    s_both = model.init_state(2)
    s0, s1 = model.init_state(1), model.init_state(1)
    both, c0, c1 = [], [], []
    for i in range(6):  # interleave two single streams with one batched stream
        frame = pcm[..., i * fs:(i + 1) * fs]
        c0.append(np.array(model.encode_step(frame[:1], s0)))
        both.append(np.array(model.encode_step(frame, s_both)))
        c1.append(np.array(model.encode_step(frame[1:], s1)))
    both = np.concatenate(both, -1)
    np.testing.assert_array_equal(np.concatenate(c0, -1), both[:1])
    np.testing.assert_array_equal(np.concatenate(c1, -1), both[1:])
    assert s0.frames_encoded == 6 and s_both.batch_size == 2
    with pytest.raises(ValueError, match="batch"):
        model.encode_step(pcm[..., :fs], s0)
    with pytest.raises(ValueError, match="multiple"):
        model.encode_step(pcm[..., : fs - 1], s_both)


def test_long_stream_past_context_keeps_flat_state_and_equals_batch(small):
    model, data = small
    fs = model.frame_size
    rng = np.random.default_rng(1)
    n = 40  # 80 transformer positions, context 6
    pcm = np.tile(data["pcm"][:1], (1, 1, 3))[..., : n * fs] + 0.01 * rng.standard_normal(
        (1, 1, n * fs)).astype(np.float32)
    state = model.init_state(1)
    sizes = {k.shape for k in state.enc["transformer"]["keys"]}
    codes, state = _encode_chunks(model, pcm, [1] * n, state)
    np.testing.assert_array_equal(codes, np.array(model.encode(pcm)))
    assert {k.shape for k in state.enc["transformer"]["keys"]} == sizes
    assert int(state.enc["transformer"]["offset"]) == 2 * n
    audio, state = _decode_chunks(model, codes, [1] * n)
    assert np.abs(audio - np.array(model.decode(codes))).max() <= TOL
    assert mx.array(audio).shape == (1, 1, n * fs)


def test_real_context_rolls_over_like_one_full_pass(monkeypatch):
    """Context 250 positions (the real value) on a tiny model: 130 one-frame steps (260 positions)
    through the window cache equal one full pass with the windowed causal mask."""
    import dataclasses

    from moshi_mlx.config import MimiConfig
    from moshi_mlx.models.mimi import mimi as mimi_mod
    from moshi_mlx.models.mimi.synthetic import random_model, speech_like_signal

    cfg = dataclasses.replace(
        MimiConfig(), n_filters=4, dimension=16, ratios=(4, 3, 2), transformer_num_heads=2,
        transformer_num_layers=2, transformer_dim_feedforward=32, transformer_context=250,
        quantizer_dimension=8, quantizer_n_q=3, quantizer_bins=32, frame_rate=24000 / 24 / 2,
    )
    model = random_model(cfg, seed=4)
    n = 130
    pcm = speech_like_signal(n * cfg.frame_size, cfg.sample_rate, seed=4)
    monkeypatch.setattr(mimi_mod, "CHUNK_FRAMES", 10_000)  # one pass: [260, 249 + 260] mask
    codes_full = np.array(model.encode(pcm))
    audio_full = np.array(model.decode(codes_full))
    codes, _ = _encode_chunks(model, pcm, [1] * n)
    np.testing.assert_array_equal(codes, codes_full)
    audio, _ = _decode_chunks(model, codes_full, [1] * n)
    assert np.abs(audio - audio_full).max() <= TOL
    assert len(np.unique(codes_full)) > 5  # codes vary, so the comparison means something
