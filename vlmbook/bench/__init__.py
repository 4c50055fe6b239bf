"""Benchmarks: ``python -m vlmbook.bench NAME [--quick]`` (Chapter 7).

Each benchmark module ``vlmbook.bench.NAME`` defines ``run(quick: bool) -> BenchResult``. It
measures our code and its reference in the same run; the runner writes the full table to
``bench/results/NAME.json`` (machine and device named) and prints the headline figure last,
as ``NAME: <figure> <unit>``.
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib
import inspect
import json
import os
import pkgutil
import time
from pathlib import Path
from typing import Any

import torch

from ..device import default_threads, describe_machine, num_threads


@dataclasses.dataclass
class BenchResult:
    """A benchmark's headline figure and its full table."""

    name: str
    headline: float
    unit: str
    table: Any
    fmt: str = "{:.4g}"

    def line(self) -> str:
        return f"{self.name}: {self.fmt.format(self.headline)} {self.unit}"

    def metrics(self, quick: bool = False):
        """The table in the long metrics schema (:mod:`vlmbook.eval.metrics`), headline first."""
        from ..eval.metrics import metrics_table

        return metrics_table(self.name, {"headline": {"value": self.headline, "unit": self.unit}, "table": self.table}, quick)


#: Modules of this package that are not benchmarks (``all`` runs the others).
NOT_BENCHMARKS = ("all",)


def available() -> list[str]:
    """Names of the benchmark modules in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if not m.name.startswith("_") and m.name not in NOT_BENCHMARKS)


def run_benchmark(name: str, quick: bool = False, out_dir: str | Path = "bench/results", **options: Any) -> BenchResult:
    """Run benchmark ``name``, write its JSON record, print its table and headline line.

    ``options`` (such as ``seeds``) go to the module's ``run``; one it does not take is an error.
    A ``run`` that takes ``out_dir`` is given it (to write result files beside the record)."""
    if name not in available():
        raise ValueError(f"unknown benchmark {name!r}; available: {available()}")
    module = importlib.import_module(f"{__name__}.{name}")
    params = inspect.signature(module.run).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"benchmark {name!r} takes no option {unknown[0]!r}")
    call = dict(options, out_dir=Path(out_dir)) if "out_dir" in params else options
    load_before = _loadavg()
    t0 = time.perf_counter()
    # One thread unless VLMBOOK_THREADS says otherwise: figures must not depend on core count.
    with num_threads(default_threads()):
        threads = torch.get_num_threads()
        result: BenchResult = module.run(quick=quick, **call)
    record = {
        "name": name,
        "quick": quick,
        "options": options,
        "headline": {"value": result.headline, "unit": result.unit, "line": result.line()},
        "table": result.table,
        "machine": describe_machine(),
        "threads": threads,
        "load_average": {"before": load_before, "after": _loadavg()},
        "seconds": round(time.perf_counter() - t0, 2),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (f"{name}.quick.json" if quick else f"{name}.json")
    path.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n")
    print(json.dumps(result.table, indent=1, default=_jsonable))
    print(f"(written to {path})")
    print(result.line())
    return result


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    return str(x)


def _loadavg() -> list[float] | None:
    """1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def torch_threads() -> dict[str, Any]:
    """torch's intra-op thread count and the thread variables of the environment."""
    import torch

    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "VLMBOOK_THREADS")}
    return {"torch": torch.get_num_threads(), **env}
