"""LmGen on a tiny random model: timing convention, streams, seeds, batching, samplers, inputs."""

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.config import LmConfig
from moshi_mlx.engine import LmGen, aligned_codes, teacher_forced_logits
from moshi_mlx.models.lm import Lm
from moshi_mlx.sampling import GREEDY, Sampler
from tests.helpers import tiny_lm_kwargs

STEPS = 14  # > context (6): the rotating cache wraps


@pytest.fixture(scope="module")
def lm() -> Lm:
    mx.random.seed(0)
    model = Lm(LmConfig.from_dict(tiny_lm_kwargs()))
    mx.eval(model.parameters())
    return model


def user_codes(B: int = 1, T: int = STEPS, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 24, size=(B, T, 8)).astype(np.int32)


def run(gen: LmGen, user: np.ndarray) -> dict:
    texts, audios, tl, al = [], [], [], []
    for s in range(user.shape[1]):
        out = gen.step(user[:, s])
        texts.append(np.array(out.text))
        audios.append(None if out.audio is None else np.array(out.audio))
        if gen.keep_logits:
            tl.append(np.array(gen.last_text_logits))
            al.append(np.array(gen.last_audio_logits))
    return dict(text=np.stack(texts, 1), audio=audios, tl=tl, al=al)


# Moshi's delays rise with the codebook index (else the depformer's input at frame 0 is a token
# sampled for frame -1, in PT LMGen as here, while the forward uses the initial token).
ODD_DELAYS = [0, 0, 1, 1, 2, 2, 2, 2, 2, 0, 2, 1, 1, 0, 2, 2, 1]


@pytest.mark.parametrize("delays", [None, ODD_DELAYS])
def test_sampled_run_equals_teacher_forced_forward_past_context(lm, delays):
    """Step-by-step logits == lm.forward on the (sampled) sequence, beyond the context."""
    if delays is not None:  # a delay pattern with 2-step delays on both sides
        mx.random.seed(1)
        lm = Lm(LmConfig.from_dict(tiny_lm_kwargs(delays=delays)))
    user = user_codes()
    gen = LmGen(lm, Sampler(1.0), Sampler(1.0), seed=3, keep_logits=True)
    r = run(gen, user)
    D = gen.audio_delay
    assert all(a is None for a in r["audio"][:D]) and all(a is not None for a in r["audio"][D:])
    n = STEPS - D  # complete aligned frames
    # Teacher forcing reads aligned user frame f at step f+1: the frame passed at step f+1.
    codes = aligned_codes(mx.array(r["text"][:, :n]), mx.array(np.stack(r["audio"][D:], 1)),
                          mx.array(user[:, 1 : n + 1]))
    text_l, audio_l = (np.array(x) for x in teacher_forced_logits(lm, codes))
    tl, al = np.stack(r["tl"], 1), np.stack(r["al"], 1)
    np.testing.assert_allclose(text_l[:, 0], tl[:, :n], atol=1e-4, rtol=0)
    for k, d in enumerate(lm.cfg.delays[1:9]):
        np.testing.assert_allclose(audio_l[:, k, : n - d], al[:, d:n, k], atol=1e-4, rtol=0)
    assert len(np.unique(r["text"])) > 3  # sampling at temp 1 gives varied tokens


@pytest.mark.parametrize("f", [1, 5])
def test_user_frame_is_read_in_the_step_it_is_given(lm, f):
    """PT convention: the user frame passed at step f (f >= 1) changes the logits of step f
    already, and nothing before it."""
    user = user_codes()
    changed = user.copy()
    changed[:, f, 0] = (changed[:, f, 0] + 1) % 24  # the semantic (delay 0) codebook only
    a = run(LmGen(lm, GREEDY, GREEDY, keep_logits=True), user)
    b = run(LmGen(lm, GREEDY, GREEDY, keep_logits=True), changed)
    for s in range(f):
        np.testing.assert_array_equal(a["tl"][s], b["tl"][s])
        np.testing.assert_array_equal(a["al"][s], b["al"][s])
    assert np.abs(a["tl"][f] - b["tl"][f]).max() > 1e-4
    assert np.abs(a["al"][f] - b["al"][f]).max() > 1e-4


