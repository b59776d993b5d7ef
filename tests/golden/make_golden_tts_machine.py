"""Make the TTS state-machine goldens with the PyTorch reference (run by hand, not by pytest).

    REFENV/bin/python tests/golden/make_golden_tts_machine.py   # torch + moshi 0.2.13 + sentencepiece

Runs PyTorch moshi's `script_to_entries` and `StateMachine.process` (`moshi/models/tts.py`) on
a few scripts (breaks, punctuation it rewrites, dialogs with an empty first turn, a character the
tokenizer does not know) with a tiny sentencepiece model trained here, and feeds the machine
seeded random LM proposals (mostly pad / new_word, some other ids, some all-pad and all-word runs)
until well past the end of the text. Writes tests/golden/data/tts_machine.json:

- `vocab`: every word PyTorch tokenized -> its ids (the test's tokenizer is this dict, so a word
  split or cleaned differently is a KeyError);
- per case: the machine settings, the script, PyTorch's entries, and the per-step trace
  (proposal, next input id, consumed, and the counters after the step), `end_step`,
  `consumption_times`, `transcript`.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import sentencepiece as spm
from moshi.models.tts import StateMachine, TokenIds, script_to_entries

OUT = Path(__file__).parent / "data" / "tts_machine.json"
TEXT_CARD = 64
FRAME_RATE = 12.5

CORPUS = [
    "Hello there, this is a tiny voice model that reads your text aloud.",
    "Bonjour, je suis un petit modele qui lit le texte a voix haute.",
    "The quick brown fox jumps over the lazy dog, again and again.",
    "Where are you going today? To the market, then home.",
]

SCRIPTS = {
    "plain": ["Hello there, the quick brown fox jumps."],
    "breaks": ['<break time="0.5s"/>Hello (there): <break time="1.28s"/> the dog’s fox'
               '<break time="0.2s"/>jumps <break time="2s" /> again.<break time="0.3s"/>'],
    "dialog": ["Hello there.", "Bonjour, je suis un modele.", "Where are you going?", "Home."],
    "dialog_other_first": ["", "Bonjour toi.", "Hello again, fox.", "", "Home today."],
    "unknown": ["Hello €5 fox, quick jumps."],
}

# name -> (script, multi_speaker, padding_between, second_stream_ahead, max_padding,
#          initial_padding, proposal mode, seed)
CASES = {
    "plain_single": ("plain", False, 0, 0, 6, 2, "random", 1),
    "plain_ahead": ("plain", False, 1, 2, 8, 2, "random", 2),
    "breaks_single": ("breaks", False, 0, 0, 6, 2, "random", 3),
    "breaks_ahead": ("breaks", True, 1, 2, 8, 2, "random", 4),
    "dialog_ahead": ("dialog", True, 1, 2, 8, 2, "random", 5),
    "dialog_single": ("dialog", True, 0, 0, 4, 0, "random", 6),
    "other_first_ahead": ("dialog_other_first", True, 0, 2, 8, 3, "random", 7),
    "all_pad": ("dialog", True, 0, 2, 8, 2, "pad", 8),
    "all_word": ("breaks", True, 1, 2, 8, 2, "word", 9),
    "all_word_single": ("plain", False, 0, 0, 6, 2, "word", 10),
    "unknown_ahead": ("unknown", True, 0, 2, 8, 2, "random", 11),
    "unknown_single": ("unknown", False, 0, 0, 6, 1, "word", 12),
}
PAST_END = 12  # steps traced after end_step


class RecordingTokenizer:
    def __init__(self, sp: spm.SentencePieceProcessor) -> None:
        self.sp = sp
        self.vocab: dict[str, list[int]] = {}

    def encode(self, word: str) -> list[int]:
        ids = list(self.sp.encode(word))
        self.vocab[word] = ids
        return list(ids)


def train() -> spm.SentencePieceProcessor:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_writer=buf, vocab_size=TEXT_CARD,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3, num_threads=1, minloglevel=2,
        model_type="unigram", character_coverage=1.0,
    )
    return spm.SentencePieceProcessor(model_proto=buf.getvalue())


def proposals(mode: str, rng: random.Random) -> int:
    if mode == "pad":
        return 3
    if mode == "word":
        return 0
    r = rng.random()
    return 0 if r < 0.35 else 3 if r < 0.85 else rng.randrange(TEXT_CARD)


def main() -> None:
    tok = RecordingTokenizer(train())
    ids = TokenIds(TEXT_CARD + 1)
    cases = {}
    for name, (script, multi, between, ahead, max_pad, init_pad, mode, seed) in CASES.items():
        entries = script_to_entries(tok, ids, FRAME_RATE, SCRIPTS[script], multi_speaker=multi,
                                    padding_between=between)
        machine = StateMachine(ids, second_stream_ahead=ahead, max_padding=max_pad,
                               initial_padding=init_pad)
        state = machine.new_state(entries)
        rng = random.Random(seed)
        trace = []
        step = 0
        while state.end_step is None or step < state.end_step + PAST_END:
            proposal = proposals(mode, rng)
            out, consumed = machine.process(step, state, proposal)
            trace.append([proposal, out, int(consumed), state.remaining_padding, state.forced_padding,
                          len(state.queued), len(state.lookahead_queued)])
            step += 1
            assert step < 2000, name
        cases[name] = dict(
            script=SCRIPTS[script], multi_speaker=multi, padding_between=between,
            second_stream_ahead=ahead, max_padding=max_pad, initial_padding=init_pad,
            entries=[[e.tokens, e.text, e.padding] for e in entries],
            trace=trace, end_step=state.end_step, consumption_times=state.consumption_times,
            transcript=state.transcript,
        )
    data = dict(text_card=TEXT_CARD, frame_rate=FRAME_RATE, vocab=tok.vocab, cases=cases)
    OUT.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
