"""Pytest fixtures shared by the app's tests (import them into a test module to use them).

`tiny_repos(quant)` writes a tiny random Moshi repo once per session and precision (seed 0) and
returns its directory; see `moshi_mlx.testing.tiny_repo`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .tiny_repo import write_tiny_repo


@pytest.fixture(scope="session")
def tiny_repos(tmp_path_factory) -> Callable[[str], Path]:
    made: dict[str, Path] = {}

    def get(quant: str = "bf16") -> Path:
        if quant not in made:
            made[quant] = write_tiny_repo(tmp_path_factory.mktemp(f"tiny_{quant}"), quant, seed=0)
        return made[quant]

    return get


@pytest.fixture(scope="session")
def tiny_repo(tiny_repos) -> Path:
    """The tiny bf16 repo."""
    return tiny_repos("bf16")


@pytest.fixture(scope="session")
def tiny_repo_full_mimi(tmp_path_factory) -> Path:
    """Tiny LM (2048 audio bins) with a real-size random Mimi: both Mimi backends can load it."""
    return write_tiny_repo(tmp_path_factory.mktemp("tiny_full_mimi"), "bf16", seed=0,
                           full_mimi=True)


@pytest.fixture(scope="session")
def tiny_stt_repo(tmp_path_factory) -> Path:
    """A tiny random speech-to-text repo with VAD heads (`moshi_mlx.testing.tiny_stt`)."""
    from .tiny_stt import write_tiny_stt_repo

    return write_tiny_stt_repo(tmp_path_factory.mktemp("tiny_stt"), "bf16", seed=0)
