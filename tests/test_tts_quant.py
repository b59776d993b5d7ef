"""Quantized TTS: `load_tts(quant=...)` / `speak --quant` and `cli.py quantize` on a TTS repository.

Values: q8 / q4 teacher-forced logits against the float model's on the frames of a greedy TtsGen
run; the offline repository and the in-memory quantization hold the same tensors and give the same
sampled tokens; the quantized low-rank / demuxed tables look up the dequantized rows; the real
tts-1.6b module tree quantizes entirely (built lazily: shapes only, nothing allocated).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from moshi_mlx.checkpoint.spec import QParams, block_from_decisions
from moshi_mlx.config import LmConfig
from moshi_mlx.nn.factored_embedding import FactoredEmbedding, QuantizedFactoredEmbedding
from moshi_mlx.nn.linear import QuantizedLinear
from moshi_mlx.quant import PRESETS, quantize_lm, quantized_modules, uniform_decisions
from moshi_mlx.sampling import Sampler
from moshi_mlx.tts.generate import TtsGen
from moshi_mlx.tts.quant import quantize_tts_lm
from moshi_mlx.tts.speak import conditions_for, find_voice, load_tts
from tests.helpers import GOLDEN, one_line_error, run_cli

TEXT = "Hello there, how are you doing today? The sun is shining."
STEPS = 40


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict[str, Path]:
    """The tiny float TTS repo and its `cli.py quantize --recipe q8 / q4` outputs."""
    from moshi_mlx.testing.tiny_tts import write_tiny_tts_repo
    from quantize.cli import main_quantize

    root = tmp_path_factory.mktemp("tts_quant")
    out = {"bf16": write_tiny_tts_repo(root / "bf16", seed=0)}
    for q in ("q8", "q4"):
        assert main_quantize([str(out["bf16"]), str(root / q), "--recipe", q, "--no-report",
                              "-q"]) == 0
        out[q] = root / q
    return out


def _frames(model, seed: int, sampler: Sampler) -> tuple[np.ndarray, object]:
    """Aligned frames [1, 1 + n_q, T] of a TtsGen run on TEXT, and its conditions."""
    from moshi_mlx.tts.script import ScriptReader
    from moshi_mlx.tts.speak import FRAME_RATE, PADDING_BETWEEN

    machine = model.machine()
    reader = ScriptReader(model.tokenizer, machine.token_ids, FRAME_RATE, True, PADDING_BETWEEN)
    reader.start_turn(0)
    state = machine.new_state(reader.add(TEXT))
    cond, coef = conditions_for(model, find_voice(model, None), 2.0)
    gen = TtsGen(model.lm, machine, [state], cond, model.delay_steps, text_sampler=sampler,
                 audio_sampler=sampler, seed=seed, cfg_coef=coef)
    frames = [np.array(o.frame) for o in (gen.step() for _ in range(STEPS)) if o.frame is not None]
    return np.stack(frames, axis=-1), cond


def _logits(model, codes: np.ndarray, cond) -> tuple[np.ndarray, np.ndarray]:
    text, audio = model.lm.forward(mx.array(codes), cond)
    return np.array(text.astype(mx.float32)), np.array(audio.astype(mx.float32))


def _drift(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(RMS error / RMS of the reference, top-1 agreement) over the positions the delays define."""
    v = ~np.isnan(ref)
    rel = float(np.sqrt(np.mean((ref[v] - got[v]) ** 2) / np.mean(ref[v] ** 2)))
    top = np.isnan(ref).any(-1)
    agree = np.argmax(np.nan_to_num(ref, nan=-1e9), -1) == np.argmax(np.nan_to_num(got, nan=-1e9), -1)
    return rel, float(agree[~top].mean())


# The float model's greedy frames, teacher-forced through every model (float32 compute, so only
# the weights' rounding differs). Measured on the tiny model: q8 ~1% RMS, top-1 >= 99%; q4 ~13%
# RMS, top-1 ~80%. Bounds: q8's step is range/255 (~0.4% RMS per weight, compounded over two
# temporal layers and the depformer), 3x margin; q4's is 17x coarser.
BOUNDS = {"q8": (0.03, 0.95), "q4": (0.3, 0.6)}


