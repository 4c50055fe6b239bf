"""The ``vlmbook`` command: ``vlmbook info``, ``vlmbook bench``, ``vlmbook artifacts``, and the
subcommands chapters add (``vlmbook compress`` / ``decompress`` from Chapter 3)."""
from __future__ import annotations

import argparse
import importlib
import sys

#: Modules that add subcommands with ``add_commands(subparsers)``; missing ones are skipped.
PLUGINS = ("vlmbook.codec.cli", "vlmbook.eval.cli")


def _info(args: argparse.Namespace) -> int:
    from .device import environment_report

    print(environment_report())
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench.__main__ import dispatch

    return dispatch(args)


def _artifacts(args: argparse.Namespace) -> int:
    from .hub import artifact_specs, build_artifact

    if args.action == "list":
        for name, spec in sorted(artifact_specs().items()):
            print(f"{spec.key:32s} {spec.builder}  seed={spec.seed}  {spec.description}")
        return 0
    if not args.name:
        raise SystemExit("vlmbook artifacts build needs a NAME")
    print(build_artifact(args.name, args.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlmbook", description="Companion command for the vlmbook textbook.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions and the device that training would use").set_defaults(func=_info)
    from .bench.__main__ import add_arguments

    b = sub.add_parser("bench", help="run a benchmark, or all of them (same as python -m vlmbook.bench)")
    add_arguments(b).set_defaults(func=_bench)
    a = sub.add_parser("artifacts", help="list or rebuild the small models chapters share")
    a.add_argument("action", choices=("list", "build"))
    a.add_argument("name", nargs="?")
    a.add_argument("--out", default=None, help="folder to write (default: the cache)")
    a.set_defaults(func=_artifacts)
    for mod in PLUGINS:
        try:
            importlib.import_module(mod).add_commands(sub)
        except ModuleNotFoundError as e:
            if not (e.name and mod.startswith(e.name)):
                raise
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError) as e:
        # User errors (bad paths, formats, corrupt files: BitstreamError is a ValueError) get one
        # line, not a traceback; anything else is a bug and keeps its traceback.
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"vlmbook: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vlmbook: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
