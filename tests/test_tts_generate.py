"""Greedy TTS generation against PyTorch moshi's `TTSModel.generate` (golden from
tests/golden/make_golden_tts_gen.py): the same proposals, fed ids, frames, end steps and
transcripts, step for step, on the small random TTS LM of test_tts_lm_golden.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moshi_mlx.sampling import GREEDY
from moshi_mlx.tts.generate import TtsGen, generate
from tests.helpers import (
    GOLDEN,
    assert_tts_matches,
    tts_condition_values,
    tts_golden_lm,
    tts_machine,
)


@pytest.fixture(scope="module")
def setup():
    gold = json.loads((GOLDEN / "tts_gen.json").read_text())
    meta = json.loads((GOLDEN / "tts_lm_config.json").read_text())
    return tts_golden_lm("tts_lm_weights.safetensors", meta["lm"], gold), gold


def _gen(lm, gold, seed=None, sampler=GREEDY, cfg_coef=1.0) -> TtsGen:
    st = gold["settings"]
    machine, states = tts_machine(lm, st, gold["entries"])
    # With real CFG, the dropped conditions too (PT `dropout_all_conditions`).
    values = tts_condition_values(gold, doubled=cfg_coef != 1.0)
    return TtsGen(lm, machine, states, lm.conditions(values), st["delay_steps"],
                  text_sampler=sampler, audio_sampler=sampler, seed=seed, cfg_coef=cfg_coef)


def test_greedy_generation_matches_pytorch(setup):
    lm, gold = setup
    res = generate(_gen(lm, gold), final_padding=gold["settings"]["final_padding"],
                   max_steps=gold["settings"]["max_gen_length"])
    assert_tts_matches(res, gold)


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
