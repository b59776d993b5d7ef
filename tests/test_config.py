"""Config dataclasses: Kyutai's config.json form round-trips, derived sizes match the real model,
bad values are rejected with the field's name."""

import json

import pytest

from moshi_mlx.config import LmConfig, MimiConfig, mimi_202407, moshi_v0_1

# Kyutai's `_lm_kwargs` for moshiko/moshika 2024-09 (`moshi/models/loaders.py`; docs/checkpoints.md).
KYUTAI_LM_KWARGS = {
    "dim": 4096,
    "text_card": 32000,
    "existing_text_padding_id": 3,
    "n_q": 16,
    "dep_q": 8,
    "card": 2048,
    "num_heads": 32,
    "num_layers": 32,
    "hidden_scale": 4.125,
    "causal": True,
    "layer_scale": None,
    "context": 3000,
    "max_period": 10000,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "depformer_dim": 1024,
    "depformer_dim_feedforward": int(4.125 * 1024),
    "depformer_num_heads": 16,
    "depformer_num_layers": 6,
    "depformer_layer_scale": None,
    "depformer_multi_linear": True,
    "depformer_context": 8,
    "depformer_max_period": 10000,
    "depformer_gating": "silu",
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "delays": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
}


def test_kyutai_kwargs_equal_preset():
    cfg = LmConfig.from_dict(KYUTAI_LM_KWARGS)
    assert cfg == moshi_v0_1()
    # Derived sizes of the real checkpoint (docs/checkpoints.md).
    assert cfg.dim_feedforward == 16896
    assert cfg.dim_feedforward * 2 // 3 == 11264
    assert cfg.dep_dim_feedforward == 4224
    assert cfg.head_dim == 128
    assert cfg.num_codebooks == 17
    assert cfg.max_delay == 1
    assert (cfg.text_initial_token, cfg.audio_initial_token) == (32000, 2048)
    assert cfg.depformer_num_weights == 8


def test_round_trip_keeps_hub_keys_and_quantization(tmp_path):
    d = dict(KYUTAI_LM_KWARGS, moshi_name="model.q4.safetensors", model_type="moshi")
    d["quantization"] = {"group_size": 32, "bits": 4, "depformer": {"group_size": 64, "bits": 8}}
    cfg = LmConfig.from_dict(d)
    assert cfg.extra == {"moshi_name": "model.q4.safetensors", "model_type": "moshi"}
    out = cfg.to_dict()
    # Every key given comes back unchanged; defaults are written out explicitly.
    assert {k: out[k] for k in d} == d
    assert set(out) - set(d) == {
        "existing_text_end_padding_id",
        "depformer_weights_per_step_schedule",
    }
    p = tmp_path / "config.json"
    p.write_text(json.dumps(out))
    again = LmConfig.from_file(p)
    assert again == cfg and again.quantization == d["quantization"]


def test_schedule_weight_index():
    cfg = LmConfig(depformer_weights_per_step_schedule=(0, 1, 1, 2, 2, 2, 3, 3))
    assert cfg.depformer_num_weights == 4
    assert [cfg.depformer_weight_index(k) for k in range(8)] == [0, 1, 1, 2, 2, 2, 3, 3]
    assert LmConfig(depformer_weights_per_step=False).depformer_weight_index(5) == 0


@pytest.mark.parametrize(
    "field,value",
    [
        ("dim", 0),
        ("num_heads", 3),
        ("dep_q", 17),
        ("norm", "batch_norm"),
        ("gating", "relu6"),
        ("delays", (0, 1)),
        ("context", 0),
        ("existing_text_padding_id", 32000),
        ("depformer_weights_per_step_schedule", (0, 1)),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        LmConfig(**{field: value})


def test_unknown_key_is_rejected():
    with pytest.raises(ValueError, match="not_a_field"):
        LmConfig.from_dict({"not_a_field": 1})


def test_mimi_sizes():
    cfg = mimi_202407(32)
    assert cfg.hop_length == 960
    assert cfg.encoder_frame_rate == 25.0
    assert cfg.frame_size == 1920
    assert cfg.downsample_stride == 2
    assert MimiConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="channels"):
        MimiConfig(channels=2)
    with pytest.raises(ValueError, match="unknown Mimi config keys"):
        MimiConfig.from_dict({"bogus": 1})


def test_inert_kyutai_keys_load_and_active_ones_are_refused():
    cfg = LmConfig.from_dict(
        dict(
            KYUTAI_LM_KWARGS,
            text_card_out=None,
            extra_heads_num_heads=0,
            extra_heads_dim=6,
            demux_second_stream=False,
        )
    )
    assert cfg == moshi_v0_1()
    with pytest.raises(ValueError, match="norm_emb=True is not supported"):
        LmConfig.from_dict(dict(KYUTAI_LM_KWARGS, norm_emb=True))


def test_kyutai_config_file_with_depformer_causal_loads(tmp_path):
    """Kyutai's own `configs/moshi_7b_202409.json` is `_lm_kwargs` plus `"depformer_causal": true`
    (PT's loader drops it, Kyutai's MLX reads it): it must give the preset."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(KYUTAI_LM_KWARGS, depformer_causal=True)))
    cfg = LmConfig.from_file(path)
    assert cfg == moshi_v0_1() and cfg.dep_dim_feedforward == 4224
    with pytest.raises(ValueError, match="depformer_causal=False is not supported"):
        LmConfig.from_dict(dict(KYUTAI_LM_KWARGS, depformer_causal=False))
