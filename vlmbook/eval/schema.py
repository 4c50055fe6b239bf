"""One results schema for every evaluation: a prediction per row, Parquet or CSV (Chapter 7 §7.1).

Each row is one answer of one model to one museum question, with what is needed to score it,
compare it with another model on the same question, and say how fast and where it ran. The
schema carries a version in every row (and in Parquet metadata); files are validated on read, so
a file from another schema version, with missing or extra columns, wrong types or rows from two
versions raises :class:`SchemaError` (a ``ValueError``) that names the problem.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa

SCHEMA_VERSION = 1
SCHEMA_NAME = "vlmbook.predictions"

#: (name, arrow type, nullable, meaning). The order is the column order of every file.
FIELDS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    ("schema_version", pa.int32(), False, "version of this schema"),
    ("run_id", pa.string(), False, "one evaluation run (model × seed × split)"),
    ("model", pa.string(), False, "model name or folder"),
    ("config_hash", pa.string(), False, "SHA-256 (16 hex) of the model's JSON config"),
    ("route", pa.string(), False, "fusion route: discrete, continuous, gated, or baseline"),
    ("compressor", pa.string(), False, "image-token compressor, or 'none'"),
    ("image_tokens", pa.int32(), False, "image tokens M per image"),
    ("seed", pa.int64(), False, "training seed of the model"),
    ("split", pa.string(), False, "museum split (train, val, test)"),
    ("question_id", pa.string(), False, "split:museum seed:scene:question index"),
    ("qtype", pa.string(), False, "question type (vlmbook.data.QUESTION_TYPES)"),
    ("question", pa.string(), False, "question text"),
    ("reference", pa.string(), False, "ground-truth answer"),
    ("output", pa.string(), False, "raw model output (citations included)"),
    ("answer", pa.string(), False, "model answer with citations removed"),
    ("correct", pa.bool_(), False, "exact match of answer and reference"),
    ("cited_patches", pa.list_(pa.int32()), False, "patch indices the answer cites"),
    ("citation_precision", pa.float64(), True, "fraction of cited patches that support the answer"),
    ("citation_recall", pa.float64(), True, "fraction of supporting patches cited"),
    ("encode_ms", pa.float64(), True, "vision encoding time of the image (ms)"),
    ("ttft_ms", pa.float64(), True, "time to first answer token (ms)"),
    ("tokens_per_s", pa.float64(), True, "decoding speed after the first token"),
    ("peak_mem_mb", pa.float64(), True, "peak memory of the process / accelerator (MB)"),
    ("versions", pa.string(), False, "JSON {package: version}"),
    ("device", pa.string(), False, "device the model ran on"),
    ("threads", pa.int32(), False, "torch intra-op threads"),
)
COLUMNS: tuple[str, ...] = tuple(f[0] for f in FIELDS)
#: Columns stored as JSON text in CSV (CSV has no list type).
_LIST_COLUMNS = ("cited_patches",)


class SchemaError(ValueError):
    """A predictions file or table that does not follow :data:`FIELDS` (Chapter 7 §7.1)."""


def arrow_schema() -> pa.Schema:
    """The Arrow schema of a predictions table, with name and version in its metadata."""
    return pa.schema([pa.field(n, t, nullable=null) for n, t, null, _ in FIELDS],
                     metadata={"schema": SCHEMA_NAME, "schema_version": str(SCHEMA_VERSION)})


def make_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts with every column; ``schema_version`` may be left out) -> validated Arrow table. §7.1."""
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise SchemaError(f"make_table needs a sequence of row dicts, got {type(rows).__name__}")
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise SchemaError(f"row {i} is a {type(r).__name__}, not a dict")
        r = {"schema_version": SCHEMA_VERSION, **r}
        missing = [c for c in COLUMNS if c not in r]
        extra = sorted(set(r) - set(COLUMNS))
        if missing or extra:
            raise SchemaError(f"row {i}: missing columns {missing}, unknown columns {extra}")
        for c in COLUMNS:
            cols[c].append(r[c])
    try:
        table = pa.table({c: pa.array(cols[c], type=t) for c, t, _, _ in FIELDS}, schema=arrow_schema())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as e:
        raise SchemaError(f"rows do not fit the predictions schema: {e}") from e
    return validate(table)


def validate(table: pa.Table) -> pa.Table:
    """Check columns, types, nulls, one schema version and consistent values; return the table. §7.1."""
    if not isinstance(table, pa.Table):
        raise SchemaError(f"expected a pyarrow.Table, got {type(table).__name__}")
    names = table.column_names
    if "schema_version" in names:
        versions = sorted(set(table.column("schema_version").to_pylist()) - {None})
        if len(versions) > 1:
            raise SchemaError(f"mixed schema versions {versions} in one table; evaluate or convert them separately")
        if versions and versions[0] != SCHEMA_VERSION:
            raise SchemaError(f"schema version {versions[0]} is not the version this vlmbook reads "
                              f"({SCHEMA_VERSION})")
    missing = [c for c in COLUMNS if c not in names]
    extra = [c for c in names if c not in COLUMNS]
    if missing or extra:
        raise SchemaError(f"not a predictions table (schema v{SCHEMA_VERSION}): missing columns {missing}, "
                          f"unknown columns {extra}")
    if list(names) != list(COLUMNS):
        table = table.select(list(COLUMNS))
    for name, typ, nullable, _ in FIELDS:
        col = table.column(name)
        if not col.type.equals(typ):
            try:
                col = col.cast(typ)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise SchemaError(f"column {name!r} has type {col.type}, expected {typ}") from e
            table = table.set_column(COLUMNS.index(name), name, col)
        if not nullable and col.null_count:
            raise SchemaError(f"column {name!r} holds {col.null_count} missing values")
    _check_values(table)
    return table.cast(arrow_schema())


