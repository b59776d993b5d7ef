"""Pure checkpoint key maps (no I/O). `lm`: Moshi's LM (PyTorch release -> Kyutai MLX names)."""

from .lm import detect_format, map_lm_torch

__all__ = ["detect_format", "map_lm_torch"]
