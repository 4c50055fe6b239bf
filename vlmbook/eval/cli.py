"""``vlmbook eval MODEL_DIR --split test --out FILE`` (Chapter 7 §7.1)."""
from __future__ import annotations

import argparse


def _eval(args: argparse.Namespace) -> int:
    from ..device import num_threads
    from .harness import evaluate_to_file
    from .stats import bootstrap_ci

    with num_threads(args.threads):
        table = evaluate_to_file(args.model, args.out, split=args.split, n_scenes=args.scenes,
                                 timing=not args.no_timing, run_id=args.run_id)
    correct = table.column("correct").to_numpy(zero_copy_only=False)
    lo, hi = bootstrap_ci(correct, method="bca", seed=0)
    print(f"wrote {args.out}: {table.num_rows} predictions")
    print(f"accuracy {100 * correct.mean():.1f} % (95 % BCa CI {100 * lo:.1f}–{100 * hi:.1f})")
    return 0


def add_commands(sub) -> None:
    """Register ``vlmbook eval`` on the ``vlmbook`` parser."""
    e = sub.add_parser("eval", help="score a museum guide; one prediction row per question (Chapter 7)")
    e.add_argument("model", help="a folder written by save_pretrained, or an artifact name such as vlm-tiny")
    e.add_argument("--split", default="test", choices=("train", "val", "test"))
    e.add_argument("--out", required=True, help="predictions file: .parquet or .csv")
    e.add_argument("--scenes", type=int, default=200, help="exhibits to ask about (default 200)")
    e.add_argument("--run-id", default=None)
    e.add_argument("--threads", type=int, default=1, help="torch threads (timings are per thread count)")
    e.add_argument("--no-timing", action="store_true", help="skip the latency measurements")
    e.set_defaults(func=_eval)
