"""Prove that `pip install .` finds a wheel for every dependency on the platforms we support.

No CPython 3.14 (or macOS) interpreter runs in CI, so the check asks pip's resolver to install for
another platform: `pip install --dry-run --ignore-installed --only-binary=:all: --python-version V
--platform P --target DIR`. pip evaluates environment markers for the interpreter it runs on, not
for the target, so this script evaluates them itself (`packaging.markers`) for each target: first
on pyproject.toml's dependencies (plus the `dev` extra), then on the `Requires-Dist` of every
package the resolver picked, adding any marker-gated dependency it skipped (e.g. `mlx-metal` on
macOS) and resolving again until nothing new appears.

    python .ci/check_wheels.py [--target 3.14-macos-arm64 ...] [--extra dev]

Exit status 0 when every target resolves, 1 when one does not (its pip error is printed), 2 when
PyPI cannot be reached (nothing was checked).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Runs before the project's venv exists: fall back on the copies vendored in pip.
try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib
try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    name: str
    python: str  # "3.14"
    platforms: tuple[str, ...]  # pip --platform tags, most specific first
    sys_platform: str
    machine: str

    def environment(self, extra: str = "") -> dict[str, str]:
        system = {"darwin": "Darwin", "linux": "Linux"}[self.sys_platform]
        return {
            "python_version": self.python, "python_full_version": f"{self.python}.0",
            "sys_platform": self.sys_platform, "platform_system": system,
            "platform_machine": self.machine, "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "platform_release": "", "platform_version": "", "implementation_version":
            f"{self.python}.0", "extra": extra,
        }


_MAC = ("macosx_14_0_arm64", "macosx_13_0_arm64", "macosx_12_0_arm64", "macosx_11_0_arm64",
        "macosx_10_13_universal2", "macosx_10_9_universal2", "macosx_10_6_universal2")
_LINUX = ("manylinux_2_35_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
          "manylinux2014_x86_64")
TARGETS = {t.name: t for t in [
    *(Target(f"{v}-macos-arm64", v, _MAC, "darwin", "arm64") for v in ("3.12", "3.13", "3.14")),
    *(Target(f"{v}-linux-x86_64", v, _LINUX, "linux", "x86_64") for v in ("3.12", "3.13", "3.14")),
]}


def project_requirements(pyproject: Path, extras: list[str]) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project.get("optional-dependencies", {}).get(extra, [])]
    return reqs


def applicable(req: Requirement, target: Target, extras: frozenset[str] = frozenset()) -> bool:
    """Does `req` apply on `target` (for a package installed with `extras`)?"""
    if req.marker is None:
        return True
    return any(req.marker.evaluate(target.environment(e)) for e in ("", *extras))


def _unmarked(req: Requirement) -> str:
    r = Requirement(str(req))
    r.marker = None
    return str(r)


class Unreachable(Exception):
    """PyPI did not answer: nothing could be checked."""


def resolve(target: Target, reqs: list[Requirement], rounds: int = 4) -> tuple[bool, str]:
    """(ok, summary or pip's error) of resolving `reqs` for `target`."""
    wanted = {_unmarked(r) for r in reqs if applicable(r, target)}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            report = Path(tmp) / "report.json"
            cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                   "--only-binary=:all:", "--python-version", target.python,
                   *(a for p in target.platforms for a in ("--platform", p)),
                   "--target", str(Path(tmp) / "t"), "--report", str(report), "--quiet",
                   "--disable-pip-version-check", *sorted(wanted)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                err = proc.stderr.strip()
                if "NewConnectionError" in err or "Failed to establish" in err or \
                        "Temporary failure in name resolution" in err:
                    raise Unreachable(err.splitlines()[-1])
                lines = [ln for ln in err.splitlines() if ln.startswith("ERROR")]
                return False, "\n".join(lines or err.splitlines()[-3:])
            installed = json.loads(report.read_text())["install"]
            names = {canonicalize_name(i["metadata"]["name"]) for i in installed}
            new = set()
            for item in installed:
                extras = frozenset(item.get("requested_extras") or ())
                for spec in item["metadata"].get("requires_dist") or []:
                    r = Requirement(spec)
                    if canonicalize_name(r.name) not in names and applicable(r, target, extras):
                        new.add(_unmarked(r))
            if not new - wanted:
                pins = sorted(f"{i['metadata']['name']}=={i['metadata']['version']}"
                              for i in installed)
                return True, f"{len(pins)} wheels"
            wanted |= new
    return False, f"no fixed point after {rounds} rounds"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", action="append", choices=sorted(TARGETS),
                    help="check only these (default: all)")
    ap.add_argument("--extra", action="append", default=None, help="extras (default: dev)")
    a = ap.parse_args(argv)
    targets = [TARGETS[n] for n in (a.target or TARGETS)]
    reqs = project_requirements(ROOT / "pyproject.toml", a.extra if a.extra is not None else ["dev"])
    try:
        # Network-bound (one index request per package): all targets at once.
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            results = list(pool.map(lambda t: resolve(t, reqs), targets))
    except Unreachable as e:
        print(f"wheel check skipped: PyPI unreachable ({e})", file=sys.stderr)
        return 2
    ok = True
    for t, (good, msg) in zip(targets, results, strict=True):
        print(f"{t.name:>18}: {'ok' if good else 'FAILED'} ({msg})" if good else
              f"{t.name:>18}: FAILED\n    " + msg.replace("\n", "\n    "))
        ok &= good
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