def test_quantized_logits_stay_close_to_float(repos):
    ref = load_tts(repos["bf16"], dtype="float32")
    codes, cond = _frames(ref, seed=0, sampler=Sampler(0.0))
    assert codes.shape[-1] >= STEPS - 4 and (codes[:, 1:] >= 0).any()  # audio was generated
    r_text, r_audio = _logits(ref, codes, cond)
    errs = {}
    for q, (max_rel, min_top1) in BOUNDS.items():
        m = load_tts(repos["bf16"], dtype="float32", quant=q)
        q_text, q_audio = _logits(m, codes, conditions_for(m, find_voice(m, None), 2.0)[0])
        for name, r, g in (("text", r_text, q_text), ("audio", r_audio, q_audio)):
            rel, top1 = _drift(r, g)
            assert 0 < rel <= max_rel and top1 >= min_top1, (q, name, rel, top1)
            errs[q, name] = rel
    assert errs["q4", "text"] > 3 * errs["q8", "text"]  # 4 bits really are coarser than 8
    # An LM already loaded in float32 (as a benchmark holds it) quantizes in place just as well.
    m = load_tts(repos["bf16"], dtype="float32")
    quantize_tts_lm(m.lm, "q8", "float32")
    rel, top1 = _drift(r_audio, _logits(m, codes, conditions_for(m, find_voice(m, None), 2.0)[0])[1])
    assert 0 < rel <= BOUNDS["q8"][0] and top1 >= BOUNDS["q8"][1], (rel, top1)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_tts_lm(m.lm, "q4")


@pytest.mark.parametrize("quant", ["q8", "q4"])
def test_offline_repo_equals_in_memory_quantization(repos, quant):
    offline, memory = load_tts(repos[quant]), load_tts(repos["bf16"], quant=quant)
    a, b = dict(tree_flatten(offline.lm.parameters())), dict(tree_flatten(memory.lm.parameters()))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and mx.array_equal(a[k], b[k]).item(), k
    assert quantized_modules(offline.lm) == quantized_modules(memory.lm)
    # The block recorded in config.json is the in-memory decisions' block.
    cfg = json.loads((repos[quant] / "config.json").read_text())
    decisions = uniform_decisions(load_tts(repos["bf16"]).lm, PRESETS[quant])
    assert cfg["quantization"] == block_from_decisions(decisions)
    assert cfg["moshi_name"] == f"model.{quant}.safetensors"
    sampled = [_frames(m, seed=7, sampler=Sampler(0.6, top_k=25))[0] for m in (offline, memory)]
    np.testing.assert_array_equal(sampled[0], sampled[1])


def test_which_modules_are_quantized(repos):
    lm = load_tts(repos["q4"]).lm
    q = quantized_modules(lm)
    # Conditioners stay float (and as stored); so do tables whose width (16) no group divides.
    assert not any(p.startswith("condition_provider.") for p in q)
    assert "depformer.slices.1.emb" not in q and lm.depformer.slices[1].emb.weight.shape[1] == 16
    for path in ("transformer.layers.0.cross_attention.in_proj", "transformer.layers.1.gating."
                 "linear_in", "text_emb", "text_emb.out1", "audio_embs.3", "text_linear",
                 "depformer.slices.2.linear_out", "text_emb.out2"):
        assert q[path] == QParams(4, 32), path
    assert "depformer.slices.0.emb.out2" not in q  # 16 -> 64
    assert isinstance(lm.text_emb, QuantizedFactoredEmbedding)
    assert isinstance(lm.transformer.layers[0].cross_attention.in_proj, QuantizedLinear)


