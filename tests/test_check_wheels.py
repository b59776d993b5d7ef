"""`.ci/check_wheels.py` (the resolver check for other platforms): the requirement set it resolves
for each target, from pyproject.toml's markers (offline; the pip run itself is the CI step)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cw():
    spec = importlib.util.spec_from_file_location("check_wheels", ROOT / ".ci" / "check_wheels.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["check_wheels"] = mod  # dataclasses look their module up while it executes
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules["check_wheels"]


def _names(cw, target: str) -> set[str]:
    reqs = cw.project_requirements(ROOT / "pyproject.toml", ["dev"])
    return {str(r.name) + "".join(f"[{e}]" for e in sorted(r.extras))
            for r in reqs if cw.applicable(r, cw.TARGETS[target])}


def test_targets_get_their_own_requirement_sets(cw):
    mac14, mac13 = _names(cw, "3.14-macos-arm64"), _names(cw, "3.13-macos-arm64")
    linux14, linux12 = _names(cw, "3.14-linux-x86_64"), _names(cw, "3.12-linux-x86_64")
    # Metal MLX on macOS, the CPU build elsewhere; evaluated for the target, not for this machine
    assert "mlx" in mac14 and "mlx[cpu]" not in mac14
    assert "mlx[cpu]" in linux14 and "mlx" not in linux14
    # rustymimi only where it has wheels (CPython <= 3.13)
    assert "rustymimi" in mac13 and "rustymimi" in linux12
    assert "rustymimi" not in mac14 and "rustymimi" not in linux14
    assert mac14 - {"mlx"} == linux14 - {"mlx[cpu]"}
    assert {"pytest", "sentencepiece", "numpy"} <= mac14


def test_dependency_markers_are_evaluated_for_the_target(cw):
    from packaging.requirements import Requirement

    metal = Requirement('mlx-metal==0.32.4; platform_system == "Darwin"')
    assert cw.applicable(metal, cw.TARGETS["3.14-macos-arm64"])
    assert not cw.applicable(metal, cw.TARGETS["3.14-linux-x86_64"])
    extra = Requirement('mlx-cuda==0.32.4; extra == "cuda" and sys_platform == "linux"')
    assert not cw.applicable(extra, cw.TARGETS["3.12-linux-x86_64"])
    assert cw.applicable(extra, cw.TARGETS["3.12-linux-x86_64"], frozenset({"cuda"}))
