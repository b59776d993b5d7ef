"""The Mimi codec behind one interface, with two backends: our MLX Mimi and Kyutai's `rustymimi`.

    codec = load_mimi(path, num_codebooks=8, backend="mlx")   # or backend="rustymimi"
    codes = codec.encode(pcm)            # float32 [B, 1, N] -> int32 [B, K, ceil(N / 1920)]
    pcm = codec.decode(codes)            # int [B, K, T] -> float32 [B, 1, T * 1920]
    state = codec.init_state(batch_size=1)
    codes = codec.encode_step(frame, state)    # [B, 1, n * 1920] -> [B, K, n]
    frame = codec.decode_step(codes, state)    # [B, K, n] -> [B, 1, n * 1920]
    codec.warmup()                       # optional: compile the one-frame steps ahead of time

Inputs may be NumPy or MLX arrays. Outputs are always NumPy (`float32` audio, `int32` codes) for
both backends, so callers can switch backends without touching their code. Each state is an
independent stream (encoder and decoder sides advance separately); many states can share one codec.

`path` is the released PyTorch-named checkpoint (`tokenizer-e351c8d8-checkpoint125.safetensors`), a
file already in our (Kyutai MLX) names, or a directory holding one (plus an optional `config.json`
with a `"mimi"` block of `MimiConfig` fields, as in the tiny test repos). The number of stored
codebooks is read from the weights (32 in the release), so the strict load always matches the file.

rustymimi 0.4.1 quirks handled here: `Tokenizer.reset()` does not restore the initial state (frame 0
differs afterwards), so every `init_state` builds a fresh `rustymimi.Tokenizer`; it hard-codes the
real Mimi config, so that backend only loads real-size checkpoints; it wants C-contiguous float32
(audio) and uint32 (codes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint.layout import find_mimi_file
from .config import MimiConfig, mimi_202407

log = logging.getLogger(__name__)

BACKENDS = ("mlx", "rustymimi")
# rustymimi is an optional dependency: it has wheels for CPython up to 3.13 only and its source
# build needs a Rust toolchain (pyproject.toml installs it where a wheel exists).
RUSTYMIMI_MISSING = ("the rustymimi Mimi backend is not installed (pip install rustymimi; wheels "
                     "exist for CPython 3.10-3.13); use --mimi-backend mlx, the default")




def _dir_config(path: Path) -> MimiConfig | None:
    cfg_file = (path if path.is_dir() else path.parent) / "config.json"
    if not cfg_file.is_file():
        return None
    try:
        block = json.loads(cfg_file.read_text()).get("mimi")
    except (ValueError, AttributeError):
        return None
    return MimiConfig.from_dict(block) if isinstance(block, dict) else None


def _as_config(config: Any) -> MimiConfig | None:
    if config is None or isinstance(config, MimiConfig):
        return config
    if isinstance(config, dict):
        return MimiConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        return MimiConfig.from_dict(json.loads(Path(config).read_text()))
    raise TypeError(f"config must be a MimiConfig, dict or json path, got {type(config).__name__}")


def stored_codebooks(keys: Any) -> int:
    """Codebooks in a checkpoint: 1 (rvq_first) + the rvq_rest layers."""
    idx = [int(m.group(1)) for k in keys if (m := re.search(r"rvq_rest\.vq\.layers\.(\d+)\.", k))]
    if not idx:
        raise ValueError("not a Mimi checkpoint: no quantizer.rvq_rest codebooks found")
    return max(idx) + 2


def load_mimi_model(path: str | Path, config: Any = None) -> Any:
    """Build our MLX `Mimi` and strictly load a checkpoint (PyTorch or MLX names) into it."""
    import mlx.core as mx

    from .compute import apply_policy, decide_policy
    from .models.mimi.mimi import Mimi
    from .weights.mimi import is_torch_layout, map_mimi_torch

    file = find_mimi_file(path)
    cfg = _as_config(config) or _dir_config(Path(path)) or mimi_202407()
    weights = mx.load(str(file))
    cfg = dataclasses.replace(cfg, quantizer_n_q=stored_codebooks(weights))
    if is_torch_layout(weights):
        weights = map_mimi_torch(weights, cfg)
    model = Mimi(cfg)
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())
    apply_policy(model, decide_policy("stored"))  # Mimi computes in float32, as stored
    model.prepare()
    return model


class MimiCodec:
    """Our MLX Mimi (default backend). `model` is the `models.mimi.Mimi` module."""

    backend = "mlx"

    def __init__(self, model: Any, num_codebooks: int = 8):
        if not 1 <= num_codebooks <= model.total_codebooks:
            raise ValueError(
                f"num_codebooks must be in [1, {model.total_codebooks}], got {num_codebooks}"
            )
        self.model = model
        self.num_codebooks = num_codebooks
        self.frame_size: int = model.frame_size
        self.sample_rate: int = model.sample_rate

    def encode(self, pcm: Any) -> np.ndarray:
        return _codes_np(self.model.encode(pcm, self.num_codebooks))

    def decode(self, codes: Any) -> np.ndarray:
        return np.asarray(self.model.decode(codes), dtype=np.float32)

    def init_state(self, batch_size: int = 1) -> Any:
        return self.model.init_state(batch_size)

    def encode_step(self, frame: Any, state: Any) -> np.ndarray:
        return _codes_np(self.model.encode_step(frame, state, self.num_codebooks))

    def decode_step(self, codes: Any, state: Any) -> np.ndarray:
        return np.asarray(self.model.decode_step(codes, state), dtype=np.float32)

    def warmup(self, batch_size: int = 1) -> None:
        """Trace and compile the one-frame steps now (on CPU the first compile also builds kernels,
        seconds on a cold cache), so a live session's first frame is not late."""
        _warmup(self, batch_size)


