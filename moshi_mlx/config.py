"""Model configurations as plain dataclasses (no MLX import).

`LmConfig.from_dict` reads Kyutai's `config.json` form, i.e. the `lm_kwargs` dict that
`moshi.models.loaders.get_moshi_lm` takes (keys `dim`, `num_heads`, `depformer_dim`, `delays`...).
Hub-level keys that Kyutai's `config.json` files carry next to the LM kwargs (`moshi_name`,
`mimi_name`, `tokenizer_name`, `model_type`, `lm_gen_config`, ...) are kept in `extra` rather than
rejected, and our own `"quantization"` block (mlx-lm convention) is kept in `quantization`.

Every value is validated at construction; a bad value raises `ValueError` naming the field.
Presets are built with `dataclasses.replace` from one base, never copied.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What `moshi_mlx.nn.transformer` implements (it validates its own config against these too).
NORMS = ("rms_norm_f32", "rms_norm", "layer_norm", "layer_norm_f32")
GATINGS = ("silu", "gelu", "none")
POS_EMBS = ("rope", "none")

# Keys of Kyutai's config.json that describe the repository or generation, not the network.
HUB_KEYS = (
    "moshi_name",
    "mimi_name",
    "mimi_config_name",
    "tokenizer_name",
    "lora_name",
    "model_type",
    "lm_gen_config",
    "tts_config",
    "stt_config",
    "model_id",
    "dtype",
    "mimi",  # our tiny/test repos: the small Mimi's MimiConfig fields
)


# LM kwargs of Kyutai's checkpoints that this port does not implement (Moshi, STT and tts-1.6b are
# implemented: dep_q = 0, extra heads, demux, low-rank embeddings, conditioners, cross-attention),
# with the value that makes them inert. A config carrying the inert value loads; any other value is refused clearly
# instead of silently building a different network.
INERT_LM_KEYS: dict[str, Any] = {
    "norm_emb": False,
    "bias_proj": False,
    "depformer_norm": None,
    # In Kyutai's own config.json files (moshi_7b_202409.json, ...): PT's loader drops it, Kyutai's
    # MLX reads it; the depformer is causal either way (one position per codebook, in order).
    "depformer_causal": True,
}


_TTS_FIELDS = ("demux_second_stream", "depformer_low_rank_embeddings", "cross_attention",
               "text_card_out")


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"invalid config field {name!r}: {msg}")


@dataclass(frozen=True)
class LmConfig:
    """Moshi's multi-stream LM: Helium temporal transformer + depth transformer.

    Field names and defaults follow Kyutai's `config.json` (`moshi_7b_202409.json`).
    """

    dim: int = 4096
    text_card: int = 32000
    existing_text_padding_id: int = 3
    existing_text_end_padding_id: int = 0
    n_q: int = 16
    dep_q: int = 8
    card: int = 2048
    num_heads: int = 32
    num_layers: int = 32
    hidden_scale: float = 4.125
    causal: bool = True
    layer_scale: float | None = None
    context: int | None = 3000
    max_period: float = 10000
    gating: str = "silu"
    norm: str = "rms_norm_f32"
    positional_embedding: str = "rope"
    depformer_dim: int = 1024
    depformer_dim_feedforward: int | None = int(4.125 * 1024)
    depformer_num_heads: int = 16
    depformer_num_layers: int = 6
    depformer_layer_scale: float | None = None
    depformer_multi_linear: bool = True
    depformer_context: int | None = 8
    depformer_max_period: float = 10000
    depformer_gating: str = "silu"
    depformer_pos_emb: str = "none"
    depformer_weights_per_step: bool = True
    depformer_weights_per_step_schedule: tuple[int, ...] | None = None
    delays: tuple[int, ...] = (0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1)
    # TTS features (see moshi_mlx/nn/factored_embedding.py, cross_attention.py, conditioners.py);
    # written by `to_dict` only when set, so Moshi configs round-trip unchanged.
    demux_second_stream: bool = False  # PT's loader also accepts `demux_second_text_stream`
    depformer_low_rank_embeddings: int | None = None
    cross_attention: bool = False
    # Rows of the text head when they differ from the text input ids (None: text_card); reported
    # set in kyutai/tts-0.75b-en-public's config.json (docs/tts.md).
    text_card_out: int | None = None
    # Extra heads (Kyutai's STT checkpoints: semantic VAD): Linear(dim, extra_heads_dim) each,
    # on the temporal transformer's output after out_norm (moshi_mlx.stt reads them).
    extra_heads_num_heads: int = 0
    extra_heads_dim: int = 6
    # Hub-level keys (see HUB_KEYS) and the mlx-lm style "quantization" block, kept verbatim.
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    quantization: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("dim", "num_heads", "num_layers", "text_card", "card", "n_q"):
            _check(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
        _check(self.dim % self.num_heads == 0, "num_heads", f"must divide dim={self.dim}")
        _check(0 <= self.dep_q <= self.n_q, "dep_q", f"must be in [0, n_q={self.n_q}]")
        _check(self.hidden_scale > 0, "hidden_scale", "must be > 0")
        _check(self.norm in NORMS, "norm", f"must be one of {NORMS}, got {self.norm!r}")
        _check(self.gating in GATINGS, "gating", f"must be one of {GATINGS}, got {self.gating!r}")
        _check(
            self.depformer_gating in GATINGS,
            "depformer_gating",
            f"must be one of {GATINGS}, got {self.depformer_gating!r}",
        )
        _check(
            self.positional_embedding in POS_EMBS,
            "positional_embedding",
            f"must be one of {POS_EMBS}, got {self.positional_embedding!r}",
        )
        _check(
            self.depformer_pos_emb in POS_EMBS,
            "depformer_pos_emb",
            f"must be one of {POS_EMBS}, got {self.depformer_pos_emb!r}",
        )
        _check(
            len(self.delays) == self.n_q + 1,
            "delays",
            f"needs n_q + 1 = {self.n_q + 1} entries (text first), got {len(self.delays)}",
        )
        _check(all(d >= 0 for d in self.delays), "delays", "must be >= 0")
        _check(self.context is None or self.context > 0, "context", "must be > 0 or None")
        _check(self.extra_heads_num_heads >= 0, "extra_heads_num_heads", "must be >= 0")
        _check(self.extra_heads_dim > 0, "extra_heads_dim", "must be > 0")
        if self.dep_q > 0:
            _check(self.depformer_dim > 0, "depformer_dim", "must be > 0")
            _check(
                self.depformer_dim % self.depformer_num_heads == 0,
                "depformer_num_heads",
                f"must divide depformer_dim={self.depformer_dim}",
            )
        _check(self.text_card_out is None or self.text_card_out > 0, "text_card_out", "must be > 0")
        low_rank = self.depformer_low_rank_embeddings
        _check(low_rank is None or low_rank > 0, "depformer_low_rank_embeddings", "must be > 0")
        sched = self.depformer_weights_per_step_schedule
        if sched is not None:
            _check(
                len(sched) == self.dep_q,
                "depformer_weights_per_step_schedule",
                f"needs dep_q = {self.dep_q} entries",
            )
        _check(
            0 <= self.existing_text_padding_id < self.text_card,
            "existing_text_padding_id",
            f"must be a text id in [0, {self.text_card})",
        )

    # Derived sizes ---------------------------------------------------------------------------
    @property
    def num_codebooks(self) -> int:
        """Streams in the temporal input: text + n_q audio."""
        return self.n_q + 1

    @property
    def text_out_card(self) -> int:
        """Logits of the text head (`text_card_out`, else `text_card`)."""
        return self.text_card if self.text_card_out is None else self.text_card_out

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def dim_feedforward(self) -> int:
        return int(self.hidden_scale * self.dim)

    @property
    def dep_dim_feedforward(self) -> int:
        if self.depformer_dim_feedforward is None:
            return int(self.hidden_scale * self.depformer_dim)
        return int(self.depformer_dim_feedforward)

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    @property
    def text_initial_token(self) -> int:
        """Input-only token fed as text at step 0 (= text_card)."""
        return self.text_card

    @property
    def audio_initial_token(self) -> int:
        """Input-only token fed as audio before the delays allow real codes (= card)."""
        return self.card

    @property
    def depformer_num_weights(self) -> int:
        """Number of distinct per-step weight sets in the depformer."""
        if not self.depformer_weights_per_step:
            return 1
        if self.depformer_weights_per_step_schedule is not None:
            return max(self.depformer_weights_per_step_schedule) + 1
        return self.dep_q

    def depformer_weight_index(self, step: int) -> int:
        if not self.depformer_weights_per_step:
            return 0
        if self.depformer_weights_per_step_schedule is not None:
            return self.depformer_weights_per_step_schedule[step]
        return step

    # Serialization ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LmConfig:
        """Build from Kyutai's `config.json` / `lm_kwargs` form; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "quantization"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = dict(d.get("extra", {}))
        unknown = []
        for k, v in d.items():
            if k in ("extra",):
                continue
            if k == "quantization":
                kwargs["quantization"] = v
            elif k == "demux_second_text_stream":  # PT's name for the same flag
                kwargs["demux_second_stream"] = v
            elif k in names:
                if isinstance(v, list):
                    v = tuple(v)
                kwargs[k] = v
            elif k in HUB_KEYS or k.startswith(("conditioners", "fuser")):
                extra[k] = v  # conditioners/fuser: read by models/conditioning.py (TTS)
            elif k in INERT_LM_KEYS:
                if v != INERT_LM_KEYS[k]:
                    raise ValueError(
                        f"config key {k}={v!r} is not supported by moshi_mlx (it implements Moshi, "
                        f"the STT models and tts-1.6b; this looks like another checkpoint, e.g. "
                        f"Hibiki)"
                    )
            else:
                unknown.append(k)
        if unknown:
            raise ValueError(f"unknown LM config keys: {sorted(unknown)}")
        return cls(extra=extra, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Inverse of `from_dict`: Kyutai's key names, plus extra and quantization blocks."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("extra", "quantization"):
                continue
            if f.name.startswith("extra_heads_") and self.extra_heads_num_heads == 0:
                continue  # Moshi's config.json stays as it was (Kyutai's omit them too)
            v = getattr(self, f.name)
            if f.name in _TTS_FIELDS and v == f.default:
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else v
        out.update(self.extra)
        if self.quantization is not None:
            out["quantization"] = self.quantization
        return out

    @classmethod
    def from_file(cls, path: str | Path) -> LmConfig:
        with open(path) as f:
            return cls.from_dict(json.load(f))


@dataclass(frozen=True)
class MimiConfig:
    """Mimi codec (SEANet + transformers + split RVQ); defaults are the released 24 kHz model."""

    sample_rate: int = 24000
    frame_rate: float = 12.5
    channels: int = 1
    # SEANet
    dimension: int = 512
    n_filters: int = 64
    ratios: tuple[int, ...] = (8, 6, 5, 4)
    kernel_size: int = 7
    residual_kernel_size: int = 3
    last_kernel_size: int = 3
    n_residual_layers: int = 1
    dilation_base: int = 2
    compress: int = 2
    # transformer (encoder and decoder)
    transformer_num_heads: int = 8
    transformer_num_layers: int = 8
    transformer_dim_feedforward: int = 2048
    transformer_context: int = 250
    transformer_max_period: float = 10000
    transformer_layer_scale: float | None = 0.01
    # quantizer
    quantizer_dimension: int = 256
    quantizer_n_q: int = 32
    quantizer_bins: int = 2048

    def __post_init__(self) -> None:
        for name in ("sample_rate", "dimension", "n_filters", "quantizer_n_q", "quantizer_bins"):
            _check(getattr(self, name) > 0, name, "must be > 0")
        _check(self.frame_rate > 0, "frame_rate", "must be > 0")
        _check(self.channels == 1, "channels", "only mono is supported")
        _check(len(self.ratios) > 0, "ratios", "needs at least one ratio")
        _check(
            self.dimension % self.transformer_num_heads == 0,
            "transformer_num_heads",
            f"must divide dimension={self.dimension}",
        )
        hop = 1
        for r in self.ratios:
            hop *= r
        enc_rate = self.sample_rate / hop
        _check(
            enc_rate % self.frame_rate == 0
            or abs(enc_rate / self.frame_rate - round(enc_rate / self.frame_rate)) < 1e-9,
            "frame_rate",
            f"encoder rate {enc_rate} Hz must be a multiple of frame_rate {self.frame_rate}",
        )

    @property
    def hop_length(self) -> int:
        hop = 1
        for r in self.ratios:
            hop *= r
        return hop

    @property
    def encoder_frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def frame_size(self) -> int:
        """Samples per codec frame: 24000 / 12.5 = 1920 for the real model."""
        return int(round(self.sample_rate / self.frame_rate))

    @property
    def downsample_stride(self) -> int:
        return int(round(self.encoder_frame_rate / self.frame_rate))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MimiConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown Mimi config keys: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: list(getattr(self, f.name))
            if isinstance(getattr(self, f.name), tuple)
            else getattr(self, f.name)
            for f in dataclasses.fields(self)
        }


def moshi_v0_1() -> LmConfig:
    """Moshiko / Moshika v0.1 (2024-09): the 7B LM; both voices share the architecture."""
    return LmConfig()


def mimi_202407(num_codebooks: int = 32) -> MimiConfig:
    """The released Mimi (`tokenizer-e351c8d8-checkpoint125.safetensors`)."""
    return dataclasses.replace(MimiConfig(), quantizer_n_q=num_codebooks)


PRESETS = {"moshiko_v0_1": moshi_v0_1, "moshika_v0_1": moshi_v0_1}
