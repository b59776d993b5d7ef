"""Helpers shared by several test modules: tiny configs, random models, golden loaders, wav I/O.

Plain functions and constants (fixtures live in `conftest.py`). Test modules import these from
here, never from each other.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from safetensors.numpy import load_file

from moshi_mlx.config import LmConfig, MimiConfig
from moshi_mlx.models.lm import Lm
from moshi_mlx.models.mimi.mimi import Mimi
from moshi_mlx.weights.lm import map_lm_torch
from moshi_mlx.weights.mimi import map_mimi_torch

GOLDEN = Path(__file__).parent / "golden" / "data"

LM_GOLDENS = ("real", "sched", "shared", "nodep")



def tiny_lm_kwargs(**overrides: Any) -> dict[str, Any]:
    """Kyutai-style LM kwargs of a tiny model with the real structure (8 + 8 streams, acoustic
    delay 1, depformer multi-linear with per-step weights); every Linear's in_features is a
    multiple of 64, so q4 (group 32) and q8 (group 64) quantization apply everywhere."""
    kw: dict[str, Any] = dict(
        dim=64, text_card=40, existing_text_padding_id=3, n_q=16, dep_q=8, card=24, num_heads=4,
        num_layers=2, hidden_scale=3.0, causal=True, context=6, max_period=10000, gating="silu",
        norm="rms_norm_f32", positional_embedding="rope", depformer_dim=64,
        depformer_dim_feedforward=192, depformer_num_heads=2, depformer_num_layers=1,
        depformer_multi_linear=True, depformer_weights_per_step=True, depformer_pos_emb="none",
        delays=[0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
    )
    kw.update(overrides)
    return kw



# LM: random weights and the test-only inverse of `map_lm_torch` -------------------------
def _first_slice(cfg: LmConfig, index_of, i: int) -> int:
    return next(k for k in range(cfg.dep_q) if index_of(k) == i)



def to_torch_names(lm: Lm) -> dict[str, mx.array]:
    """Inverse of `map_lm_torch` (test only): shared PT tensors are taken from the first slice
    that uses them, attention weight sets concatenated on dim 0 as in released files."""
    cfg = lm.cfg
    p = dict(tree_flatten(lm.parameters()))
    out: dict[str, mx.array] = {}

    def layer(src: str, dst: str, idx_key: str | None) -> None:
        for k, v in p.items():
            if not k.startswith(src + "."):
                continue
            rest = k[len(src) + 1:]
            if rest.startswith("self_attn."):
                continue
            if rest.endswith(("norm1.weight", "norm2.weight", "out_norm.weight")) and cfg.norm.startswith("rms"):
                out[f"{dst}.{rest[:-len('weight')]}alpha"] = v.reshape(1, 1, -1)
            elif rest.startswith("gating.linear1") or rest.startswith("gating.linear2"):
                out[f"{dst}.{rest[len('gating.'):]}"] = v
            elif rest.startswith("gating.") and idx_key is not None:
                out[f"{dst}.gating.{idx_key}.{rest[len('gating.'):]}"] = v
            else:
                out[f"{dst}.{rest}"] = v

    out["text_emb.weight"] = p["text_emb.weight"]
    out["text_linear.weight"] = p["text_linear.weight"]
    for i in range(cfg.n_q):
        out[f"emb.{i}.weight"] = p[f"audio_embs.{i}.weight"]
    if cfg.norm.startswith("rms"):
        out["out_norm.alpha"] = p["out_norm.weight"].reshape(1, 1, -1)
    else:
        out["out_norm.weight"], out["out_norm.bias"] = p["out_norm.weight"], p["out_norm.bias"]
    for L in range(cfg.num_layers):
        src = f"transformer.layers.{L}"
        layer(src, src, None)
        out[f"{src}.self_attn.in_proj_weight"] = p[f"{src}.self_attn.in_proj.weight"]
        out[f"{src}.self_attn.out_proj.weight"] = p[f"{src}.self_attn.out_proj.weight"]
    if cfg.dep_q == 0:
        return out
    n_sets = cfg.depformer_num_weights
    for L in range(cfg.depformer_num_layers):
        for i in range(n_sets):
            k = _first_slice(cfg, cfg.depformer_weight_index, i)
            src = f"depformer.slices.{k}.transformer.layers.{L}"
            layer(src, f"depformer.layers.{L}", str(i) if cfg.depformer_weights_per_step else None)
        for kind in ("in_proj", "out_proj"):
            parts = [p[f"depformer.slices.{_first_slice(cfg, cfg.depformer_weight_index, i)}"
                       f".transformer.layers.{L}.self_attn.{kind}.weight"] for i in range(n_sets)]
            name = "in_proj_weight" if kind == "in_proj" else "out_proj.weight"
            out[f"depformer.layers.{L}.self_attn.{name}"] = mx.concatenate(parts, axis=0)
    sched = cfg.depformer_weights_per_step_schedule
    n_in = (max(sched) + 1 if sched else cfg.dep_q) if cfg.depformer_multi_linear else 1

    def in_index(k: int) -> int:
        return (sched[k] if sched else k) if cfg.depformer_multi_linear else 0

    for j in range(n_in):
        out[f"depformer_in.{j}.weight"] = p[f"depformer.slices.{_first_slice(cfg, in_index, j)}.linear_in.weight"]
    for k in range(cfg.dep_q):
        out[f"linears.{k}.weight"] = p[f"depformer.slices.{k}.linear_out.weight"]
        emb = "depformer_text_emb.weight" if k == 0 else f"depformer_emb.{k - 1}.weight"
        out[emb] = p[f"depformer.slices.{k}.emb.weight"]
    return out



def random_lm(cfg: LmConfig, seed: int) -> Lm:
    """Random weights everywhere (norms and layer scales included), shared PT tensors tied."""
    rng = np.random.default_rng(seed)
    lm = Lm(cfg)
    lm.load_weights([(k, mx.array(rng.normal(0, 0.3 if v.ndim > 1 else 1, v.shape).astype(np.float32)))
                     for k, v in tree_flatten(lm.parameters())])
    tied = Lm(cfg)
    tied.load_weights(list(map_lm_torch(to_torch_names(lm), cfg).items()), strict=True)
    return tied



# Mimi goldens -------------------------------------------------------------------------------------
def load_mimi_case(name: str, compiled: bool = True) -> tuple[Mimi, dict, dict]:
    meta = json.loads((GOLDEN / f"mimi_{name}.json").read_text())
    cfg = MimiConfig.from_dict(meta["config"])
    data = load_file(str(GOLDEN / f"mimi_{name}.safetensors"))
    weights = {k[len("weights."):]: mx.array(v) for k, v in data.items() if k.startswith("weights.")}
    model = Mimi(cfg, compiled=compiled)
    model.load_weights(list(map_mimi_torch(weights, cfg).items()), strict=True)
    return model, data, meta



# Quantize: tiny source models ---------------------------------------------------------------------
# Shapes Kyutai's moshi_mlx config mapping reproduces (hidden_scale 4.125 <-> their 4*dim rule)
# and whose every input size is a multiple of 64, so their default `nn.quantize` applies.
KY_CFG = dict(dim=256, num_heads=4, num_layers=2, text_card=64, card=64, n_q=4, dep_q=2,
              context=32, depformer_dim=64, depformer_num_heads=2, depformer_num_layers=1,
              depformer_dim_feedforward=192, delays=[0, 0, 1, 0, 1])



def make_source(d: Path, cfg: dict, seed: int = 0) -> Path:
    """A random bf16 LM in Kyutai's MLX names plus config.json."""
    d.mkdir(parents=True, exist_ok=True)
    mx.random.seed(seed)
    m = Lm(LmConfig.from_dict(cfg))
    m.set_dtype(mx.bfloat16)
    w = dict(tree_flatten(m.parameters()))
    mx.eval(w)
    mx.save_safetensors(str(d / "model.safetensors"), w)
    (d / "config.json").write_text(json.dumps(cfg))
    return d



