"""Offline conversion of Kyutai checkpoints to bf16 / q8 / q4 / mixed MLX checkpoints, and the
quality report. A thin tool over `moshi_mlx.checkpoint` (file names, directory rule, quantization
block, streaming writer); imports moshi_mlx, never imported by it."""
