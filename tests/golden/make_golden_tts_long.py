"""Make the long TTS generation golden with the PyTorch reference (run by hand, not by pytest).

    REFENV/bin/python tests/golden/make_golden_tts_long.py   # torch + moshi 0.2.13 + sentencepiece

Greedy `TTSModel.generate` far past the temporal context: the small random TTS LM of
`make_golden_tts_lm.py` (its weights file, text rows for new_word / pad scaled as in
`make_golden_tts_gen.py`) with its attention context set to CONTEXT steps (the context is not a
weight, only PyTorch's `RingKVCache` capacity and mask `t_q - t_k < context`), on two
multi-sentence scripts with breaks (a dialog of four turns; one long turn) that run for more than
15x the context. Writes tests/golden/data/tts_long.json: settings, the scaled rows, entries, the
per-step `(sampled, fed)` text tokens, every aligned frame, `end_steps`, `consumption_times` and
`transcripts` (the state machine's trace).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import sentencepiece as spm
import torch
from make_golden_tts_gen import CONDITIONS, SPEAKER_LEN
from moshi.conditioners import ConditionAttributes, TensorCondition
from moshi.models import loaders
from moshi.models.tts import StateMachine, TokenIds, TTSModel, script_to_entries
from safetensors.torch import load_file

DATA = Path(__file__).parent / "data"
CONTEXT = 16
# Lower case and few punctuation marks: the 36-piece tokenizer must cover every character.
SCRIPTS = [
    ["hello there, the fox jumps over the dog.", '<break time="0.6s"/>where are you going today?',
     "home, then the market. the river runs past the mill.",
     'good.<break time="1.0s"/> see you there, then.'],
    ["the quick brown fox jumps. where is the dog going? home, over the hills, then the market "
     'and the river.<break time="0.8s"/> then home again, quietly, past the old mill.'],
]
SETTINGS = dict(context=CONTEXT, delay_steps=3, second_stream_ahead=2, max_padding=8,
                initial_padding=2, final_padding=4, max_gen_length=400, padding_between=1,
                text_row_scale=3.0)


def tokenizer(vocab: int) -> spm.SentencePieceProcessor:
    import io

    corpus = [re.sub(r"<break[^>]*>", " ", " ".join(s)) for s in SCRIPTS]
    assert len(set("".join(corpus))) + 4 <= vocab, "too many distinct characters"
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 8), model_writer=buf, vocab_size=vocab, unk_id=0,
        bos_id=1, eos_id=2, pad_id=3, num_threads=1, minloglevel=2, model_type="unigram",
        character_coverage=1.0,
    )
    return spm.SentencePieceProcessor(model_proto=buf.getvalue())


def main() -> None:
    meta = json.loads((DATA / "tts_lm_config.json").read_text())
    kwargs = json.loads(json.dumps(meta["lm"]))
    kwargs["context"] = CONTEXT
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
    g = torch.Generator().manual_seed(12)
    speakers = torch.randn(len(SCRIPTS), SPEAKER_LEN, 12, generator=g)
    attrs = [ConditionAttributes(text=dict(c), tensor={"speaker_wavs": TensorCondition.from_tensor(s[None])})
             for c, s in zip(CONDITIONS, speakers, strict=True)]
    entries = [script_to_entries(sp, ids, 12.5, s, multi_speaker=True,
                                 padding_between=SETTINGS["padding_between"]) for s in SCRIPTS]
    result = tts.generate(entries, attrs)
    frames = torch.cat(result.frames, dim=-1)  # [B, 1 + Q, T]
    out = dict(
        settings=SETTINGS, scripts=SCRIPTS, conditions=CONDITIONS,
        speakers=speakers.tolist(), text_rows=rows,
        text_linear_rows=model.text_linear.weight[rows].tolist(),
        entries=[[[e.tokens, e.text, e.padding] for e in ent] for ent in entries],
        text_tokens=result.logged_text_tokens, frames=frames.tolist(),
        end_steps=result.end_steps, consumption_times=result.all_consumption_times,
        transcripts=result.all_transcripts,
    )
    path = DATA / "tts_long.json"
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(path.stat().st_size, "bytes; steps", len(result.logged_text_tokens[0]),
          "end", result.end_steps, "frames", frames.shape)
    for b in range(len(SCRIPTS)):
        sampled = [s for s, _ in result.logged_text_tokens[b]]
        print(b, "sampled 0/3/other:", sampled.count(0), sampled.count(3),
              len(sampled) - sampled.count(0) - sampled.count(3), result.all_transcripts[b])


if __name__ == "__main__":
    main()
