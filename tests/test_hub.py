"""hub.py: names -> repos, local dirs, a fake offline HF cache, and the user-facing errors."""

from __future__ import annotations

import json

import pytest

from moshi_mlx import hub
from moshi_mlx.checkpoint import MIMI_FILE, TOKENIZER_FILE
from tests.helpers import make_cached_repo


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


def test_names_map_to_kyutai_repos():
    assert hub.repo_for("moshiko", "q4") == "kyutai/moshiko-mlx-q4"
    assert hub.repo_for("moshika", "bf16") == "kyutai/moshika-mlx-bf16"
    assert hub.parse_model_name("moshika-q8") == ("moshika", "q8")
    assert hub.parse_model_name("moshiko:bf16") == ("moshiko", "bf16")
    assert hub.parse_model_name("moshiko", "q8") == ("moshiko", "q8")
    assert hub.parse_model_name("moshika") == ("moshika", "q4")
    assert hub.DEFAULT_REPO == "kyutai/moshiko-mlx-q4"


def test_unknown_name_lists_known_ones():
    with pytest.raises(hub.HubError) as e:
        hub.parse_model_name("moshiki")
    assert "moshiki" in str(e.value) and "moshiko" in str(e.value) and "moshika" in str(e.value)
    with pytest.raises(hub.HubError, match="q3"):
        hub.resolve(model="moshiko", quant="q3")


def test_name_and_quant_that_disagree_are_refused():
    """`--model moshiko-q8 --quant q4` used to fetch q8 silently (5 GB the user did not ask for)."""
    with pytest.raises(hub.HubError, match="disagree"):
        hub.parse_model_name("moshiko-q8", "q4")
    assert hub.parse_model_name("moshiko-q8", "q8") == ("moshiko", "q8")


def test_offline_cached_default_repo_resolves(hf_cache):
    snap = make_cached_repo(
        hf_cache,
        "kyutai/moshiko-mlx-q4",
        {"model.q4.safetensors": b"lm", MIMI_FILE: b"mimi", TOKENIZER_FILE: b"spm"},
    )
    files = hub.resolve()
    assert files.lm_weight == snap / "model.q4.safetensors"
    assert files.mimi_weight.read_bytes() == b"mimi"
    assert files.tokenizer.read_bytes() == b"spm"
    assert (files.name, files.precision, files.source) == ("moshiko", "q4", "kyutai/moshiko-mlx-q4")
    assert files.config is None and files.config_dict() == {}


def test_offline_uncached_message_says_what_and_how(hf_cache):
    make_cached_repo(hf_cache, "kyutai/moshika-mlx-q8", {TOKENIZER_FILE: b"spm"})
    with pytest.raises(hub.HubError) as e:
        hub.resolve(model="moshika", quant="q8")
    msg = str(e.value)
    assert "kyutai/moshika-mlx-q8" in msg and "HF_HUB_OFFLINE" in msg
    assert "model.q8.safetensors (8.17 GB)" in msg and MIMI_FILE in msg
    assert TOKENIZER_FILE not in msg  # already cached
    assert "about 8.55 GB" in msg
    assert "hf download kyutai/moshika-mlx-q8 model.q8.safetensors" in msg


def test_custom_repo_uses_its_config_names(hf_cache):
    cfg = {
        "moshi_name": "lm.safetensors",
        "mimi_name": "codec.safetensors",
        "tokenizer_name": "spm.model",
        "quantization": {"group_size": 32, "bits": 4},
    }
    snap = make_cached_repo(
        hf_cache,
        "me/tiny",
        {
            "config.json": json.dumps(cfg).encode(),
            "lm.safetensors": b"",
            "codec.safetensors": b"",
            "spm.model": b"",
        },
    )
    files = hub.resolve(hf_repo="me/tiny")
    assert files.lm_weight == snap / "lm.safetensors" and files.config == snap / "config.json"
    assert files.precision == "q4" and files.config_dict()["moshi_name"] == "lm.safetensors"


