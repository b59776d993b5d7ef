"""Offline conversion of Kyutai checkpoints to bf16 / q8 / q4 / mixed MLX checkpoints, and the
quality report. Imports moshi_mlx; never imported by it."""