def convert(src: Path, out: Path, recipe: str, scales: str | None = None) -> Path:
    """`cli.py quantize SRC OUT --recipe RECIPE [--scales S]` without the report."""
    from quantize.convert import prepare, write
    from quantize.recipes import get_recipe
    from quantize.source import resolve

    write(prepare(resolve(src), get_recipe(recipe, scales=scales)), out)
    return out



# Wav files and the hub cache ----------------------------------------------------------------------
def write_wav(path: Path, pcm: np.ndarray, rate: int, channels: int = 1) -> Path:
    data = (np.clip(pcm, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())
    return path



def read_wav(path: Path) -> tuple[np.ndarray, int, int]:
    with wave.open(str(path), "rb") as w:
        raw = w.readframes(w.getnframes())
        rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
    dtype = {2: "<i2", 4: "<i4"}[width] if width != 4 else "<i4"
    x = np.frombuffer(raw, dtype=dtype).astype(np.float32) / (2 ** (8 * width - 1))
    return x.reshape(-1, ch).T, rate, ch



def speechlike(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
            + 0.02 * rng.standard_normal(t.size)).astype(np.float32)



COMMIT = "0123456789abcdef0123456789abcdef01234567"



def make_cached_repo(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """Write the huggingface_hub cache layout (refs/main -> snapshots/<commit>/<file>)."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)
    return snap


ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`cli.main(argv)` in-process; returns (exit status, stdout, stderr)."""
    import cli

    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_line_error(rc: int, err: str) -> str:
    """Assert a user error: exit 1, one `error:` line, no traceback; returns the line."""
    assert rc == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def cli_process(server, command: str, *args: str) -> subprocess.Popen:
    """`cli.py COMMAND ARGS` as a subprocess on the private PulseAudio server."""
    env = dict(server.env, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), command, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def chat(server, *args: str) -> subprocess.Popen:
    """`cli.py chat ARGS` as a subprocess on the private PulseAudio server."""
    return cli_process(server, "chat", *args)


def talk_to(proc: subprocess.Popen, server, wav: Path, after_s: float = 0.0, timeout: float = 60,
            recorder: subprocess.Popen | None = None) -> tuple[str, str, str]:
    """Once `proc` says `listening`, play `wav` into the virtual microphone (`after_s` later) and
    wait for `proc` to end; `proc` (and `recorder`) are always stopped. Returns (the output up to
    `listening`, the rest of stdout, stderr)."""
    try:
        head = wait_for(proc, "listening")
        player = server.play(wav, after_s=after_s)
        out, err = proc.communicate(timeout=timeout)
        player.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        if recorder is not None:
            recorder.terminate()
            recorder.wait(10)
    return head, out, err


def interrupt(proc: subprocess.Popen, after_s: float = 3.0, timeout: float = 60) -> tuple[str, str]:
    """Ctrl-C `proc` `after_s` seconds after it says `listening` (the ALSA pulse plugin takes
    ~1-2 s to deliver its first block); returns (stdout, stderr)."""
    try:
        wait_for(proc, "listening")
        time.sleep(after_s)
        os.kill(proc.pid, signal.SIGINT)
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


def wait_for(proc: subprocess.Popen, text: str, timeout: float = 60) -> str:
    """Read stdout lines until `text` appears (the app prints it once audio is running)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} never printed; stdout: {''.join(seen)}; "
                         f"stderr: {proc.stderr.read() if proc.poll() is not None else ''}")


def tts_golden_lm(weights: str, config: dict[str, Any], gold: dict[str, Any]) -> Lm:
    """A TTS golden's LM (`weights` in GOLDEN) with the golden's scaled text-head rows."""
    from moshi_mlx import load_lm

    lm = load_lm(GOLDEN / weights, config=config)
    w = np.array(lm.text_linear.weight)
    w[gold["text_rows"]] = np.array(gold["text_linear_rows"], dtype=np.float32)
    lm.text_linear.weight = mx.array(w)
    return lm


def tts_machine(lm: Lm, settings: dict[str, Any], entries: list[list[list[Any]]]) -> tuple[Any, list[Any]]:
    """A golden's state machine and one state per item, from its `[tokens, text, padding]` entries."""
    from moshi_mlx.tts.state_machine import Entry, StateMachine, TokenIds

    machine = StateMachine(TokenIds(lm.cfg.text_card + 1),
                           second_stream_ahead=settings["second_stream_ahead"],
                           max_padding=settings["max_padding"],
                           initial_padding=settings["initial_padding"])
    states = [machine.new_state([Entry(tokens=e[0], text=e[1], padding=e[2]) for e in ents])
              for ents in entries]
    return machine, states


def tts_condition_values(gold: dict[str, Any], doubled: bool = False) -> dict[str, Any]:
    """A golden's conditioner inputs; `doubled` appends the dropped conditions of real CFG (PT
    `dropout_all_conditions`: LUTs None, speaker tensor zeroed and masked out)."""
    conds, speakers = gold["conditions"], mx.array(gold["speakers"])
    if not doubled:
        return {"cfg": [c["cfg"] for c in conds], "control": [c["control"] for c in conds],
                "speaker_wavs": (speakers, None)}
    B, S = len(conds), speakers.shape[1]
    return {
        "cfg": [c["cfg"] for c in conds] + [None] * B,
        "control": [c["control"] for c in conds] + [None] * B,
        "speaker_wavs": (mx.concatenate([speakers, mx.zeros_like(speakers)]),
                         mx.array([[True] * S] * B + [[False] * S] * B)),
    }


def assert_tts_matches(res: Any, want: dict[str, Any]) -> None:
    """A `generate` result equals a golden run: proposals and fed ids, frames, end steps,
    consumption times and transcripts."""
    assert [[list(p) for p in item] for item in res.text_tokens] == want["text_tokens"]
    assert np.array(res.frames).tolist() == want["frames"]
    assert res.end_steps == want["end_steps"]
    assert res.consumption_times == want["consumption_times"]
    assert [[list(w) for w in tr] for tr in res.transcripts] == want["transcripts"]


def row_index_views(torch_manifest: dict) -> dict:
    """Zero-stride arrays of a manifest's shapes carrying their row index in every column: a
    key map applied to them shows which chunk of which tensor goes where, without weights."""
    import numpy as np

    return {k: np.broadcast_to(np.arange(s[0], dtype=np.float32).reshape(-1, *[1] * (len(s) - 1)), s)
            for k, (s, _) in torch_manifest.items()}
