"""Notebook maintenance: execute chapters in place, check jupytext pairs, regenerate the README table.

    python tools/nb.py execute [NOTEBOOK ...]   # run chapters, store outputs and measured runtime
    python tools/nb.py check                    # fail if any .ipynb/.py pair is out of sync
    python tools/nb.py readme                   # rewrite README's chapter table from the notebooks
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
FMT = "py:percent"
BUDGET_S = 180
TABLE_START, TABLE_END = "<!-- chapters:start -->", "<!-- chapters:end -->"


def chapters() -> list[Path]:
    return sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))


def pair_of(nb: Path) -> Path:
    return nb.with_suffix(".py")


def text_of(nb: nbformat.NotebookNode) -> str:
    return jupytext.writes(nb, fmt=FMT)


def out_of_sync(nb_path: Path) -> str | None:
    """None if the notebook and its .py pair hold the same cells, else a reason."""
    py = pair_of(nb_path)
    if not py.exists():
        return f"{nb_path.name} has no paired {py.name}"
    nb = jupytext.read(nb_path)
    if text_of(nb) != py.read_text():
        return f"{nb_path.name} and {py.name} differ: run `python tools/nb.py execute {nb_path}`"
    return None


def execute(nb_path: Path, timeout: int = 600) -> float:
    """Run a chapter from its .py source, write the .ipynb with outputs and runtime, resync the .py."""
    from nbclient import NotebookClient

    py = pair_of(nb_path)
    nb = jupytext.read(py if py.exists() else nb_path)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    nb.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
    env_before = os.environ.get("VLMBOOK_PROGRESS")
    os.environ["VLMBOOK_PROGRESS"] = "0"
    t0 = time.perf_counter()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NB_DIR)}}).execute()
    finally:
        if env_before is None:
            os.environ.pop("VLMBOOK_PROGRESS", None)
        else:
            os.environ["VLMBOOK_PROGRESS"] = env_before
    runtime = time.perf_counter() - t0
    nb.metadata["vlmbook"] = {"runtime_s": round(runtime, 1), "cpus": os.cpu_count()}
    nbformat.write(nb, nb_path)
    py.write_text(text_of(jupytext.read(nb_path)))
    return runtime


def chapter_rows() -> list[tuple[str, str, str]]:
    rows = []
    for nb_path in chapters():
        nb = nbformat.read(nb_path, as_version=4)
        title = next((c.source.splitlines()[0].lstrip("# ").strip() for c in nb.cells
                      if c.cell_type == "markdown" and c.source.startswith("# ")), nb_path.stem)
        meta = nb.metadata.get("vlmbook", {})
        rt = f"{meta['runtime_s']:.0f} s ({meta.get('cpus', '?')} cores)" if "runtime_s" in meta else "not run"
        rows.append((nb_path.stem[:2].lstrip("0"), f"[{title}](notebooks/{nb_path.name})", rt))
    return rows


def readme_table() -> str:
    lines = ["| # | chapter | measured runtime |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in chapter_rows()]
    return "\n".join(lines)


def write_readme(readme: Path = ROOT / "README.md") -> bool:
    text = readme.read_text()
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    new = pattern.sub(f"{TABLE_START}\n{readme_table()}\n{TABLE_END}", text)
    changed = new != text
    readme.write_text(new)
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=("execute", "check", "readme"))
    p.add_argument("notebooks", nargs="*")
    args = p.parse_args(argv)
    if args.command == "check":
        problems = [r for nb in chapters() if (r := out_of_sync(nb))]
        print("\n".join(problems) or f"{len(chapters())} notebook pairs in sync")
        return 1 if problems else 0
    if args.command == "readme":
        write_readme()
        print(readme_table())
        return 0
    targets = [Path(n).with_suffix(".ipynb") for n in args.notebooks] or chapters()
    for nb_path in targets:
        rt = execute(nb_path)
        flag = "" if rt <= BUDGET_S else f"  OVER the {BUDGET_S} s budget"
        print(f"{nb_path.name}: {rt:.1f} s{flag}")
    write_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main())
