"""moshi_mlx: Kyutai's Moshi speech model (Helium LM + depth transformer + Mimi codec) in MLX.

The public entry points are imported lazily so that `import moshi_mlx` stays cheap (no MLX graph,
no hub access). Its one side effect, on Linux only: a system OpenBLAS, when installed, is loaded
before MLX so that MLX's float32 matmuls use it (`moshi_mlx.compute.prefer_system_blas`; this has
to happen before `mlx.core` is imported; `MOSHI_MLX_BLAS=reference` turns it off).

- `load_lm(path, config=None, dtype=None)`: the multi-stream LM from a checkpoint file or directory.
- `load_mimi(path, num_codebooks=8, backend="mlx")`: the Mimi codec (MLX or rustymimi backend).
"""

from __future__ import annotations

from typing import Any

from .compute import prefer_system_blas

prefer_system_blas()

__version__ = "0.1.0"
__all__ = ["load_lm", "load_mimi", "__version__"]


def load_lm(path: Any, config: Any = None, dtype: Any = None) -> Any:
    """Load Moshi's LM; see `moshi_mlx.loading.load_lm`."""
    from .loading import load_lm as _load_lm

    return _load_lm(path, config=config, dtype=dtype)


def load_mimi(path: Any, num_codebooks: int = 8, backend: str = "mlx", **kwargs: Any) -> Any:
    """Load the Mimi codec; see `moshi_mlx.codec.load_mimi` (extra keywords such as `config=`
    are passed through)."""
    from .codec import load_mimi as _load_mimi

    return _load_mimi(path, num_codebooks=num_codebooks, backend=backend, **kwargs)
