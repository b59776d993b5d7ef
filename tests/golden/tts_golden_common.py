"""Shared pieces of the TTS golden scripts (run with the reference env, not by pytest).

The `make_golden_tts_*.py` scripts build the same small random TTS setups with PyTorch moshi:
a random `LMModel` through moshi's loader, a tiny SentencePiece tokenizer, a greedy `TTSModel`
with its state machine, and the same record of a `TTSModelResult`. Keeping them here means the
goldens cannot drift apart in how they are made.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from make_golden_lm import randomize_extras
from moshi.conditioners import ConditionAttributes, TensorCondition
from moshi.models import loaders
from moshi.models.lm import LMModel
from moshi.models.tts import StateMachine, TokenIds, TTSModel, script_to_entries
from safetensors.torch import load_file

CORPUS = [
    "Hello there, the quick brown fox jumps over the dog.",
    "Where are you going today? Home, then the market.",
]
# The text head rows scaled up (new_word 0, pad 3) so that the model, not only the machine's
# limits, decides when words start.
TEXT_ROWS = [0, 3]


def load_lm(kwargs: dict[str, Any]) -> LMModel:
    """An fp32 `LMModel` from moshi's loader (which builds the conditioners / fuser)."""
    kwargs = json.loads(json.dumps(kwargs))  # the loader mutates nested dicts
    return loaders.get_moshi_lm(None, lm_kwargs=kwargs, device="cpu", dtype=torch.float32)


def golden_tts_lm(data: Path, context: int | None = None) -> tuple[LMModel, dict[str, Any]]:
    """The small random TTS LM of `make_golden_tts_lm.py` (optionally another attention context,
    which is no weight) and its config file."""
    meta = json.loads((data / "tts_lm_config.json").read_text())
    model = load_lm(meta["lm"] if context is None else {**meta["lm"], "context": context})
    model.load_state_dict(load_file(str(data / "tts_lm_weights.safetensors")))
    model.eval()
    return model, meta


def random_lm(kwargs: dict[str, Any], seed: int) -> LMModel:
    """A random `LMModel` (eval mode) seeded with `seed`, its norms and scales randomized too."""
    torch.manual_seed(seed)
    model = load_lm(kwargs)
    randomize_extras(model, seed)
    model.eval()
    return model


def tokenizer(vocab: int, corpus: list[str] = CORPUS) -> spm.SentencePieceProcessor:
    """A tiny unigram tokenizer with moshi's special ids (unk 0, bos 1, eos 2, pad 3)."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 8), model_writer=buf, vocab_size=vocab, unk_id=0,
        bos_id=1, eos_id=2, pad_id=3, num_threads=1, minloglevel=2, model_type="unigram",
        character_coverage=1.0,
    )
    return spm.SentencePieceProcessor(model_proto=buf.getvalue())


def greedy_tts(model: LMModel, sp: spm.SentencePieceProcessor,
               settings: dict[str, Any]) -> tuple[TTSModel, TokenIds]:
    """Scale the TEXT_ROWS of the text head, then a greedy `TTSModel` with its state machine."""
    with torch.no_grad():
        model.text_linear.weight[TEXT_ROWS] *= settings["text_row_scale"]
    ids = TokenIds(model.text_card + 1)
    machine = StateMachine(ids, second_stream_ahead=settings["second_stream_ahead"],
                           max_padding=settings["max_padding"],
                           initial_padding=settings["initial_padding"])
    tts = TTSModel(lm=model, mimi=None, tokenizer=sp, voice_suffix="", voice_repo="",  # type: ignore
                   machine=machine, delay_steps=settings["delay_steps"], temp=0.0,
                   final_padding=settings["final_padding"], n_q=model.n_q,
                   max_gen_length=settings["max_gen_length"])
    return tts, ids


def speaker_attributes(conditions: list[dict[str, str]],
                       speakers: torch.Tensor) -> list[ConditionAttributes]:
    """One `ConditionAttributes` per item: its LUT values and its speaker tensor [S, 12]."""
    return [ConditionAttributes(text=dict(c), tensor={"speaker_wavs": TensorCondition.from_tensor(s[None])})
            for c, s in zip(conditions, speakers, strict=True)]


def script_entries(sp: spm.SentencePieceProcessor, ids: TokenIds, scripts: list[list[str]],
                   multi_speaker: bool, padding_between: int) -> list[list[Any]]:
    """Each script's entries at Mimi's 12.5 Hz frame rate."""
    return [script_to_entries(sp, ids, 12.5, s, multi_speaker=multi_speaker,
                              padding_between=padding_between) for s in scripts]


def result_record(entries: list[list[Any]], result: Any) -> dict[str, Any]:
    """The golden record of one `TTSModel.generate` run (frames aligned, [B, 1 + Q, T])."""
    return dict(
        entries=[[[e.tokens, e.text, e.padding] for e in ent] for ent in entries],
        text_tokens=result.logged_text_tokens, frames=torch.cat(result.frames, dim=-1).tolist(),
        end_steps=result.end_steps, consumption_times=result.all_consumption_times,
        transcripts=result.all_transcripts,
    )


def conditioned_header(settings: dict[str, Any], scripts: list[list[str]],
                       conditions: list[dict[str, str]], speakers: torch.Tensor,
                       model: LMModel) -> dict[str, Any]:
    """What a conditioned golden records before its runs: settings, inputs, the scaled rows."""
    return dict(
        settings=settings, scripts=scripts, conditions=conditions,
        speakers=speakers.tolist(), text_rows=TEXT_ROWS,
        text_linear_rows=model.text_linear.weight[TEXT_ROWS].tolist(),
    )


def write_golden(path: Path, out: dict[str, Any], result: Any) -> None:
    """Write `out` as compact JSON, then print its size and what the model sampled."""
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(path.stat().st_size, "bytes; steps", len(result.logged_text_tokens[0]),
          "end", result.end_steps, "frames", len(out["frames"][0]), len(out["frames"][0][0]))
    print_sampled(result)


def print_sampled(result: Any) -> None:
    """Per item, how often the model sampled new_word (0), pad (3) and other tokens."""
    for b, tokens in enumerate(result.logged_text_tokens):
        sampled = [s for s, _ in tokens]
        print(b, "sampled 0/3/other:", sampled.count(0), sampled.count(3),
              len(sampled) - sampled.count(0) - sampled.count(3), result.all_transcripts[b])
