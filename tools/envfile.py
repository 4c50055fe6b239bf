"""Write environment.yml from pyproject.toml and uv.lock, so conda users get the locked versions.

    python tools/envfile.py          # rewrite environment.yml (run by `make lock`)
    python tools/envfile.py --check  # exit 1 if environment.yml is stale

Every direct dependency (and each extra's) is pinned to the version uv.lock resolved; the
Python range is pyproject's ``requires-python``.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11 is not supported
    raise SystemExit("Python >= 3.11 is required")

ROOT = Path(__file__).resolve().parents[1]
HEADER = """# Conda environment for vlmbook, generated from pyproject.toml and uv.lock by
# `python tools/envfile.py` (run by `make lock`); tests/test_packaging.py checks it is current.
# Create with `conda env create -f environment.yml`.
"""


def _name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def locked_versions(lock_text: str) -> dict[str, str]:
    """Package name -> version in uv.lock (the single version every supported Python gets)."""
    out: dict[str, str] = {}
    for pkg in tomllib.loads(lock_text)["package"]:
        out.setdefault(pkg["name"].lower(), pkg.get("version", ""))
    return out


def render(pyproject_text: str, lock_text: str) -> str:
    """The environment.yml text for these two files."""
    project = tomllib.loads(pyproject_text)["project"]
    versions = locked_versions(lock_text)
    lo, hi = re.fullmatch(r">=([\d.]+),<([\d.]+)", project["requires-python"].replace(" ", "")).groups()
    lines = [HEADER.rstrip("\n"), "name: vlmbook", "channels:", "  - conda-forge", "dependencies:",
             f"  - python>={lo},<{hi}", "  - pip", "  - pip:"]
    groups = [("", project["dependencies"])] + [
        (f"extras: {k}", v) for k, v in project.get("optional-dependencies", {}).items()]
    seen: set[str] = set()
    for title, reqs in groups:
        if title:
            lines.append(f"      # {title}")
        for req in reqs:
            name = _name(req)
            if name in seen:
                continue
            seen.add(name)
            if name not in versions:
                raise SystemExit(f"{name} is in pyproject.toml but not in uv.lock: run `make lock`")
            lines.append(f"      - {name}=={versions[name]}")
    lines += ["      # the package itself, editable", "      - -e ."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render((ROOT / "pyproject.toml").read_text(), (ROOT / "uv.lock").read_text())
    target = ROOT / "environment.yml"
    if "--check" in argv:
        if target.read_text() != text:
            print("environment.yml is stale: run `python tools/envfile.py`", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