def test_first_user_frame_is_never_read(lm):
    """PT feeds initial tokens on every column s <= d_k: frame 0 changes nothing at all."""
    user = user_codes()
    changed = user.copy()
    changed[:, 0] = (changed[:, 0] + 1) % 24
    a = run(LmGen(lm, GREEDY, GREEDY, keep_logits=True), user)
    b = run(LmGen(lm, GREEDY, GREEDY, keep_logits=True), changed)
    np.testing.assert_array_equal(np.stack(a["tl"]), np.stack(b["tl"]))
    np.testing.assert_array_equal(np.stack(a["al"]), np.stack(b["al"]))


def test_new_alignment_is_the_old_one_a_frame_earlier(lm):
    """Kyutai's MLX convention (the user frame of step s read at s+1) fed frame s+1 at step s gives
    our tokens: checked through the teacher-forced forward, which reads aligned frame f at step f+1
    (exactly that older convention with aligned frame f = input frame f)."""
    user = user_codes()
    r = run(LmGen(lm, GREEDY, GREEDY, keep_logits=True), user)
    old_style = user[:, 1:]  # what the older convention needed to produce the same run
    n = STEPS - 1
    codes = aligned_codes(mx.array(r["text"][:, :n]), mx.array(np.stack(r["audio"][1:], 1)),
                          mx.array(old_style[:, :n]))
    text_l, _ = teacher_forced_logits(lm, codes)
    np.testing.assert_array_equal(np.array(text_l)[:, 0].argmax(-1), r["text"][:, :n])


def test_batch_rows_are_independent_streams(lm):
    user = user_codes(B=2, seed=1)
    both = run(LmGen(lm, GREEDY, GREEDY, batch_size=2), user)
    for i in range(2):
        one = run(LmGen(lm, GREEDY, GREEDY), user[i : i + 1])
        np.testing.assert_array_equal(both["text"][i], one["text"][0])
        for a, b in zip(both["audio"][1:], one["audio"][1:], strict=True):
            np.testing.assert_array_equal(a[i], b[0])


def test_one_model_serves_interleaved_generators(lm):
    u1, u2 = user_codes(seed=2), user_codes(seed=3)
    g1, g2 = LmGen(lm, seed=5), LmGen(lm, seed=6)
    t1, t2 = [], []
    for s in range(STEPS):
        t1.append(np.array(g1.step(u1[:, s]).text))
        t2.append(np.array(g2.step(u2[:, s]).text))
    np.testing.assert_array_equal(np.stack(t1, 1), run(LmGen(lm, seed=5), u1)["text"])
    np.testing.assert_array_equal(np.stack(t2, 1), run(LmGen(lm, seed=6), u2)["text"])


def test_seed_reproduces_and_reset_restarts(lm):
    user = user_codes()
    gen = LmGen(lm, seed=11)
    gen.warmup()
    assert gen.step_count == 0
    first = run(gen, user)
    assert gen.step_count == STEPS
    gen.reset()
    assert gen.step_count == 0
    again = run(gen, user)
    other = run(LmGen(lm, seed=12), user)
    np.testing.assert_array_equal(first["text"], again["text"])
    np.testing.assert_array_equal(np.stack(first["audio"][1:]), np.stack(again["audio"][1:]))
    assert (np.stack(first["audio"][1:]) != np.stack(other["audio"][1:])).any()
    assert isinstance(LmGen(lm).seed, int)  # a drawn seed is recorded for transcripts


def test_samplers_are_wired_to_their_streams(lm):
    """Every text token is in the top-2 of its logits, every audio code in the top-3 of its own."""
    gen = LmGen(lm, Sampler(5.0, top_k=2), Sampler(5.0, top_k=3), seed=0, keep_logits=True)
    r = run(gen, user_codes())
    for s in range(STEPS):
        rank_t = (r["tl"][s] > np.take_along_axis(r["tl"][s], r["text"][:, s, None], -1)).sum(-1)
        assert (rank_t < 2).all()
    audio_in_step = []
    for s in range(STEPS):
        logits = r["al"][s]  # [B, dep_q, card]
        # Tokens sampled at step s in delayed layout: codebook 0 of frame s, others of frame s-1.
        if s + 1 < STEPS:
            nxt = r["audio"][s + 1][0]  # frame s: codebook 0 sampled at step s
            audio_in_step.append((logits[0, 0], nxt[0]))
        if r["audio"][s] is not None:
            cur = r["audio"][s][0]  # frame s-1: codebooks 1.. sampled at step s
            audio_in_step += [(logits[0, k], cur[k]) for k in range(1, 8)]
    ranks = [(lg > lg[tok]).sum() for lg, tok in audio_in_step]
    assert max(ranks) < 3 and max(ranks) > 0  # temp 5 explores beyond the argmax


