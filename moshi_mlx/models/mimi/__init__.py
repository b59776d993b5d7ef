"""Mimi, Kyutai's streaming speech codec, in MLX (see `mimi.py`; codec API in `moshi_mlx.codec`)."""

from .mimi import Mimi, MimiState

__all__ = ["Mimi", "MimiState"]
