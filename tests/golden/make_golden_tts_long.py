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

import re
from pathlib import Path

import torch
import tts_golden_common as common
from make_golden_tts_gen import CONDITIONS, SPEAKER_LEN

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


def main() -> None:
    model, meta = common.golden_tts_lm(DATA, CONTEXT)
    vocab = meta["lm"]["text_card"] - 4
    corpus = [re.sub(r"<break[^>]*>", " ", " ".join(s)) for s in SCRIPTS]
    assert len(set("".join(corpus))) + 4 <= vocab, "too many distinct characters"
    sp = common.tokenizer(vocab, corpus)
    tts, ids = common.greedy_tts(model, sp, SETTINGS)
    g = torch.Generator().manual_seed(12)
    speakers = torch.randn(len(SCRIPTS), SPEAKER_LEN, 12, generator=g)
    attrs = common.speaker_attributes(CONDITIONS, speakers)
    entries = common.script_entries(sp, ids, SCRIPTS, True, SETTINGS["padding_between"])
    result = tts.generate(entries, attrs)
    out = dict(
        **common.conditioned_header(SETTINGS, SCRIPTS, CONDITIONS, speakers, model),
        **common.result_record(entries, result),
    )
    common.write_golden(DATA / "tts_long.json", out, result)


if __name__ == "__main__":
    main()