@pytest.mark.parametrize("demux,low_rank", [(False, 32), (True, None), (True, 32)])
def test_quantized_factored_embedding_looks_up_dequantized_rows(demux, low_rank):
    """Same output as the float module whose table is the dequantized table (ids -1, main and
    packed second-stream ids), at a width the group size divides."""
    mx.random.seed(1)
    n = 20
    emb = FactoredEmbedding(n, 64, low_rank=low_rank, demux=demux)
    holder = nn.Module()
    holder.emb = emb
    quantize_lm(holder, {"group_size": 32, "bits": 4, "emb.low_rank": False, "emb.out1": False,
                         "emb.out2": False})
    qe = holder.emb
    assert isinstance(qe, QuantizedFactoredEmbedding) and qe.weight.dtype == mx.uint32
    ref = FactoredEmbedding(n, 64, low_rank=low_rank, demux=demux)
    ref.update(dict(qe.children()))  # the same Linears
    ref.weight = mx.dequantize(qe.weight, qe.scales, qe.biases, group_size=32, bits=4)
    ids = mx.array([[-1, 0, 5, n - 1] + ([n + 3, 4 * n + 7, 2 * n - 1] if demux else [])])
    got, want = qe(ids), ref(ids)
    assert mx.allclose(got, want, atol=1e-6).item()
    assert (got[0, 0] == 0).all().item() and float(mx.abs(got[0, 1:]).min()) >= 0
    # and it differs from the unquantized table's output: the rounding is real
    assert not mx.allclose(got, emb(ids), atol=1e-4).item()


