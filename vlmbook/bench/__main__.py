"""``python -m vlmbook.bench NAME [--quick] [--out DIR] [--seeds N]``, or ``all [--quick] [--only A,B]`` for
every one. ``vlmbook bench …`` takes the very same arguments: both build them with :func:`add_arguments`
and run them with :func:`dispatch`."""
from __future__ import annotations

import argparse
import sys

from . import available, run_benchmark


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark arguments, on ``python -m vlmbook.bench``'s parser or the ``vlmbook bench`` subparser."""
    p.add_argument("name", choices=available() + ["all"], help="a benchmark, or 'all' for every one into one report")
    p.add_argument("--quick", action="store_true",
                   help="a shorter run (a benchmark: under two minutes; all: under 10 min on a 2-core CPU)")
    p.add_argument("--out", default="bench/results", help="folder for the JSON records (and all's report)")
    p.add_argument("--seeds", type=int, default=None, help="training seeds per model (benchmarks that train)")
    p.add_argument("--only", default=None, help="with 'all': comma-separated benchmark names")
    return p


def dispatch(args: argparse.Namespace) -> int:
    """Run what :func:`add_arguments` parsed: one benchmark, or ``all`` through :func:`vlmbook.bench.all.run_all`."""
    if args.name == "all":
        if args.seeds is not None:
            raise ValueError("--seeds goes with one benchmark, not 'all'")
        from . import all as all_mod

        all_mod.run_all(args.quick, args.out, args.only.split(",") if args.only else None)
        return 0
    if args.only is not None:
        raise ValueError("--only goes with 'all'")
    extra = {} if args.seeds is None else {"seeds": args.seeds}
    run_benchmark(args.name, quick=args.quick, out_dir=args.out, **extra)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlmbook.bench", description="Run a vlmbook benchmark.")
    return dispatch(add_arguments(p).parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
