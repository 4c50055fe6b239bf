"""Benchmark ``eval``: the committed museum guide (``vlm-tiny``) through Chapter 7's harness.

Every answer on the test exhibits becomes a row of the predictions schema, written beside the
record as ``eval[.quick].predictions.parquet`` together with the same guide shown JPEG-compressed
exhibits (quality :data:`JPEG_QUALITY`) and the image-blind majority baseline, on the same questions. The table gives accuracy with bootstrap intervals (percentile and
BCa), the paired comparison with the baseline (exact McNemar, paired bootstrap), citation
precision, the error taxonomy and latency medians on one thread. Last line:
``eval: <accuracy> % museum-QA (vlm-tiny, 95 % CI low–high)``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import BenchResult

SCENES, QUICK_SCENES = 200, 40
#: JPEG quality of the compressed-exhibit run (Chapter 3's codecs meet Chapter 5's guide).
JPEG_QUALITY = 10


def _median(values) -> float | None:
    v = [x for x in values if x is not None]
    return round(float(np.median(v)), 2) if v else None


def run(quick: bool = False, out_dir: str | Path | None = None) -> BenchResult:
    """Score ``vlm-tiny`` and the majority baseline on the same test questions."""
    from ..device import num_threads
    from ..eval import (bootstrap_ci, category_shares, concat, error_counts, evaluate_model, load_model,
                        majority_predictions, mcnemar_exact, paired_bootstrap, write_predictions)
    from ..eval.harness import jpeg_round_trip

    n = QUICK_SCENES if quick else SCENES
    with num_threads(1):
        model = load_model("vlm-tiny")
        guide = evaluate_model(model, "test", n, name="vlm-tiny", run_id="vlm-tiny")
        jpeg = evaluate_model(model, "test", n, name="vlm-tiny", run_id=f"vlm-tiny-jpeg{JPEG_QUALITY}", timing=False,
                              transform=lambda im: jpeg_round_trip(im, JPEG_QUALITY))
    base = majority_predictions("test", n)
    if out_dir is not None:
        write_predictions(concat([guide, jpeg, base]), Path(out_dir) / ("eval.quick.predictions.parquet" if quick
                                                                  else "eval.predictions.parquet"))
    a = np.array(guide.column("correct").to_pylist())
    b = np.array(base.column("correct").to_pylist())
    j = np.array(jpeg.column("correct").to_pylist())
    pct = lambda lo_hi: [round(100 * x, 2) for x in lo_hi]  # noqa: E731
    counts = error_counts(guide)
    table = {
        "questions": int(a.size), "scenes": n,
        "vlm_tiny": {
            "accuracy_pct": round(100 * a.mean(), 2),
            "ci95_percentile_pct": pct(bootstrap_ci(a, method="percentile")),
            "ci95_bca_pct": pct(bootstrap_ci(a, method="bca")),
            "citation_precision_mean": round(float(np.mean(guide.column("citation_precision").to_pylist())), 3),
            "citation_recall_mean": round(float(np.mean(guide.column("citation_recall").to_pylist())), 3),
            "encode_ms_median": _median(guide.column("encode_ms").to_pylist()),
            "ttft_ms_median": _median(guide.column("ttft_ms").to_pylist()),
            "tokens_per_s_median": _median(guide.column("tokens_per_s").to_pylist()),
            "peak_mem_mb": round(guide.column("peak_mem_mb")[0].as_py(), 1),
            "threads": guide.column("threads")[0].as_py(),
        },
        "majority_baseline": {"accuracy_pct": round(100 * b.mean(), 2),
                              "ci95_bca_pct": pct(bootstrap_ci(b, method="bca"))},
        "vlm_tiny_vs_baseline": {"mcnemar": mcnemar_exact(a, b), "paired_bootstrap": paired_bootstrap(a, b)},
        f"vlm_tiny_jpeg{JPEG_QUALITY}": {"accuracy_pct": round(100 * j.mean(), 2),
                                         "ci95_bca_pct": pct(bootstrap_ci(j, method="bca"))},
        f"vlm_tiny_vs_jpeg{JPEG_QUALITY}": {"mcnemar": mcnemar_exact(a, j), "paired_bootstrap": paired_bootstrap(a, j)},
        "errors_by_type": counts,
        "error_shares": {k: round(v, 3) for k, v in category_shares(counts).items()},
    }
    lo, hi = table["vlm_tiny"]["ci95_bca_pct"]
    return BenchResult("eval", table["vlm_tiny"]["accuracy_pct"],
                       f"% museum-QA (vlm-tiny, {a.size} questions, 95 % CI {lo:.1f}–{hi:.1f})", table, fmt="{:.1f}")
