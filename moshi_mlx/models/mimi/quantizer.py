"""Mimi's split residual vector quantizer (1 semantic codebook + acoustic RVQ).

Reproduces `moshi.quantization.SplitResidualVectorQuantizer` at inference: `rvq_first` and `rvq_rest`
each project the *same* latent with their own 1x1 conv (`input_proj`) and run plain RVQ on it
(`rvq_rest` does not see `rvq_first`'s residual). Decoding sums `output_proj(sum of code vectors)` of
both. Codebook vectors are `embedding_sum / max(cluster_usage, 1e-5)` (the checkpoint stores EMA
statistics); nearest neighbour by Euclidean distance, computed as argmin of `|c|^2 / 2 - x . c`.

Parameter names follow Kyutai's MLX Mimi: `rvq_first.input_proj.weight` `[dim, 1, in]`,
`vq.layers.{i}.codebook.{initialized, embedding_sum, cluster_usage}`. All stored codebooks are
loaded (32 in the release); how many are used is an argument of `encode`, and `decode` uses as many
as it is given. Layout NLC: latents `[B, T, D]`, codes `[B, K, T]`.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

EPSILON = 1e-5


class EuclideanCodebook(nn.Module):
    def __init__(self, dim: int, bins: int):
        super().__init__()
        self.initialized = mx.ones((1,))
        self.embedding_sum = mx.random.normal((bins, dim))
        self.cluster_usage = mx.ones((bins,))
        self._cache: tuple[mx.array, mx.array, mx.array, mx.array] | None = None

    def vectors(self) -> tuple[mx.array, mx.array]:
        """(codebook `[bins, dim]`, half squared norms `[bins]`), cached per parameter arrays.

        `Mimi.prepare()` fills the cache eagerly so compiled steps see constants, not tracers.
        """
        es, cu = self.embedding_sum, self.cluster_usage
        if self._cache is None or self._cache[0] is not es or self._cache[1] is not cu:
            emb = es / mx.maximum(cu, EPSILON)[:, None]
            half_norm = 0.5 * (emb * emb).sum(axis=-1)
            self._cache = (es, cu, emb, half_norm)
        return self._cache[2], self._cache[3]


class VectorQuantization(nn.Module):
    def __init__(self, dim: int, bins: int):
        super().__init__()
        self.codebook = EuclideanCodebook(dim, bins)


class ResidualVectorQuantization(nn.Module):
    def __init__(self, dim: int, bins: int, n_q: int):
        super().__init__()
        self.layers = [VectorQuantization(dim, bins) for _ in range(n_q)]


class ResidualVectorQuantizer(nn.Module):
    """1x1 projections around an RVQ; `input_proj` `[dim, 1, in]`, `output_proj` `[out, 1, dim]`."""

    def __init__(self, dim: int, input_dim: int, output_dim: int, bins: int, n_q: int):
        super().__init__()
        self.input_proj = nn.Linear(input_dim, dim, bias=False)
        self.input_proj.weight = self.input_proj.weight[:, None, :]
        self.output_proj = nn.Linear(dim, output_dim, bias=False)
        self.output_proj.weight = self.output_proj.weight[:, None, :]
        self.vq = ResidualVectorQuantization(dim, bins, n_q)

    @property
    def n_q(self) -> int:
        return len(self.vq.layers)

    def encode(self, x: mx.array, n_q: int) -> mx.array:
        """x `[B, T, in]` -> codes `[B, n_q, T]` (uint32)."""
        residual = x @ self.input_proj.weight[:, 0, :].T
        codes = []
        for layer in self.vq.layers[:n_q]:
            emb, half_norm = layer.codebook.vectors()
            idx = mx.argmin(half_norm - residual @ emb.T, axis=-1)
            residual = residual - emb[idx]
            codes.append(idx)
        return mx.stack(codes, axis=1)

    def decode(self, codes: mx.array) -> mx.array:
        """codes `[B, K, T]` -> `[B, T, out]`."""
        q = None
        for k in range(codes.shape[1]):
            emb, _ = self.vq.layers[k].codebook.vectors()
            v = emb[codes[:, k]]
            q = v if q is None else q + v
        return q @ self.output_proj.weight[:, 0, :].T


class SplitResidualVectorQuantizer(nn.Module):
    def __init__(self, dim: int, input_dim: int, output_dim: int, bins: int, n_q: int):
        super().__init__()
        if n_q < 2:
            raise ValueError(f"quantizer_n_q must be >= 2 (1 semantic + acoustic), got {n_q}")
        self.rvq_first = ResidualVectorQuantizer(dim, input_dim, output_dim, bins, 1)
        self.rvq_rest = ResidualVectorQuantizer(dim, input_dim, output_dim, bins, n_q - 1)

    @property
    def total_codebooks(self) -> int:
        return 1 + self.rvq_rest.n_q

    def encode(self, x: mx.array, n_q: int) -> mx.array:
        """x `[B, T, D]` -> codes `[B, n_q, T]`, 1 <= n_q <= total_codebooks."""
        if not 1 <= n_q <= self.total_codebooks:
            raise ValueError(f"num_codebooks must be in [1, {self.total_codebooks}], got {n_q}")
        codes = self.rvq_first.encode(x, 1)
        if n_q > 1:
            codes = mx.concatenate([codes, self.rvq_rest.encode(x, n_q - 1)], axis=1)
        return codes

    def decode(self, codes: mx.array) -> mx.array:
        """codes `[B, K, T]` -> latent `[B, T, D]`."""
        if not 1 <= codes.shape[1] <= self.total_codebooks:
            raise ValueError(
                f"got {codes.shape[1]} codebooks, expected 1..{self.total_codebooks}"
            )
        out = self.rvq_first.decode(codes[:, :1])
        if codes.shape[1] > 1:
            out = out + self.rvq_rest.decode(codes[:, 1:])
        return out
