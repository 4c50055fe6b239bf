"""Benchmark tables in one long format: a metric per row (Chapter 7 §7.5).

Each benchmark keeps its own nested table (``BenchResult.table``); :func:`flatten` turns it into
rows ``(benchmark, path, metric, value, text)`` — ``path`` is the chain of keys above the leaf,
``value`` the number (``text`` the string for non-numeric leaves) — so that every benchmark's
figures can be filtered, joined and plotted the same way. The table is versioned and validated
on read, like the predictions schema.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import pyarrow as pa

from .schema import SchemaError

METRICS_VERSION = 1
METRICS_NAME = "vlmbook.metrics"
METRIC_FIELDS: tuple[tuple[str, pa.DataType, bool], ...] = (
    ("schema_version", pa.int32(), False),
    ("benchmark", pa.string(), False),
    ("quick", pa.bool_(), False),
    ("path", pa.string(), False),
    ("metric", pa.string(), False),
    ("value", pa.float64(), True),
    ("text", pa.string(), True),
)
METRIC_COLUMNS = tuple(f[0] for f in METRIC_FIELDS)


def metrics_schema() -> pa.Schema:
    """The Arrow schema of a metrics table."""
    return pa.schema([pa.field(n, t, nullable=null) for n, t, null in METRIC_FIELDS],
                     metadata={"schema": METRICS_NAME, "schema_version": str(METRICS_VERSION)})


def flatten(table: Any, prefix: str = "") -> list[tuple[str, str, float | None, str | None]]:
    """Nested dicts / lists -> ``[(path, metric, value, text)]``; list items are keyed by index. §7.5."""
    out: list[tuple[str, str, float | None, str | None]] = []
    if hasattr(table, "tolist"):  # NumPy arrays and scalars, tensors
        table = table.tolist()
    items: Sequence[tuple[str, Any]]
    if isinstance(table, Mapping):
        items = [(str(k), v) for k, v in table.items()]
    elif isinstance(table, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(table)]
    else:
        return [(prefix.rpartition("/")[0], prefix.rpartition("/")[2] or "value", *_leaf(table))]
    for k, v in items:
        if hasattr(v, "tolist"):
            v = v.tolist()
        key = f"{prefix}/{k}" if prefix else k
        if isinstance(v, (Mapping, list, tuple)):
            out += flatten(v, key)
        else:
            path, _, metric = key.rpartition("/")
            out.append((path, metric, *_leaf(v)))
    return out


def _leaf(v: Any) -> tuple[float | None, str | None]:
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, bool):
        return float(v), None
    if isinstance(v, (int, float)):
        return (float(v), None) if math.isfinite(v) else (None, str(v))
    return None, None if v is None else str(v)


def metrics_table(benchmark: str, table: Any, quick: bool = False) -> pa.Table:
    """A benchmark's nested table as a validated metrics table. §7.5."""
    if not benchmark:
        raise ValueError("metrics_table needs a benchmark name")
    rows = flatten(table)
    cols = {
        "schema_version": [METRICS_VERSION] * len(rows), "benchmark": [benchmark] * len(rows),
        "quick": [bool(quick)] * len(rows), "path": [r[0] for r in rows], "metric": [r[1] for r in rows],
        "value": [r[2] for r in rows], "text": [r[3] for r in rows],
    }
    return validate_metrics(pa.table(cols, schema=metrics_schema()))


def validate_metrics(table: pa.Table) -> pa.Table:
    """Check a metrics table's columns, types, nulls and version; return it. §7.5."""
    missing = [c for c in METRIC_COLUMNS if c not in table.column_names]
    extra = [c for c in table.column_names if c not in METRIC_COLUMNS]
    if missing or extra:
        raise SchemaError(f"not a metrics table (v{METRICS_VERSION}): missing columns {missing}, unknown {extra}")
    versions = set(table.column("schema_version").to_pylist())
    if versions - {METRICS_VERSION}:
        raise SchemaError(f"metrics schema versions {sorted(versions)}; this vlmbook reads {METRICS_VERSION}")
    try:
        table = table.select(list(METRIC_COLUMNS)).cast(metrics_schema())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise SchemaError(f"metrics table has a column of the wrong type: {e}") from e
    for name, _, nullable in METRIC_FIELDS:
        if not nullable and table.column(name).null_count:
            raise SchemaError(f"metrics column {name!r} holds missing values")
    return table


def write_metrics(table: pa.Table, path: str | Path) -> Path:
    """Write a metrics table as CSV (``.csv``) or Parquet (``.parquet``)."""
    table, path = validate_metrics(table), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif path.suffix == ".csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    else:
        raise ValueError(f"metrics files end in .csv or .parquet, got {path.name!r}")
    return path


def read_metrics(path: str | Path) -> pa.Table:
    """Read and validate a metrics file."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    elif path.suffix == ".csv":
        import pyarrow.csv as pcsv

        types = {n: t for n, t, _ in METRIC_FIELDS}
        try:
            table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
                column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False))
        except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as e:
            raise SchemaError(f"{path}: not a metrics CSV: {e}") from e
    else:
        raise ValueError(f"metrics files end in .csv or .parquet, got {path.name!r}")
    try:
        return validate_metrics(table)
    except SchemaError as e:
        raise SchemaError(f"{path}: {e}") from None
