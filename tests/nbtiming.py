"""pytest plugin for the nbval run: sums each chapter's cell times and fails a chapter over budget.

Used as ``pytest --nbval-lax -p tests.nbtiming notebooks``; writes ``_build/chapter_runtimes.json``.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

BUDGET_S = float(os.environ.get("VLMBOOK_CHAPTER_BUDGET_S", 180))
_totals: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    if report.nodeid.split("::")[0].endswith(".ipynb"):
        _totals[report.nodeid.split("::")[0]] += report.duration


def pytest_sessionfinish(session, exitstatus):
    if not _totals:
        return
    out = Path("_build")
    out.mkdir(exist_ok=True)
    (out / "chapter_runtimes.json").write_text(json.dumps({k: round(v, 1) for k, v in _totals.items()}, indent=1))
    over = {k: v for k, v in _totals.items() if v > BUDGET_S}
    for k, v in sorted(_totals.items()):
        print(f"\n{k}: {v:.1f} s{'  OVER BUDGET' if v > BUDGET_S else ''}", end="")
    print()
    if over:
        print(f"chapters over the {BUDGET_S:.0f} s budget: {over}")
        session.exitstatus = 1