def _check_values(table: pa.Table) -> None:
    for r, (c, a, ref) in enumerate(zip(table.column("correct").to_pylist(), table.column("answer").to_pylist(),
                                        table.column("reference").to_pylist())):
        if c != (a == ref):
            raise SchemaError(f"row {r}: correct={c} but answer {a!r} vs reference {ref!r}")
    for name in ("citation_precision", "citation_recall"):
        bad = [v for v in table.column(name).to_pylist() if v is not None and not 0.0 <= v <= 1.0]
        if bad:
            raise SchemaError(f"column {name!r} must lie in [0, 1], got {bad[0]}")
    ids = table.column("run_id").to_pylist()
    keys = list(zip(ids, table.column("question_id").to_pylist()))
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise SchemaError(f"question {dup[1]!r} appears twice in run {dup[0]!r}")


def write_predictions(table: pa.Table | Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows or a table to ``path`` (``.parquet`` or ``.csv``) after validating it. §7.1."""
    table = table if isinstance(table, pa.Table) else make_table(table)
    table = validate(table)
    path = Path(path)
    fmt = _format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        import pyarrow.csv as pcsv

        cols = {c: table.column(c) for c in COLUMNS}
        for c in _LIST_COLUMNS:
            cols[c] = pa.array([json.dumps(v) for v in table.column(c).to_pylist()], pa.string())
        pcsv.write_csv(pa.table(cols), path)
    return path


def read_predictions(path: str | Path) -> pa.Table:
    """Read and validate a predictions file (``.parquet`` or ``.csv``). §7.1."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no predictions file at {path}")
    fmt = _format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except pa.ArrowInvalid as e:
            raise SchemaError(f"{path} is not a readable Parquet file: {e}") from e
        meta = table.schema.metadata or {}
        name = meta.get(b"schema", b"").decode()
        if name and name != SCHEMA_NAME:
            raise SchemaError(f"{path} holds a {name!r} table, not {SCHEMA_NAME!r}")
    else:
        table = _read_csv(path)
    try:
        return validate(table)
    except SchemaError as e:
        raise SchemaError(f"{path}: {e}") from None


def _read_csv(path: Path) -> pa.Table:
    import pyarrow.csv as pcsv

    with open(path, encoding="utf-8") as f:
        header = f.readline().strip()
    names = [h.strip('"') for h in header.split(",")] if header else []
    missing = [c for c in COLUMNS if c not in names]
    extra = [c for c in names if c not in COLUMNS]
    if missing or extra:
        raise SchemaError(f"{path}: not a predictions CSV (schema v{SCHEMA_VERSION}): missing columns {missing}, "
                          f"unknown columns {extra}")
    types = {n: t for n, t, _, _ in FIELDS if n not in _LIST_COLUMNS}
    types.update({c: pa.string() for c in _LIST_COLUMNS})
    opts = pcsv.ConvertOptions(column_types=types, strings_can_be_null=False,
                               null_values=[""], quoted_strings_can_be_null=False)
    try:
        table = pcsv.read_csv(path, convert_options=opts)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise SchemaError(f"{path}: a value does not fit its column: {e}") from e
    for c in _LIST_COLUMNS:
        try:
            lists = [json.loads(v) for v in table.column(c).to_pylist()]
        except (TypeError, json.JSONDecodeError) as e:
            raise SchemaError(f"{path}: column {c!r} must hold JSON lists of ints: {e}") from e
        if any(not isinstance(v, list) or any(isinstance(k, bool) or not isinstance(k, int) for k in v) for v in lists):
            raise SchemaError(f"{path}: column {c!r} must hold JSON lists of ints")
        table = table.set_column(table.column_names.index(c), c, pa.array(lists, pa.list_(pa.int32())))
    return table


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise ValueError(f"predictions files end in .parquet or .csv, got {path.name!r}")


def concat(tables: Iterable[pa.Table]) -> pa.Table:
    """Several validated prediction tables -> one (runs must not repeat a question). §7.1."""
    tables = [validate(t) for t in tables]
    if not tables:
        raise SchemaError("concat needs at least one table")
    return validate(pa.concat_tables(tables))


def runs(table: pa.Table) -> list[str]:
    """The run ids in a predictions table, in order of first appearance."""
    return list(dict.fromkeys(table.column("run_id").to_pylist()))


def select_run(table: pa.Table, run_id: str) -> pa.Table:
    """The rows of one run."""
    import pyarrow.compute as pc

    if run_id not in runs(table):
        raise ValueError(f"no run {run_id!r} in this table; runs: {runs(table)}")
    return table.filter(pc.equal(table.column("run_id"), run_id))
