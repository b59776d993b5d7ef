"""Long TTS runs, far past the temporal context: PyTorch parity, exact windows, flat memory.

- Greedy `TtsGen` equals PyTorch's `TTSModel.generate` step for step for 17x the context (golden
  from tests/golden/make_golden_tts_long.py: context 16, 272 steps, two multi-sentence scripts
  with breaks), state machine trace included;
- `WindowChecker` (moshi_mlx/testing/window_check.py): the streaming hidden states equal a full
  sliding-window forward around every cache wrap (real CFG's doubled batch too), and it flags
  Kyutai MLX's context+1 window;
- `speak` on a tiny repo with an 8-step context for 30x its context: the check passes over the
  whole run, the KV caches hold exactly `context` keys, MLX active memory stays flat, and the
  audio streamed into a `WavWriter` equals the returned audio; an interrupted `cli.py speak`
  leaves a valid wav with everything made so far.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.audio.wav import WavWriter, read_wav, write_wav
from moshi_mlx.sampling import GREEDY
from moshi_mlx.testing.window_check import WindowChecker, cache_sizes
from moshi_mlx.tts.generate import TtsGen, generate
from tests.helpers import assert_tts_matches, tts_condition_values, tts_golden_lm, tts_machine

DATA = Path(__file__).parent / "golden" / "data"
# float32 end to end: streaming and full forward differ only by reduction order (measured ~1e-6
# relative); a wrong window or stale key gives O(1e-1) or more.
REL_TOL = 1e-4


def _lm(gold: dict, context: int):
    meta = json.loads((DATA / "tts_lm_config.json").read_text())
    return tts_golden_lm("tts_lm_weights.safetensors", {**meta["lm"], "context": context}, gold)


def _gen(lm, gold: dict) -> TtsGen:
    st = gold["settings"]
    machine, states = tts_machine(lm, st, gold["entries"])
    return TtsGen(lm, machine, states, lm.conditions(tts_condition_values(gold)), st["delay_steps"],
                  text_sampler=GREEDY, audio_sampler=GREEDY)


@pytest.fixture(scope="module")
def gold():
    return json.loads((DATA / "tts_long.json").read_text())


def test_greedy_generation_far_past_the_context_matches_pytorch(gold):
    st = gold["settings"]
    ctx = st["context"]
    assert len(gold["text_tokens"][0]) > 15 * ctx  # the golden runs the ring many times round
    assert sum(1 for e in gold["entries"][0] if not e[0]) == 2  # breaks
    lm = _lm(gold, ctx)
    gen = _gen(lm, gold)
    checker = WindowChecker(lm, gen.cond)
    checks, sizes = [], []

    class Recording(TtsGen):  # generate() drives the steps; check around every wrap
        def step(self):
            out = TtsGen.step(self)
            checker.record(out)
            if self.step_count % ctx in (0, 1, ctx - 1):
                checks.append(checker.check())
                sizes.append(cache_sizes(self.cache))
            return out

    gen.__class__ = Recording
    res = generate(gen, final_padding=st["final_padding"], max_steps=st["max_gen_length"])
    assert_tts_matches(res, gold)
    assert len(checks) > 3 * 15 and checks[-1].positions == checker.context + checker.layers
    assert all(s == [ctx] * len(s) for s in sizes)  # preallocated to `context`, never more
    worst = max(max(c.hidden_rel, c.logits_rel) for c in checks)
    assert worst < REL_TOL, checks


def test_window_check_flags_a_context_plus_one_window(gold):
    """Kyutai's MLX attention keeps context + 1 keys: run the LM with a 17-step window and check
    it against the 16-step rule. Equal while nothing has left the window, different after."""
    ctx = gold["settings"]["context"]
    wide = _gen(_lm(gold, ctx + 1), gold)
    checker = WindowChecker(_lm(gold, ctx), wide.cond)
    rel = []
    for _ in range(2 * ctx + 4):
        checker.record(wide.step())
        rel.append(checker.check().hidden_rel)
    assert max(rel[:ctx]) < REL_TOL  # every key still in both windows
    assert min(rel[ctx + 4:]) > 1e-3


def test_window_check_with_real_cfg_doubled_batch(gold):
    """Real CFG runs the temporal transformer on 2B rows (conditioned, then dropped conditions
    with the text zeroed): both halves stay exact past several wraps."""
    ctx = gold["settings"]["context"]
    lm = _lm(gold, ctx)
    gen = _gen(lm, gold)
    B = gen.batch_size
    cond = lm.conditions(tts_condition_values(gold, doubled=True))
    gen = TtsGen(lm, gen.machine, gen.states, cond, gen.delay_steps, text_sampler=GREEDY,
                 audio_sampler=GREEDY, cfg_coef=2.0)
    checker = WindowChecker(lm, cond)
    checks = []
    for _ in range(4 * ctx + 2):
        out = gen.step()
        assert out.inputs.shape[0] == 2 * B
        checker.record(out)
        if gen.step_count % ctx in (0, 1, ctx - 1):
            checks.append(checker.check())
    assert len(checks) >= 10 and max(max(c.hidden_rel, c.logits_rel) for c in checks) < REL_TOL


@pytest.fixture(scope="module")
def short_context_repo(tmp_path_factory):
    from moshi_mlx.testing.tiny_tts import write_tiny_tts_repo

    return write_tiny_tts_repo(tmp_path_factory.mktemp("tts_ctx8"), context=8)


TEXT = ("Hello there, how are you doing today? The sun is shining over the hills. At 7:30, "
        "12 boats left; then 3 more. Why? Nobody knows! The fox jumps over the dog.")


def test_speak_thirty_contexts_exact_and_flat(short_context_repo, tmp_path, record_property):
    from moshi_mlx.tts.speak import find_voice, load_tts, speak

    model = load_tts(short_context_repo)
    ctx = model.lm.cfg.context
    assert ctx == 8
    checker = WindowChecker(model.lm)
    checks, memory, times, sizes = [], [], [], []
    last = [time.perf_counter()]

    def on_step(gen, out):
        checker.on_step(gen, out)
        t = gen.step_count  # steps done
        mx.eval(out.hidden)
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
        if t % (3 * ctx) in (0, 1, 3 * ctx - 1):  # around every third wrap
            checks.append(checker.check())
            sizes.append(cache_sizes(gen.cache))
        if t >= 3 * ctx and t % ctx == 0:
            mx.clear_cache()
            memory.append(mx.get_active_memory())
        last[0] = time.perf_counter()

    path = tmp_path / "long.wav"
    with WavWriter(path, model.codec.sample_rate) as wav:
        res = speak(model, TEXT, find_voice(model, None), text_sampler=GREEDY,
                    audio_sampler=GREEDY, seed=0, on_audio=wav.write, on_step=on_step)
    assert res.end_step is not None and res.steps >= 30 * ctx
    # Audio follows the script (end_step frames) and the streamed file is the returned audio.
    assert res.samples == len(res.pcm) == res.end_step * 1920
    ref = tmp_path / "ref.wav"
    write_wav(ref, res.pcm, model.codec.sample_rate)
    assert path.read_bytes() == ref.read_bytes()
    assert np.isfinite(res.pcm).all() and np.abs(res.pcm).max() > 1e-3
    # Exact windows over the whole run, caches exactly `context` once full.
    assert len(checks) >= 25 and checks[-1].step >= 29 * ctx
    assert max(max(c.hidden_rel, c.logits_rel) for c in checks) < REL_TOL, checks
    assert all(s == [ctx] * len(s) for s in sizes)
    # Flat memory after warm-up: caches, checker deques and frame history are all bounded
    # (a cache growing by one key per step would add 2 layers x K/V x 2 x 64 x 4 B = 1 KiB/step).
    growth = max(memory) - memory[0]
    record_property("active_memory_bytes", [memory[0], max(memory)])
    tenth = len(times) // 10  # the first tenth runs no depformer / Mimi yet (audio delay)
    record_property("step_ms_second_last_tenth", [1e3 * float(np.median(times[tenth:2 * tenth])),
                                                  1e3 * float(np.median(times[-tenth:]))])
    assert len(memory) >= 25 and growth <= 64 * 1024, memory


def test_wav_writer_is_valid_after_every_chunk(tmp_path):
    rng = np.random.default_rng(0)
    chunks = [rng.uniform(-1.2, 1.2, (2, n)).astype(np.float32) for n in (5, 1920, 7)]
    path, ref = tmp_path / "w.wav", tmp_path / "ref.wav"
    with WavWriter(path, 16000, channels=2) as w:
        for i, c in enumerate(chunks):
            w.write(c)
            write_wav(ref, np.concatenate(chunks[:i + 1], axis=1), 16000)
            assert path.read_bytes() == ref.read_bytes()  # complete, not yet closed
        with pytest.raises(ValueError, match="channels"):
            w.write(np.zeros(4, np.float32))
    assert w.samples == 1932 and abs(w.seconds - 1932 / 16000) < 1e-12


def test_interrupted_speak_keeps_a_valid_wav(short_context_repo, tmp_path, monkeypatch, capsys):
    """Ctrl-C in the middle of `cli.py speak -o`: exit code of an interruption, and the wav holds
    exactly the audio made so far (the first chunks of the uninterrupted run)."""
    from cli import EXIT_INTERRUPTED, main

    args = ["speak", "Hello there, how are you?", "--model-dir", str(short_context_repo),
            "--temp", "0", "-o"]
    full = tmp_path / "full.wav"
    assert main([*args, str(full)]) == 0
    write = WavWriter.write

    def interrupting(self, pcm):
        write(self, pcm)
        if self.samples >= 4 * 1920:
            raise KeyboardInterrupt

    monkeypatch.setattr(WavWriter, "write", interrupting)
    cut = tmp_path / "cut.wav"
    capsys.readouterr()
    rc = main([*args, str(cut)])
    assert rc == EXIT_INTERRUPTED and "interrupted" in capsys.readouterr().err
    a, b = read_wav(full), read_wav(cut)
    assert len(b) == 4 * 1920 < len(a)
    np.testing.assert_array_equal(b, a[:len(b)])


def test_user_error_before_any_audio_leaves_no_wav(short_context_repo, tmp_path, capsys):
    from cli import main

    out = tmp_path / "x.wav"
    assert main(["speak", "Hi.", "--model-dir", str(short_context_repo), "--cfg", "2.2",
                 "-o", str(out)]) == 1
    assert "--cfg must be one of" in capsys.readouterr().err and not out.exists()
