"""Greedy TTS generation against PyTorch moshi's `TTSModel.generate` (golden from
tests/golden/make_golden_tts_gen.py): the same proposals, fed ids, frames, end steps and
transcripts, step for step, on the small random TTS LM of test_tts_lm_golden.py."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx import load_lm
from moshi_mlx.sampling import GREEDY
from moshi_mlx.tts.generate import TtsGen, generate
from moshi_mlx.tts.state_machine import Entry, StateMachine, TokenIds

DATA = Path(__file__).parent / "golden" / "data"


@pytest.fixture(scope="module")
def setup():
    gold = json.loads((DATA / "tts_gen.json").read_text())
    meta = json.loads((DATA / "tts_lm_config.json").read_text())
    lm = load_lm(DATA / "tts_lm_weights.safetensors", config=meta["lm"])
    w = np.array(lm.text_linear.weight)
    w[gold["text_rows"]] = np.array(gold["text_linear_rows"], dtype=np.float32)
    lm.text_linear.weight = mx.array(w)
    return lm, gold


def _gen(lm, gold, seed=None, sampler=GREEDY, cfg_coef=1.0) -> TtsGen:
    st = gold["settings"]
    machine = StateMachine(TokenIds(lm.cfg.text_card + 1),
                           second_stream_ahead=st["second_stream_ahead"],
                           max_padding=st["max_padding"], initial_padding=st["initial_padding"])
    states = [machine.new_state([Entry(tokens=e[0], text=e[1], padding=e[2]) for e in ents])
              for ents in gold["entries"]]
    values = {
        "cfg": [c["cfg"] for c in gold["conditions"]],
        "control": [c["control"] for c in gold["conditions"]],
        "speaker_wavs": (mx.array(gold["speakers"]), None),
    }
    if cfg_coef != 1.0:  # then the dropped conditions (PT `dropout_all_conditions`)
        B = len(states)
        speakers = mx.array(gold["speakers"])
        values = {
            "cfg": values["cfg"] + [None] * B, "control": values["control"] + [None] * B,
            "speaker_wavs": (mx.concatenate([speakers, mx.zeros_like(speakers)]),
                             mx.array([[True] * speakers.shape[1]] * B
                                      + [[False] * speakers.shape[1]] * B)),
        }
    return TtsGen(lm, machine, states, lm.conditions(values), st["delay_steps"],
                  text_sampler=sampler, audio_sampler=sampler, seed=seed, cfg_coef=cfg_coef)


def test_greedy_generation_matches_pytorch(setup):
    lm, gold = setup
    res = generate(_gen(lm, gold), final_padding=gold["settings"]["final_padding"],
                   max_steps=gold["settings"]["max_gen_length"])
    assert [[list(p) for p in item] for item in res.text_tokens] == gold["text_tokens"]
    assert np.array(res.frames).tolist() == gold["frames"]
    assert res.end_steps == gold["end_steps"]
    assert res.consumption_times == gold["consumption_times"]
    assert [[list(w) for w in tr] for tr in res.transcripts] == gold["transcripts"]


def test_real_cfg_by_doubled_batch_matches_pytorch(setup):
    lm, gold = setup
    st = gold["settings"]
    res = generate(_gen(lm, gold, cfg_coef=st["cfg_coef"]), final_padding=st["final_padding"],
                   max_steps=st["max_gen_length"])
    assert [[list(p) for p in item] for item in res.text_tokens] == gold["cfg_text_tokens"]
    assert np.array(res.frames).tolist() == gold["cfg_frames"]
    assert res.end_steps == gold["cfg_end_steps"]
    assert gold["cfg_frames"] != gold["frames"]  # guidance changed the audio


def test_golden_covers_model_and_machine_decisions(setup):
    _, gold = setup
    sampled = [s for item in gold["text_tokens"] for s, _ in item]
    assert sampled.count(0) > 5 and sampled.count(3) > 5  # the model proposes both
    fed = [f for item in gold["text_tokens"] for _, f in item]
    assert any(f >= 41 for f in fed)  # packed second stream
    assert all(e is not None for e in gold["end_steps"])


def test_seeded_sampling_is_reproducible(setup):
    lm, gold = setup
    from moshi_mlx.tts.generate import TTS_AUDIO

    runs = [generate(_gen(lm, gold, seed=s, sampler=TTS_AUDIO), max_steps=30) for s in (5, 5, 6)]
    a, b, c = (np.array(r.frames) for r in runs)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_voice_files_give_pytorchs_speaker_condition(setup, tmp_path):
    """Two voice files -> the [1, 5 * T, dim] tensor and mask of `make_condition_attributes`."""
    from safetensors.numpy import save_file

    from moshi_mlx.tts.voices import load_voice, speaker_condition

    _, gold = setup
    paths = []
    for i, v in enumerate(gold["voices"]):
        paths.append(tmp_path / f"v{i}.safetensors")
        save_file({"speaker_wavs": np.array(v, dtype=np.float32)}, str(paths[-1]))
    tensor, mask = speaker_condition([load_voice(p) for p in paths])
    np.testing.assert_array_equal(tensor, np.array(gold["voice_tensor"], dtype=np.float32))
    np.testing.assert_array_equal(mask, np.array(gold["voice_mask"]))
    assert gold["voice_text"] == {"control": "ok", "cfg": "2.5"}
    with pytest.raises(ValueError, match="safetensors"):
        load_voice(tmp_path / "voice.wav")
