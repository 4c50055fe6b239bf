"""Chapter 7 — Evaluation: one results schema, statistics that say when a difference is real,
and an error taxonomy computed from the museum's ground truth."""
from .adapter import EvalBatch, Prediction, load_model, model_info, parse_output, predict
from .harness import (EXCLUDED_TYPES, evaluate_model, evaluate_to_file, lookup, majority_predictions, question_id,
                      score_citations)
from .stats import bootstrap_ci, mcnemar_exact, mean_std, paired_bootstrap, summarize_seeds
from .schema import (COLUMNS, FIELDS, SCHEMA_VERSION, SchemaError, arrow_schema, concat, make_table,
                     read_predictions, runs, select_run, validate, write_predictions)

__all__ = [
    "EvalBatch", "Prediction", "load_model", "model_info", "parse_output", "predict", "EXCLUDED_TYPES",
    "evaluate_model", "evaluate_to_file", "lookup", "majority_predictions", "question_id", "score_citations",
    "COLUMNS", "FIELDS", "SCHEMA_VERSION", "SchemaError", "arrow_schema", "concat", "make_table",
    "read_predictions", "runs", "select_run", "validate", "write_predictions", "bootstrap_ci", "mcnemar_exact",
    "mean_std", "paired_bootstrap", "summarize_seeds",
]

from .taxonomy import CATEGORIES, answer_confusion, category_shares, classify_error, classify_table, error_counts

__all__ += ["CATEGORIES", "answer_confusion", "category_shares", "classify_error", "classify_table", "error_counts"]


def __getattr__(name: str):
    # the datasets export needs the optional 'datasets' package: import it on first use only
    if name in ("export_museum", "museum_dataset", "load_museum", "museum_records"):
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
