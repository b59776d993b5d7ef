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

import io
import json
from pathlib import Path

import sentencepiece as spm
import torch
from moshi.conditioners import ConditionAttributes, TensorCondition
from moshi.models import loaders
from moshi.models.tts import StateMachine, TokenIds, TTSModel, script_to_entries
from safetensors.torch import load_file, save_file

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
CORPUS = [
    "Hello there, the quick brown fox jumps over the dog.",
    "Where are you going today? Home, then the market.",
]


def tokenizer(vocab: int) -> spm.SentencePieceProcessor:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 8), model_writer=buf, vocab_size=vocab, unk_id=0,
        bos_id=1, eos_id=2, pad_id=3, num_threads=1, minloglevel=2, model_type="unigram",
        character_coverage=1.0,
    )
    return spm.SentencePieceProcessor(model_proto=buf.getvalue())


def main() -> None:
    meta = json.loads((DATA / "tts_lm_config.json").read_text())
    kwargs = json.loads(json.dumps(meta["lm"]))
    model = loaders.get_moshi_lm(None, lm_kwargs=kwargs, device="cpu", dtype=torch.float32)
    model.load_state_dict(load_file(str(DATA / "tts_lm_weights.safetensors")))
    model.eval()
    rows = [0, 3]
    with torch.no_grad():
        model.text_linear.weight[rows] *= SETTINGS["text_row_scale"]
    sp = tokenizer(meta["lm"]["text_card"] - 4)
    ids = TokenIds(model.text_card + 1)
    machine = StateMachine(ids, second_stream_ahead=SETTINGS["second_stream_ahead"],
                           max_padding=SETTINGS["max_padding"],
                           initial_padding=SETTINGS["initial_padding"])
    tts = TTSModel(lm=model, mimi=None, tokenizer=sp, voice_suffix="", voice_repo="",  # type: ignore
                   machine=machine, delay_steps=SETTINGS["delay_steps"], temp=0.0,
                   final_padding=SETTINGS["final_padding"], n_q=model.n_q,
                   max_gen_length=SETTINGS["max_gen_length"])
    g = torch.Generator().manual_seed(11)
    speakers = torch.randn(len(SCRIPTS), SPEAKER_LEN, 12, generator=g)
    attrs = [ConditionAttributes(text=dict(c), tensor={"speaker_wavs": TensorCondition.from_tensor(s[None])})
             for c, s in zip(CONDITIONS, speakers, strict=True)]
    entries = [script_to_entries(sp, ids, 12.5, s, multi_speaker=True,
                                 padding_between=SETTINGS["padding_between"]) for s in SCRIPTS]
    result = tts.generate(entries, attrs)
    # Real classifier-free guidance (doubled batch, null conditions, text logits from the
    # conditioned half only): PT refuses it for models with a `cfg` LUT, so hide that LUT's values.
    tts.cfg_coef = SETTINGS["cfg_coef"]
    tts.__dict__["valid_cfg_conditionings"] = set()
    entries_cfg = [script_to_entries(sp, ids, 12.5, s, multi_speaker=True,
                                     padding_between=SETTINGS["padding_between"]) for s in SCRIPTS]
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
    frames = torch.cat(result.frames, dim=-1)  # [B, 1 + Q, T]
    out = dict(
        settings=SETTINGS, scripts=SCRIPTS, conditions=CONDITIONS,
        speakers=speakers.tolist(), text_rows=rows,
        text_linear_rows=model.text_linear.weight[rows].tolist(),
        entries=[[[e.tokens, e.text, e.padding] for e in ent] for ent in entries],
        text_tokens=result.logged_text_tokens, frames=frames.tolist(),
        end_steps=result.end_steps, consumption_times=result.all_consumption_times,
        transcripts=result.all_transcripts,
        cfg_text_tokens=guided.logged_text_tokens,
        cfg_frames=torch.cat(guided.frames, dim=-1).tolist(), cfg_end_steps=guided.end_steps,
        voices=voices.tolist(), voice_tensor=voice_cond.tensor.tolist(),
        voice_mask=voice_cond.mask.tolist(), voice_text=made.text,
    )
    path = DATA / "tts_gen.json"
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(path.stat().st_size, "bytes; steps", len(result.logged_text_tokens[0]),
          "end", result.end_steps, "frames", frames.shape)
    for b in range(len(SCRIPTS)):
        sampled = [s for s, _ in result.logged_text_tokens[b]]
        print(b, "sampled 0/3/other:", sampled.count(0), sampled.count(3),
              len(sampled) - sampled.count(0) - sampled.count(3), result.all_transcripts[b])


if __name__ == "__main__":
    main()