def test_model_dir_and_explicit_overrides(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    for f in ("model.q8.safetensors", MIMI_FILE, TOKENIZER_FILE):
        (d / f).write_bytes(b"x")
    files = hub.resolve(model_dir=d)
    assert files.lm_weight == d / "model.q8.safetensors" and files.precision == "q8"
    other = tmp_path / "other.model"
    other.write_bytes(b"y")
    files = hub.resolve(model_dir=d, tokenizer=other)
    assert files.tokenizer == other and files.mimi_weight == d / MIMI_FILE
    lm = d / "model.q8.safetensors"
    files = hub.resolve(lm_weight=lm, mimi_weight=d / MIMI_FILE, tokenizer=other)
    assert (files.lm_weight, files.tokenizer) == (lm, other)


def test_model_dir_errors(tmp_path):
    with pytest.raises(hub.HubError, match="not a directory"):
        hub.resolve(model_dir=tmp_path / "nope")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(hub.HubError, match="lacks .*tokenizer-e351c8d8"):
        hub.resolve(model_dir=tmp_path)
    with pytest.raises(hub.HubError, match="no such file"):
        hub.resolve(lm_weight=tmp_path / "missing.safetensors")
    with pytest.raises(hub.HubError, match="choose one"):
        hub.resolve(model_dir=tmp_path, model="moshiko")
    with pytest.raises(hub.HubError, match="--quant"):
        hub.resolve(hf_repo="kyutai/moshiko-mlx-q8", quant="q4")


@pytest.mark.parametrize("exc", [OSError("Connection reset by peer"), KeyboardInterrupt()])
def test_interrupted_download_is_one_clear_error(hf_cache, monkeypatch, exc):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    # A partial blob from an earlier interrupted download must not count as cached.
    root = hf_cache / "models--kyutai--moshiko-mlx-q4" / "blobs"
    root.mkdir(parents=True)
    (root / "deadbeef.incomplete").write_bytes(b"partial")

    def broken(repo, filename, **kw):
        raise exc

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", broken)
    with pytest.raises(hub.HubError) as e:
        hub.resolve()
    msg = str(e.value)
    assert "kyutai/moshiko-mlx-q4/model.q4.safetensors" in msg and "again to resume" in msg


def test_no_network_and_uncached(hf_cache, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE")

    def unreachable(repo, filename, **kw):
        raise LocalEntryNotFoundError("Connection error, and the file is not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(hub.HubError, match="cannot be reached: kyutai/moshiko-mlx-bf16"):
        hub.resolve(model="moshiko-bf16")


def test_unreachable_hub_is_tried_once(hf_cache, monkeypatch):
    """Each unreachable try costs ~25 s of huggingface_hub retries: the first one decides, and the
    message still lists every missing file."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE")
    tried = []

    def unreachable(repo, filename, **kw):
        tried.append(filename)
        raise LocalEntryNotFoundError("Connection error, and the file is not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(hub.HubError) as e:
        hub.resolve(model="moshika-q8")
    assert tried == ["model.q8.safetensors"]
    assert all(f in str(e.value) for f in ("model.q8.safetensors", MIMI_FILE, TOKENIZER_FILE))


def test_online_repo_without_config_downloads_default_names(hf_cache, monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE")
    fetched = []

    def fake_download(repo, filename, **kw):
        if filename == "config.json":
            raise EntryNotFoundError("404")
        fetched.append(filename)
        path = tmp_path / "dl" / filename
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    files = hub.resolve(hf_repo="kyutai/moshiko-pytorch-bf16")
    assert fetched == ["model.safetensors", MIMI_FILE, TOKENIZER_FILE]
    assert files.config is None and files.lm_weight.name == "model.safetensors"


@pytest.mark.parametrize(
    "quant,expected",
    [
        ({"group_size": 64, "bits": 8}, "q8"),
        ({"group_size": 32, "bits": 4}, "q4"),
        (
            {
                "group_size": 32,
                "bits": 4,
                "depformer.slices.0.linear_out": {"group_size": 64, "bits": 8},
            },
            "mixed",
        ),
        ({"group_size": 64, "bits": 8, "text_emb": False}, "mixed"),
    ],
)
def test_precision_label_from_quantization_block(quant, expected):
    assert hub._precision({"quantization": quant}, "model.safetensors") == expected
