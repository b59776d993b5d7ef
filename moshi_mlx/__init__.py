"""moshi_mlx: Kyutai's Moshi speech model (Helium LM + depth transformer + Mimi codec) in MLX.

The public entry points are imported lazily so that `import moshi_mlx` stays cheap and has no
side effects (no MLX graph, no hub access):

- `load_lm(path, config=None, dtype=None)`: the multi-stream LM from a checkpoint file or directory.
- `load_mimi(path, num_codebooks=8, backend="mlx")`: the Mimi codec (MLX or rustymimi backend).
"""

from __future__ import annotations

from typing import Any

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
