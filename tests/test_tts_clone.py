"""Voice cloning by audio prefix against PyTorch moshi's `TTSModel.generate(..., prefixes=...)`
(golden from tests/golden/make_golden_tts_clone.py): greedy proposals, fed ids, frames, end steps
and transcripts, step for step, on a small random LM in tts-0.75b-en-public's layout, without
CFG, with real CFG masking the prefix from the null half, and with real CFG that does not."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.sampling import GREEDY
from moshi_mlx.tts.generate import TtsGen, generate
from moshi_mlx.tts.prefix import PrefixPlan, encode_voice, prefix_from_codes
from tests.helpers import assert_tts_matches, tts_golden_lm, tts_machine

DATA = Path(__file__).parent / "golden" / "data"
RUNS = {"plain": (1.0, True), "cfg": (2.0, True), "cfg_with_prefix": (2.0, False)}


@pytest.fixture(scope="module")
def setup():
    gold = json.loads((DATA / "tts_clone.json").read_text())
    return tts_golden_lm("tts_clone_weights.safetensors", gold["lm"], gold), gold


def _gen(lm, gold, run: str) -> TtsGen:
    st = gold["settings"]
    coef, no_prefix = RUNS[run]
    machine, states = tts_machine(lm, st, gold[run]["entries"])
    prefixes = [np.array(p) for p in gold["prefixes"]]
    return TtsGen(lm, machine, states, None, st["delay_steps"], text_sampler=GREEDY,
                  audio_sampler=GREEDY, cfg_coef=coef, prefixes=prefixes,
                  cfg_is_no_prefix=no_prefix)


@pytest.mark.parametrize("run", list(RUNS))
def test_prefix_generation_matches_pytorch(setup, run):
    lm, gold = setup
    st, want = gold["settings"], gold[run]
    res = generate(_gen(lm, gold, run), final_padding=st["final_padding"],
                   max_steps=st["max_gen_length"])
    assert_tts_matches(res, want)


def test_golden_covers_prefix_and_guidance(setup):
    """The golden exercises what it should: the prefix audio is in the frames, the machine only
    starts after the prefix, and each CFG variant changes the audio."""
    _, gold = setup
    for b, prefix in enumerate(gold["prefixes"]):
        P = len(prefix[0])
        # Aligned frame f holds codebook k of step f + d_k: prefix frame j is frame delay_steps + j.
        frames = np.array(gold["plain"]["frames"])[b]  # [1 + n_q, T]
        start = gold["settings"]["delay_steps"]
        np.testing.assert_array_equal(frames[1:, start:start + P], np.array(prefix)[1:])
        assert gold["plain"]["consumption_times"][b][0] >= P
        fed = [f for _, f in gold["plain"]["text_tokens"][b][:P]]
        assert fed == [-1] * P
    # The text head is wider than the text input (text_card_out): some proposals are past it.
    sampled = [s for item in gold["plain"]["text_tokens"] for s, _ in item]
    assert gold["lm"]["text_card_out"] > gold["lm"]["text_card"] <= max(sampled)
    assert gold["cfg"]["frames"] != gold["plain"]["frames"]
    assert gold["cfg"]["frames"] != gold["cfg_with_prefix"]["frames"]


def test_prefix_plan_masks_the_null_half_until_prefix_plus_delay():
    codes = np.arange(6).reshape(2, 3)  # n_q 2, P 3
    plan = PrefixPlan([prefix_from_codes(codes)], audio_delays=[0, 2], n_q=2, delay_steps=4)
    assert [plan.text_at(0, t) for t in range(4)] == [-1, -1, -1, None]
    # Codebook 1 (delay 2) of frame 0 is forced at step delay_steps + 2 = 6.
    got = [np.array(plan.force_audio(t, mx.full((1, 2), 9, mx.int32))).tolist()[0]
           for t in range(4, 10)]
    assert got == [[0, 9], [1, 9], [2, 3], [9, 4], [9, 5], [9, 9]]
    null = mx.full((1, 3, 1), 7, mx.int32)
    masked = [np.array(plan.mask_null(t, null))[0, :, 0].tolist() for t in (0, 1, 7, 8, 9, 10)]
    # Stream k zeroed while d_k < t <= d_k + P + delay_steps (text and codebook 0: d 0, limit 7).
    assert masked == [[7, 7, 7], [-1, -1, 7], [-1, -1, -1], [7, 7, -1], [7, 7, -1], [7, 7, 7]]


def test_voice_prefix_drops_mimis_last_two_frames():
    class Codec:
        sample_rate = 24000

        def encode(self, pcm):
            n = -(-pcm.shape[-1] // 1920)
            return np.arange(2 * n).reshape(1, 2, n)

    prefix = encode_voice(Codec(), np.zeros(1920 * 5, np.float32))
    assert prefix.tolist() == [[-1, -1, -1], [0, 1, 2], [5, 6, 7]]
    with pytest.raises(ValueError, match="too short"):
        encode_voice(Codec(), np.zeros(1920 * 2, np.float32))
