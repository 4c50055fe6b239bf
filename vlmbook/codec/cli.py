"""``vlmbook compress IN OUT --quality Q`` and ``vlmbook decompress IN OUT`` (Chapter 3 §3.7)."""
from __future__ import annotations

import argparse


def _compress(args: argparse.Namespace) -> int:
    from .fileformat import compress_file

    n = compress_file(args.input, args.output, args.quality)
    print(f"wrote {args.output}: {n} bytes")
    return 0


def _decompress(args: argparse.Namespace) -> int:
    from .fileformat import decompress_file

    w, h = decompress_file(args.input, args.output)
    print(f"wrote {args.output}: {w}x{h}")
    return 0


def add_commands(sub) -> None:
    """Register the codec subcommands on the ``vlmbook`` parser."""
    c = sub.add_parser("compress", help="compress an image into a .vlmb file (Chapter 3)")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--quality", type=int, default=3, choices=(1, 2, 3, 4))
    c.set_defaults(func=_compress)
    d = sub.add_parser("decompress", help="decode a .vlmb file into an image (PNG)")
    d.add_argument("input")
    d.add_argument("output")
    d.set_defaults(func=_decompress)
