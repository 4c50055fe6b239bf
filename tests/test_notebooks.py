"""Static checks of the chapters: pairs in sync, structure, outputs, citations, README table.

Execution itself is checked by nbval (`make test` runs `pytest --nbval-lax notebooks`).
"""
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nb as nbtool  # noqa: E402

CHAPTERS = nbtool.chapters()
BUDGET_S = 180


def test_there_are_chapters():
    assert CHAPTERS, "no notebooks/NN_*.ipynb found"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_pair_in_sync(path):
    assert nbtool.out_of_sync(path) is None


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_structure_and_outputs(path):
    book = nbformat.read(path, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    md = "\n".join(c.source for c in book.cells if c.cell_type == "markdown")
    number = int(path.stem[:2])
    assert book.cells[0].cell_type == "markdown" and book.cells[0].source.startswith(f"# Chapter {number} ")
    assert any(f"nb.start_chapter({number})" in c.source for c in code[:2])
    assert "nb.report_runtime()" in code[-1].source
    assert "## Summary" in md and "## Exercises" in md
    checked = [c for c in code if c.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert len(checked) >= 3
    live_only = [c for c in code if "skip-execution" in c.metadata.get("tags", [])]
    # only a cell that needs a live kernel (a widget) may be skipped, and it must not hide a result
    assert all("NBVAL_CHECK_OUTPUT" not in c.source and "widgets" in c.source for c in live_only)
    for c in code:
        if c not in live_only:
            assert c.get("execution_count") is not None, "chapter must be committed executed"
        for out in c.get("outputs", []):
            assert out.output_type != "error", c.source[:80]
            text = out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
            assert "<Figure" not in text, f"figure repr left in output of: {c.source[:80]}"
        if c.source.startswith("# NBVAL_CHECK_OUTPUT"):
            assert c.get("outputs"), "a checked cell must have output"
    runtime = book.metadata.get("vlmbook", {}).get("runtime_s")
    assert runtime is not None and runtime <= BUDGET_S


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_package_classes_redefined(path):
    src = nbtool.pair_of(path).read_text()
    assert not re.search(r"^\s*class \w+", src, re.M), "notebooks use vlmbook's classes, never define their own"
    assert "@dataclass" not in src


def test_bibliography_parses():
    pybtex = pytest.importorskip("pybtex.database")
    db = pybtex.parse_file(str(ROOT / "book" / "references.bib"))
    for key, entry in db.entries.items():
        assert entry.persons.get("author"), f"{key} has no authors"
        assert "year" in entry.fields and "title" in entry.fields, key


def test_citations_resolve():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    assert len(keys) == len(re.findall(r"@\w+\{", bib)), "duplicate BibTeX keys"
    sources = [p.read_text() for p in list((ROOT / "notebooks").glob("*.py")) + list((ROOT / "book").glob("*.md"))]
    cited = {k.strip() for s in sources for group in re.findall(r"\{cite:[pt]\}`([^`]+)`", s) for k in group.split(",")}
    assert cited, "no citations found"
    assert cited <= keys, f"unknown citation keys: {sorted(cited - keys)}"


def test_readme_table_is_generated():
    readme = (ROOT / "README.md").read_text()
    table = readme.split(nbtool.TABLE_START)[1].split(nbtool.TABLE_END)[0].strip()
    assert table == nbtool.readme_table()


def test_toc_lists_every_chapter():
    toc = (ROOT / "_toc.yml").read_text()
    for path in CHAPTERS:
        assert f"notebooks/{path.stem}" in toc