@pytest.mark.parametrize("bits, group", [(8, 64), (4, 32)])
def test_quantized_cross_attention_projects_only_the_rows_it_needs(bits, group):
    """A quantized cross-attention: the step's query uses the q rows of in_proj alone and the
    source's keys / values go through the dequantized k, v rows (one float matmul, once per
    stream); both equal the full quantized layer's output restricted to those rows."""
    from moshi_mlx.nn.cross_attention import CrossAttention

    D = 128
    layer = CrossAttention(D, num_heads=4)
    nn.quantize(layer, group_size=group, bits=bits)
    assert isinstance(layer.in_proj, QuantizedLinear)
    x = mx.random.normal((2, 1, D), key=mx.random.key(0))
    src = mx.random.normal((2, 30, D), key=mx.random.key(1))
    full_x, full_src = layer.in_proj(x), layer.in_proj(src)
    np.testing.assert_allclose(np.array(layer._project(x, slice(None, D))),
                               np.array(full_x[..., :D]), rtol=1e-5, atol=1e-5)
    k, v = layer.kv(src)
    kv = mx.concatenate([a.transpose(0, 2, 1, 3).reshape(2, 30, D) for a in (k, v)], axis=-1)
    np.testing.assert_allclose(np.array(kv), np.array(full_src[..., D:]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("quant", ["q8", "q4"])
def test_real_tts_shape_quantizes_every_module(quant):
    """tts-1.6b-en_fr's module tree (built lazily, never evaluated): the group size divides every
    width, so everything but the conditioners is quantized, low-rank tables included."""
    from moshi_mlx.models.lm import Lm

    manifest = json.loads((GOLDEN / "tts_1.6b_manifest.json").read_text())
    lm = Lm(LmConfig.from_dict(manifest["config"]))
    decisions = uniform_decisions(lm, PRESETS[quant])
    floats = sorted(p for p, d in decisions.items() if d is None)
    assert floats == ["condition_provider.conditioners.cfg.embed",
                      "condition_provider.conditioners.cfg.output_proj",
                      "condition_provider.conditioners.control.embed",
                      "condition_provider.conditioners.control.output_proj",
                      "condition_provider.conditioners.speaker_wavs.output_proj"]
    quantize_lm(lm, block_from_decisions(decisions))
    assert isinstance(lm.depformer.slices[5].emb, QuantizedFactoredEmbedding)
    assert isinstance(lm.depformer.slices[0].emb, QuantizedFactoredEmbedding)
    assert lm.depformer.slices[5].emb.weight.shape == (2049, 128 * PRESETS[quant].bits // 32)
    assert len(quantized_modules(lm)) == len(decisions) - len(floats)


def test_quantized_repo_loads_strictly(repos, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(repos["q8"], bad)
    f = bad / "model.q8.safetensors"
    w = mx.load(str(f))
    missing = "transformer.layers.0.norm_cross.weight"
    mx.save_safetensors(str(f), {k: v for k, v in w.items() if k != missing})
    with pytest.raises(ValueError, match="missing") as e:
        load_tts(bad)
    assert missing in str(e.value)
    mx.save_safetensors(str(f), {**w, "depformer.slices.0.extra.weight": mx.zeros((2, 2))})
    with pytest.raises(ValueError, match="unexpected") as e:
        load_tts(bad)
    assert "depformer.slices.0.extra.weight" in str(e.value)
    no_biases = "transformer.layers.1.cross_attention.in_proj.biases"
    mx.save_safetensors(str(f), {k: v for k, v in w.items() if k != no_biases})
    with pytest.raises(ValueError, match="transformer.layers.1.cross_attention.in_proj"):
        load_tts(bad)


def test_speak_cli_with_quantized_repo_and_quant_flag(repos, tmp_path, capsys):
    from moshi_mlx.audio.wav import read_wav

    out = tmp_path / "out.wav"
    rc, stdout, _ = run_cli(capsys, "speak", "Some text.", "--model-dir", repos["q4"],
                            "--output", out)
    assert rc == 0 and f"wrote {out}" in stdout
    pcm = read_wav(out)
    assert len(pcm) > 0 and len(pcm) % 1920 == 0 and np.abs(pcm).max() > 1e-3
    # --quant on an already quantized repository: one error line
    rc, _, err = run_cli(capsys, "speak", "Some text.", "--model-dir", repos["q4"],
                         "--quant", "q8", "--output", out)
    assert "already quantized" in one_line_error(rc, err)
    with pytest.raises(SystemExit) as e:
        run_cli(capsys, "speak", "Some text.", "--model-dir", repos["bf16"], "--quant", "q5")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].endswith(
        "error: argument --quant: invalid choice: 'q5' (choose from 'bf16', 'q8', 'q4')")


def test_pytorch_named_tts_source(tmp_path):
    """A TTS LM in PyTorch names, stored like the release (bf16, conditioners float32; the
    golden's weights): the offline q4 repository equals the in-memory q4 model, conditioners
    stay float32, depformer slices of one weight set are written once and share their arrays, and
    the logits stay within the q4 bound of the float model's."""
    from moshi_mlx import load_lm
    from quantize.cli import main_quantize

    meta = json.loads((GOLDEN / "tts_lm_config.json").read_text())
    src = tmp_path / "src"
    src.mkdir()
    w = mx.load(str(GOLDEN / "tts_lm_weights.safetensors"))
    mx.save_safetensors(str(src / "lm.safetensors"), {
        k: v if k.startswith("condition_provider.") else v.astype(mx.bfloat16) for k, v in w.items()})
    (src / "config.json").write_text(json.dumps({**meta["lm"], "model_type": "tts",
                                                 "moshi_name": "lm.safetensors"}))
    out = tmp_path / "q4"  # group 32: the golden's depformer is 32 wide
    assert main_quantize([str(src), str(out), "--recipe", "q4", "--no-report", "-q"]) == 0
    # slices 2 and 3 share a weight set (schedule [0, 1, 2, 2, 3, 3]): written once
    keys = mx.load(str(out / "model.q4.safetensors")).keys()
    tied = "depformer.slices.{}.transformer.layers.0.gating.linear_in.scales"
    assert tied.format(2) in keys and tied.format(3) not in keys
    offline = load_lm(out, dtype="float32")
    assert offline.depformer.slices[3].transformer.layers[0].gating.linear_in.scales is \
        offline.depformer.slices[2].transformer.layers[0].gating.linear_in.scales
    memory = load_lm(src / "lm.safetensors", dtype="stored")
    quantize_tts_lm(memory, "q4", "float32")
    a, b = dict(tree_flatten(offline.parameters())), dict(tree_flatten(memory.parameters()))
    assert a.keys() == b.keys() and all(mx.array_equal(a[k], b[k]).item() for k in a)
    proj = memory.condition_provider.conditioners["speaker_wavs"].output_proj
    assert load_lm(out, dtype="stored")["condition_provider"]["conditioners"][
        "speaker_wavs"]["output_proj"]["weight"].dtype == mx.float32
    assert proj.weight.dtype == mx.float32 and memory.text_emb.out1.weight.dtype == mx.uint32
    # schedule [0, 1, 2, 2, 3, 3]: slices 2 and 3 share one weight set
    s = memory.depformer.slices
    for name in ("weight", "scales", "biases"):
        assert s[2].transformer.layers[0].gating.linear_in[name] is \
            s[3].transformer.layers[0].gating.linear_in[name]
    assert s[1].transformer.layers[0].gating.linear_in.weight is not \
        s[2].transformer.layers[0].gating.linear_in.weight
    ref = load_lm(src / "lm.safetensors", dtype="float32")
    # the compute policy's float32 cast keeps them shared too (one copy per weight set)
    assert ref.depformer.slices[2].transformer.layers[0].gating.linear_in.weight is \
        ref.depformer.slices[3].transformer.layers[0].gating.linear_in.weight
    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.integers(0, 40, (1, 1, 12)), rng.integers(0, 24, (1, 6, 12))], 1)
    values = {"cfg": ["2.0"], "control": ["ok"],
              "speaker_wavs": (mx.array(rng.standard_normal((1, 5, 12)).astype(np.float32)), None)}
    for r, g in zip(ref.forward(mx.array(codes), ref.conditions(values)),
                    memory.forward(mx.array(codes), memory.conditions(values)), strict=True):
        rel, _ = _drift(np.array(r), np.array(g))
        assert 0 < rel <= BOUNDS["q4"][0], rel


def test_tied_slice_rule_at_the_real_shape():
    """tts-1.6b's schedule [0..7] + [8]*8 + [9]*8 + [10]*8: slices 9..15 take set 8 from slice 8
    (attention, MLP and linear_in); per-slice tensors and Moshi's LMs are never tied."""
    from moshi_mlx.config import moshi_v0_1
    from moshi_mlx.weights.lm import tied_slice

    cfg = LmConfig.from_dict(json.loads((GOLDEN / "tts_1.6b_manifest.json").read_text())["config"])
    attn = "depformer.slices.{}.transformer.layers.3.self_attn.in_proj.weight"
    assert tied_slice(cfg, attn.format(9)) == attn.format(8)
    assert tied_slice(cfg, attn.format(31)) == attn.format(24)
    assert tied_slice(cfg, attn.format(8)) is None and tied_slice(cfg, attn.format(7)) is None
    gate = "depformer.slices.{}.transformer.layers.0.gating.linear_out.scales"
    assert tied_slice(cfg, gate.format(15)) == gate.format(8)
    assert tied_slice(cfg, "depformer.slices.20.linear_in.weight") == \
        "depformer.slices.16.linear_in.weight"
    for own in ("depformer.slices.9.linear_out.weight", "depformer.slices.9.emb.weight",
                "depformer.slices.9.transformer.layers.0.norm1.weight"):
        assert tied_slice(cfg, own) is None, own
    assert tied_slice(moshi_v0_1(), attn.format(5)) is None


def test_quality_report_on_a_tts_repository(repos):
    """`quantize-report` probes TTS LMs with conditions (cross-attention needs a source)."""
    from quantize.report import build_report

    rep = build_report([repos["q8"], repos["q4"]], repos["bf16"], steps=16)
    q8, q4 = rep["models"]
    assert q8["params"] == q4["params"] and 8 < q8["bits_per_weight"] < 16
    assert q4["bits_per_weight"] < q8["bits_per_weight"]
    assert 0 < q8["audio_kl"] < q4["audio_kl"] and q8["text_top1"] > 0.9
