"""Quality report and CLI tests: the metrics are computed (not constant), the CLI writes loadable
outputs and JSON, and plain q4/q8 outputs load in Kyutai's own moshi_mlx when its env exists."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx import load_lm
from quantize.cli import main_quantize, main_report
from quantize.report import kl_divergence, markdown, top1_agreement
from tests.helpers import KY_CFG, convert, make_source

KYUTAI_PYTHON = os.environ.get("KYUTAI_PYTHON")  # Kyutai's moshi_mlx env, docs/environments.md
ROOT = Path(__file__).resolve().parents[1]


def test_metric_math():
    p, q = np.log([[0.5, 0.5]]), np.log([[0.9, 0.1]])
    want = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert kl_divergence(p, q)[0] == pytest.approx(want, rel=1e-12)
    assert kl_divergence(p + 3.0, p)[0] == 0.0  # logits are shift invariant
    assert kl_divergence(q, p)[0] != pytest.approx(want)  # not symmetric
    a = np.array([[0.1, 2.0, 0.3], [5.0, 0.0, 0.0]])
    b = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    assert top1_agreement(a, b).tolist() == [1.0, 0.0]


def test_report_compare_numbers_are_computed(tiny_repo, tmp_path, capsys):
    outs = {r: convert(tiny_repo, tmp_path / r, r) for r in ("bf16", "q8", "q4", "mixed-q4q8")}
    js = tmp_path / "report.json"
    rc = main_report([str(outs["bf16"]), "--reference", str(tiny_repo), "--compare",
                      str(outs["q8"]), str(outs["q4"]), str(outs["mixed-q4q8"]),
                      "--steps", "32", "--json", str(js), "--markdown"])
    assert rc == 0
    rep = json.loads(js.read_text())
    rows = {r["recipe"]: r for r in rep["models"]}
    assert list(rows) == ["bf16", "q8", "q4", "mixed-q4q8"]
    bf16, q8, q4, mixed = rows["bf16"], rows["q8"], rows["q4"], rows["mixed-q4q8"]
    assert bf16["text_kl"] == 0.0 and bf16["audio_kl"] == 0.0  # identical weights
    assert bf16["text_top1"] == 1.0 and bf16["audio_top1"] == 1.0
    for key in ("text_kl", "audio_kl"):
        assert q4[key] > q8[key] > 0
        assert q4[key] > 10 * q8[key]
    assert q4["audio_top1"] < q8["audio_top1"] <= 1.0
    assert len(q8["audio_kl_per_codebook"]) == 8 and len(set(q8["audio_kl_per_codebook"])) == 8
    assert bf16["bits_per_weight"] == pytest.approx(16.0)
    # q8/g64: 8 + 2*16/64 = 8.5 bits, q4/g32: 4 + 2*16/32 = 5 bits (norms stay 16)
    assert 8.5 < q8["bits_per_weight"] < 8.6 and 5.0 < q4["bits_per_weight"] < 5.1
    assert q4["bits_per_weight"] < mixed["bits_per_weight"] < q8["bits_per_weight"]
    from mlx_lm.utils import compute_bits_per_weight  # same definition, counted on the model

    for r in ("q4", "mixed-q4q8"):
        want = compute_bits_per_weight(load_lm(outs[r], dtype="stored"))
        assert rows[r]["bits_per_weight"] == pytest.approx(want, rel=1e-9)
    assert bf16["size_bytes"] > q8["size_bytes"] > mixed["size_bytes"] > q4["size_bytes"]
    out = capsys.readouterr().out
    assert "Quantization quality" in out and "| q4 | q4 | bf16 |" in out and "| bf16 | bf16 | - |" in out
    assert markdown(rep).count("\n") == 5


def test_cli_quantize_end_to_end(tiny_repo, tmp_path, capsys):
    out = tmp_path / "custom"
    assert main_quantize([str(tiny_repo), str(out), "--bits", "6", "--group-size", "64",
                          "--scales", "float16", "--report-steps", "16"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization"]["bits"] == 6 and cfg["quantization"]["group_size"] == 64
    assert load_lm(out).audio_embs[3].bits == 6
    rep = json.loads((out / "quantize_report.json").read_text())
    assert rep["models"][0]["recipe"] == "custom-q6g64-f16scales" and rep["models"][0]["text_kl"] > 0
    assert rep["models"][0]["scales"] == "f16"  # read from the file's header
    assert "wrote model.safetensors" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main_quantize([str(tmp_path / "missing"), str(tmp_path / "o"), "--no-report"]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main_quantize([str(tmp_path), str(tmp_path / "o"), "--recipe", "q5"])
    assert main_quantize([str(tmp_path), str(tmp_path / "o"), "--bits", "7"]) == 2
    assert "--bits" in capsys.readouterr().err
    src = make_source(tmp_path / "src", KY_CFG)
    assert main_quantize([str(src), str(src), "--recipe", "q4"]) == 2  # would overwrite its input
    assert "holds the source weights" in capsys.readouterr().err
    assert (src / "model.safetensors").is_file()


@pytest.mark.skipif(not KYUTAI_PYTHON, reason="KYUTAI_PYTHON (Kyutai's moshi_mlx env) not set")
@pytest.mark.parametrize("recipe, scales", [("q4", None), ("q8", None), ("bf16", None),
                                            ("q8", "float16")])
def test_plain_outputs_load_in_kyutai_moshi_mlx(tmp_path, recipe, scales):
    """Kyutai's own Lm + nn.quantize + load_weights(strict=True) loads our file, and its first
    text logits equal ours (same weights, float32 compute on both sides)."""
    src = make_source(tmp_path / "src", KY_CFG)
    out = convert(src, tmp_path / recipe, recipe, scales)
    res = subprocess.run([KYUTAI_PYTHON, str(ROOT / "quantize" / "kyutai_check.py"), str(out),
                          "--float32"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["loaded"] and info["file"] == {"q4": "model.q4.safetensors",
                                               "q8": "model.q8.safetensors"}.get(
                                                   recipe, "model.safetensors")
    # every Linear and Embedding: 1 + 4 embeddings, 2 x 4 temporal, 1 head, 2 x 7 depformer
    assert info["quantized_modules"] == (0 if recipe == "bf16" else 28)
    codes = mx.zeros((1, 1 + KY_CFG["n_q"], 2), dtype=mx.int32)
    lm = load_lm(out, dtype="float32")
    lm.set_dtype(mx.float32)  # scales too, as their set_dtype does (exact bf16 -> f32)
    ours = np.array(lm.forward(codes)[0][0, 0, 0])
    theirs = np.array(info["text_logits_step0"], dtype=np.float32)
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()


def test_module_entry_point_runs(tiny_repo, tmp_path):
    res = subprocess.run([sys.executable, "-m", "quantize.cli", "quantize", str(tiny_repo),
                          str(tmp_path / "q8"), "--recipe", "q8", "--no-report", "-q"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "q8" / "model.q8.safetensors").is_file()


def test_report_on_bare_pytorch_reference_file(tmp_path):
    """A reference file with no config.json beside it borrows the converted model's config."""
    from tests.helpers import GOLDEN

    src = GOLDEN / "lm_real_weights.safetensors"
    if not src.exists():
        pytest.skip("golden LM not generated")
    out = tmp_path / "q4"
    assert main_quantize([str(src), str(out), "--recipe", "q4", "--config",
                          str(GOLDEN / "lm_real_config.json"), "--report-steps", "16", "-q"]) == 0
    rep = json.loads((out / "quantize_report.json").read_text())["models"][0]
    assert rep["recipe"] == "q4" and 0 < rep["text_kl"] < 0.5 and 0 < rep["audio_kl"] < 0.5
    assert main_report([str(out), "--reference", str(src), "--steps", "8",
                        "--json", str(tmp_path / "r.json")]) == 0


@pytest.mark.parametrize("recipe", ["q4", "mixed-q4q8"])
def test_converted_tiny_model_runs_in_cli_run(tiny_repo, tmp_path, recipe):
    if not (ROOT / "cli.py").exists():
        pytest.skip("cli.py not present")
    from moshi_mlx.audio.wav import read_wav, write_wav

    out = tmp_path / recipe
    assert main_quantize([str(tiny_repo), str(out), "--recipe", recipe, "--no-report", "-q"]) == 0
    t = np.arange(24000) / 24000
    write_wav(tmp_path / "in.wav", (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    res = subprocess.run(
        [sys.executable, "cli.py", "run", "--model-dir", str(out), "-i", str(tmp_path / "in.wav"),
         "-o", str(tmp_path / "out.wav"), "--transcript", str(tmp_path / "t.json"),
         "--pad-seconds", "1", "--seed", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    tr = json.loads((tmp_path / "t.json").read_text())
    assert tr["model"]["lm_weight"].endswith(
        "model.q4.safetensors" if recipe == "q4" else "model.safetensors")
    pcm = read_wav(tmp_path / "out.wav")
    assert pcm.size >= 24000 and np.isfinite(pcm).all() and np.abs(pcm).max() > 0