def test_input_forms_and_errors(lm):
    user = user_codes(T=3)
    ref = run(LmGen(lm, GREEDY, GREEDY), user)["text"]
    gen = LmGen(lm, GREEDY, GREEDY)
    got = [np.array(gen.step(mx.array(user[:, 0, :, None])).text),  # [B, 8, 1] mx
           np.array(gen.step(user[:, 1].astype(np.uint32)).text),  # numpy uint32 (rustymimi)
           np.array(gen.step(np.concatenate([user[:, 2], user[:, 2]], 1)).text)]  # extra books
    np.testing.assert_array_equal(np.stack(got, 1), ref)
    for bad in (np.zeros((2, 8), np.int32), np.zeros((1, 7), np.int32), np.zeros(8, np.int32)):
        with pytest.raises(ValueError):
            gen.step(bad)
    with pytest.raises(ValueError):
        LmGen(lm, batch_size=0)


def test_compiled_depformer_equals_plain(lm):
    user = user_codes()
    a = run(LmGen(lm, seed=4, compile=True, keep_logits=True), user)
    b = run(LmGen(lm, seed=4, compile=False, keep_logits=True), user)
    np.testing.assert_array_equal(a["text"], b["text"])
    np.testing.assert_array_equal(np.stack(a["audio"][1:]), np.stack(b["audio"][1:]))
    np.testing.assert_allclose(np.stack(a["al"]), np.stack(b["al"]), atol=1e-5, rtol=0)


def test_text_only_model_without_depformer():
    """dep_q = 0 (STT-like): audio stays None; step logits == teacher-forced forward."""
    mx.random.seed(2)
    lm = Lm(LmConfig.from_dict(tiny_lm_kwargs(dep_q=0, n_q=8, delays=[0] + [1] * 8)))
    user = user_codes()
    r = run(LmGen(lm, Sampler(1.0), seed=0, keep_logits=True), user)
    assert all(a is None for a in r["audio"])
    n = STEPS - 1  # aligned user frame f = the frame passed at step f+1
    codes = aligned_codes(mx.array(r["text"][:, :n]), mx.zeros((1, n, 0), dtype=mx.int32),
                          mx.array(user[:, 1:]))
    text_l = np.array(teacher_forced_logits(lm, codes)[0])
    np.testing.assert_allclose(text_l[:, 0], np.stack(r["tl"], 1)[:, :n], atol=1e-4, rtol=0)


def test_step_inputs_follow_pt_lmgen_convention(lm):
    """The exact temporal input ids of the first steps (PT `LMGen._step`): initial tokens
    text_card / card while s <= d_k, then text of step s-1, Moshi's codes as sampled at step s-1
    (delayed layout), user stream k = the frame passed at step s-d_k."""
    cfg = lm.cfg
    assert list(cfg.delays) == [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
    T0, A0 = cfg.text_card, cfg.card
    gen = LmGen(lm, GREEDY, GREEDY, compile=False)
    seen = []
    embed = gen._embed
    gen._embed = lambda t: (seen.append(np.array(t)[0, :, 0]), embed(t))[1]
    user = np.arange(1, 33, dtype=np.int32).reshape(4, 8) % 24
    text, dep = [], []
    for s in range(4):
        out = gen.step(user[s][None])
        text.append(int(out.text[0]))
        dep.append(np.array(gen._dep_hist[-1][0]))
    np.testing.assert_array_equal(seen[0], [T0] + [A0] * 16)
    np.testing.assert_array_equal(seen[1], [text[0], dep[0][0]] + [A0] * 7 + [user[1][0]] + [A0] * 7)
    for s in (2, 3):
        want = [text[s - 1], *dep[s - 1], user[s][0], *user[s - 1][1:]]
        np.testing.assert_array_equal(seen[s], want)
