"""Make the TTS generation golden with the PyTorch reference (run by hand, not by pytest).

    REFENV/bin/python tests/golden/make_golden_tts_gen.py   # torch + moshi 0.2.13 + sentencepiece

Greedy `TTSModel.generate` (PyTorch moshi `moshi/models/tts.py`: `LMGen` with the state machine
as its text hook, the audio zeroed until `delay_steps` + its codebook delay, the depformer skipped
for the first `delay_steps` steps) on the small random TTS LM of `make_golden_tts_lm.py` (its
weights file, with the text head's rows for new_word (0) and pad (3) scaled up so that the model,
not only the machine's limits, decides when words start). Batch of two scripts (a dialog with a
break; a single turn), each with its own conditions. Writes tests/golden/data/tts_gen.json:
settings, the scaled `text_linear` rows, entries, per-step `(sampled, fed)` text tokens, every
frame returned by `LMGen.step` (text + audio, aligned), `end_steps`, `consumption_times`,
`transcripts`; the same with real CFG (`cfg_coef` 2, doubled batch); and two random voice
files laid out by `TTSModel.make_condition_attributes`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import tts_golden_common as common
from safetensors.torch import save_file

DATA = Path(__file__).parent / "data"
SCRIPTS = [
    ["Hello there, the fox jumps.", '<break time="0.4s"/>Where are you going?'],
    ["The quick brown fox."],
]
CONDITIONS = [{"cfg": "2.0", "control": "ok"}, {"cfg": "3.5", "control": "ok"}]
SPEAKER_LEN = 10
SETTINGS = dict(delay_steps=3, second_stream_ahead=2, max_padding=8, initial_padding=2,
                final_padding=4, max_gen_length=120, padding_between=1, text_row_scale=3.0,
                cfg_coef=2.0)


def main() -> None:
    model, meta = common.golden_tts_lm(DATA)
    sp = common.tokenizer(meta["lm"]["text_card"] - 4)
    tts, ids = common.greedy_tts(model, sp, SETTINGS)
    g = torch.Generator().manual_seed(11)
    speakers = torch.randn(len(SCRIPTS), SPEAKER_LEN, 12, generator=g)
    attrs = common.speaker_attributes(CONDITIONS, speakers)
    entries = common.script_entries(sp, ids, SCRIPTS, True, SETTINGS["padding_between"])
    result = tts.generate(entries, attrs)
    # Real classifier-free guidance (doubled batch, null conditions, text logits from the
    # conditioned half only): PT refuses it for models with a `cfg` LUT, so hide that LUT's values.
    tts.cfg_coef = SETTINGS["cfg_coef"]
    tts.__dict__["valid_cfg_conditionings"] = set()
    entries_cfg = common.script_entries(sp, ids, SCRIPTS, True, SETTINGS["padding_between"])
    guided = tts.generate(entries_cfg, attrs)
    del tts.__dict__["valid_cfg_conditionings"]
    # Voice files -> condition attributes, as `TTSModel.make_condition_attributes` lays them out.
    voices = torch.randn(2, 1, 12, 4, generator=g)
    paths = []
    for i, v in enumerate(voices):
        paths.append(DATA.parent / f"_voice{i}.safetensors")
        save_file({"speaker_wavs": v.contiguous()}, str(paths[-1]))
    made = tts.make_condition_attributes(paths, cfg_coef=2.5)
    for p in paths:
        p.unlink()
    voice_cond = made.tensor["speaker_wavs"]
    guided_record = common.result_record(entries_cfg, guided)
    out = dict(
        **common.conditioned_header(SETTINGS, SCRIPTS, CONDITIONS, speakers, model),
        **common.result_record(entries, result),
        cfg_text_tokens=guided_record["text_tokens"],
        cfg_frames=guided_record["frames"], cfg_end_steps=guided_record["end_steps"],
        voices=voices.tolist(), voice_tensor=voice_cond.tensor.tolist(),
        voice_mask=voice_cond.mask.tolist(), voice_text=made.text,
    )
    common.write_golden(DATA / "tts_gen.json", out, result)


if __name__ == "__main__":
    main()
