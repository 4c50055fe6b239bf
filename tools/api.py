"""Regenerate book/api.md from the package layout: one automodule per module, grouped by chapter.

    python tools/api.py          # rewrite book/api.md
"""
import pkgutil
from pathlib import Path

import vlmbook

GROUPS = [
    ("Shared pieces", ["vlmbook.config", "vlmbook.device", "vlmbook.hub", "vlmbook.loop", "vlmbook.plot", "vlmbook.nb", "vlmbook.cli"]),
    ("Data", ["vlmbook.data"]),
    ("Chapter 1 — `vlmbook.rd`", ["vlmbook.rd"]),
    ("Chapter 2 — `vlmbook.vq`", ["vlmbook.vq"]),
    ("Chapter 3 — `vlmbook.codec`", ["vlmbook.codec"]),
    ("Chapter 4 — `vlmbook.vision` and `vlmbook.resample`", ["vlmbook.vision", "vlmbook.resample"]),
    ("Chapter 5 — `vlmbook.fusion`", ["vlmbook.fusion"]),
    ("Training stages — `vlmbook.train` (for the planned Chapter 6)", ["vlmbook.train"]),
    ("Chapter 7 — `vlmbook.eval`", ["vlmbook.eval"]),
    ("Benchmarks — `vlmbook.bench`", ["vlmbook.bench"]),
    ("Chapter figures — `vlmbook.plot`", ["vlmbook.plot.*"]),
]
root = Path(vlmbook.__file__).parent


def modules(name: str) -> list[str]:
    if name == "vlmbook.plot.*":
        return [f"vlmbook.plot.{m.name}" for m in pkgutil.iter_modules([str(root / "plot")])]
    path = root / Path(*name.split(".")[1:])
    if path.with_suffix(".py").is_file():
        return [name]
    if not path.is_dir():
        return []
    subs = [f"{name}.{m.name}" for m in pkgutil.iter_modules([str(path)]) if not m.name.startswith("_") and m.name != "__main__"]
    return subs or [name]


out = ["# API reference", "", "Generated from the docstrings of the `vlmbook` package. Each entry states tensor shapes and the",
       "section of the book that teaches it.", ""]
for title, names in GROUPS:
    mods = [m for n in names for m in (modules(n) if n != "vlmbook.plot" else ["vlmbook.plot"])]
    if name_list := [m for m in mods if m != "vlmbook.bench"] + (["vlmbook.bench"] if "vlmbook.bench" in names else []):
        out += [f"## {title}", "", "```{eval-rst}"]
        for m in dict.fromkeys(name_list):
            out += [f".. automodule:: {m}", "   :members:", ""]
        out += ["```", ""]
ROOT = Path(__file__).resolve().parents[1]


def render() -> str:
    return "\n".join(out)


if __name__ == "__main__":
    (ROOT / "book" / "api.md").write_text(render())