@dataclasses.dataclass
class RustyState:
    """One stream of the rustymimi backend: its own `rustymimi.Tokenizer` (see module docstring)."""

    batch_size: int
    tokenizer: Any = dataclasses.field(repr=False)
    frames_encoded: int = 0
    frames_decoded: int = 0


class RustyMimiCodec:
    """Kyutai's Rust Mimi (`rustymimi.Tokenizer`, CPU, real config only)."""

    backend = "rustymimi"

    def __init__(self, path: str | Path, num_codebooks: int = 8):
        check_backend(self.backend)
        import rustymimi

        self._rustymimi = rustymimi
        self.path = str(find_mimi_file(path))
        self.num_codebooks = num_codebooks
        cfg = mimi_202407()
        self.frame_size = cfg.frame_size
        self.sample_rate = cfg.sample_rate
        self._batch = self._tokenizer()

    def _tokenizer(self) -> Any:
        return self._rustymimi.Tokenizer(self.path, num_codebooks=self.num_codebooks)

    def encode(self, pcm: Any) -> np.ndarray:
        x = _pcm_np(pcm)
        if x.shape[-1] % self.frame_size:
            x = np.pad(x, [(0, 0), (0, 0), (0, self.frame_size - x.shape[-1] % self.frame_size)])
        return self._batch.encode(np.ascontiguousarray(x)).astype(np.int32)

    def decode(self, codes: Any) -> np.ndarray:
        return np.asarray(self._batch.decode(_codes_u32(codes)), dtype=np.float32)

    def init_state(self, batch_size: int = 1) -> RustyState:
        return RustyState(batch_size, self._tokenizer())

    def encode_step(self, frame: Any, state: RustyState) -> np.ndarray:
        x = _pcm_np(frame)
        if x.shape[-1] % self.frame_size:
            raise ValueError(f"streaming input length {x.shape[-1]} is not a multiple of {self.frame_size}")
        out = state.tokenizer.encode_step(np.ascontiguousarray(x))
        n = x.shape[-1] // self.frame_size
        state.frames_encoded += n
        if out is None:
            return np.zeros((x.shape[0], self.num_codebooks, 0), dtype=np.int32)
        return np.asarray(out).astype(np.int32)

    def warmup(self, batch_size: int = 1) -> None:
        """One frame through a throwaway stream (same interface as the MLX backend)."""
        _warmup(self, batch_size)

    def decode_step(self, codes: Any, state: RustyState) -> np.ndarray:
        c = _codes_u32(codes)
        out = state.tokenizer.decode_step(c)
        state.frames_decoded += c.shape[-1]
        if out is None:
            return np.zeros((c.shape[0], 1, 0), dtype=np.float32)
        return np.asarray(out, dtype=np.float32)


def check_backend(backend: str) -> None:
    """Raise a one-line ValueError if `backend` is unknown or not installed here (call it before
    loading anything slow, so a missing rustymimi is reported at once)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown Mimi backend {backend!r}; choose one of {BACKENDS}")
    if backend == "rustymimi":
        try:
            import rustymimi  # noqa: F401
        except ImportError:
            raise ValueError(RUSTYMIMI_MISSING) from None


def _warmup(codec: Any, batch_size: int) -> None:
    state = codec.init_state(batch_size)
    codes = codec.encode_step(np.zeros((batch_size, 1, codec.frame_size), np.float32), state)
    codec.decode_step(codes, state)


def _pcm_np(pcm: Any) -> np.ndarray:
    x = np.asarray(pcm, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] != 1:
        raise ValueError(f"pcm must be [B, 1, N], got shape {x.shape}")
    return x


def _codes_u32(codes: Any) -> np.ndarray:
    c = np.asarray(codes)
    if c.ndim != 3:
        raise ValueError(f"codes must be [B, K, T], got shape {c.shape}")
    return np.ascontiguousarray(c.astype(np.uint32))


def _codes_np(codes: Any) -> np.ndarray:
    return np.asarray(codes).astype(np.int32)


def load_mimi(
    path: str | Path, num_codebooks: int = 8, backend: str = "mlx", config: Any = None,
    **_: Any,
) -> MimiCodec | RustyMimiCodec:
    """Load the codec. `config` (MimiConfig, dict or json path) only applies to the MLX backend."""
    check_backend(backend)
    if backend == "mlx":
        return MimiCodec(load_mimi_model(path, config), num_codebooks)
    cfg = _as_config(config) or _dir_config(Path(path))
    if cfg is not None and cfg != mimi_202407(cfg.quantizer_n_q):
        raise ValueError("the rustymimi backend only supports the released Mimi configuration "
                         "(this one is a different size); use backend='mlx'")
    return RustyMimiCodec(path, num_codebooks)
