"""``python -m vlmbook.bench all [--quick]`` (or ``vlmbook bench all``): every benchmark into one Markdown report (Chapter 7 §7.5).

Each benchmark runs in this process, one after the other, through :func:`run_benchmark` (so its
own JSON record is written as usual); a benchmark that fails is reported, not fatal. The report
records the machine, torch's thread count and the thread variables, the load average before and
after every benchmark, package versions, each headline, the ratios each benchmark measured
between ours and its reference, and every figure of every table in the long metrics schema
(also written as ``all[.quick].metrics.csv``).
"""
from __future__ import annotations

import datetime
import importlib.metadata
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa

from . import BenchResult, _loadavg, available, run_benchmark, torch_threads

PACKAGES = ("vlmbook", "torch", "torchvision", "transformers", "numpy", "scipy", "compressai", "pyarrow", "peft",
            "tokenizers", "vector-quantize-pytorch", "pytorch-msssim")


def versions() -> dict[str, str]:
    """Installed versions of the packages the benchmarks use ('-' when absent)."""
    out = {}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "-"
    return out


def run_all(quick: bool = False, out_dir: str | Path = "bench/results", names: Sequence[str] | None = None,
            runner: Callable[..., BenchResult] = run_benchmark) -> Path:
    """Run ``names`` (default: every benchmark); write and return the Markdown report. §7.5."""
    from ..device import describe_machine
    from ..eval.metrics import write_metrics

    names = list(names) if names is not None else available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        raise ValueError(f"unknown benchmarks {unknown}; available: {available()}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t_all = time.perf_counter()
    rows, metrics = [], []
    for name in names:
        before, t0 = _loadavg(), time.perf_counter()
        try:
            res = runner(name, quick=quick, out_dir=out)
            status, line = "ok", res.line()
            metrics.append(res.metrics(quick))
        except Exception as e:  # noqa: BLE001 - a failing benchmark is reported, the others still run
            res, status, line = None, f"error: {type(e).__name__}: {e}", "-"
            traceback.print_exc()
        rows.append({"name": name, "status": status, "line": line, "seconds": time.perf_counter() - t0,
                     "load_before": before, "load_after": _loadavg(), "result": res})
    total = time.perf_counter() - t_all
    stem = "all.quick" if quick else "all"
    if metrics:
        write_metrics(pa.concat_tables(metrics), out / f"{stem}.metrics.csv")
    report = _markdown(rows, quick, start, total, describe_machine())
    path = out / f"{stem}.md"
    path.write_text(report)
    print(report)
    print(f"all: {sum(r['status'] == 'ok' for r in rows)}/{len(rows)} benchmarks ok in {total:.0f} s")
    return path


def _fmt_load(x) -> str:
    return "n/a" if x is None else " / ".join(f"{v:.2f}" for v in x)


def _markdown(rows: list[dict], quick: bool, start: str, total: float, machine: dict) -> str:
    lines = [f"# vlmbook benchmarks{' (quick)' if quick else ''}", "",
             f"Started {start}; {len(rows)} benchmarks in {total:.0f} s.", "",
             "## Machine", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine.items()]
    lines += [f"| threads | {torch_threads()} |", "", "## Versions", "", "| package | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in versions().items()]
    lines += ["", "## Results", "", "| benchmark | headline | seconds | load avg before (1/5/15 min) | after | status |",
              "|---|---|---:|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | `{r['line']}` | {r['seconds']:.1f} | {_fmt_load(r['load_before'])} | "
                     f"{_fmt_load(r['load_after'])} | {r['status']} |")
    for r in rows:
        if r["result"] is None:
            continue
        t = r["result"].metrics(quick)
        paths, mets, vals = (t.column(c).to_pylist() for c in ("path", "metric", "value"))
        ratios = [(p, m, v) for p, m, v in zip(paths, mets, vals) if "ratio" in (p + "/" + m).lower() and v is not None]
        lines += ["", f"### {r['name']}", "", f"`{r['line']}`", ""]
        if ratios:
            lines += ["Ours against the reference (ratios as the benchmark measured them):", "",
                      "| where | metric | ratio |", "|---|---|---:|"]
            lines += [f"| {p or '-'} | {m} | {v:.4g} |" for p, m, v in ratios[:40]]
            lines.append("")
        lines += ["<details><summary>all figures</summary>", "", "| path | metric | value |", "|---|---|---|"]
        for p, m, v, txt in zip(paths, mets, vals, t.column("text").to_pylist()):
            lines.append(f"| {p or '-'} | {m} | {txt if v is None else f'{v:.6g}'} |")
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"
