"""``python -m vlmbook.bench NAME [--quick] [--out DIR] [--seeds N]``, or ``all [--quick]`` for every one."""
from __future__ import annotations

import argparse
import sys

from . import available, run_benchmark


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["all"]:
        from .all import main as run_all_main

        return run_all_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m vlmbook.bench", description="Run a vlmbook benchmark.")
    p.add_argument("name", choices=available() + ["all"])
    p.add_argument("--quick", action="store_true", help="a shorter run (under two minutes on a 2-core CPU)")
    p.add_argument("--out", default="bench/results", help="folder for the JSON record")
    p.add_argument("--seeds", type=int, default=None, help="training seeds per model (benchmarks that train)")
    args = p.parse_args(argv)
    extra = {} if args.seeds is None else {"seeds": args.seeds}
    run_benchmark(args.name, quick=args.quick, out_dir=args.out, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
