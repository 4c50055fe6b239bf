"""Benchmark ``coder``: our compiled range coder against CompressAI's C++ rANS on the streams of
real images, with identical 16-bit CDF tables.

The symbols are what the committed ``codec-q3`` really codes for each eval photo at 256 px and
512 px: the y stream (64 Gaussian scale tables picked by the integer hyper-synthesis) and the z
stream (one table per channel). Both coders get the same values, indexes and tables.

Two timings per coder, interleaved (ours, theirs, ours, theirs, ... and the median of each):

- **call only**: the coder call alone, inputs already in the form each API takes (NumPy arrays for
  ours; Python lists for CompressAI's ``encode_with_indexes`` / ``decode_with_indexes``);
- **per image**: what a codec pays per image from integer NumPy arrays to bytes and back, i.e.
  for CompressAI also turning values and indexes into lists and the decoded list into an array
  (its CDF lists are built once per model, as in its ``update()``, and not timed).

Sizes are compared with the ideal (sum of -log2 p under the quantised tables, plus escape bits).
The load average and thread counts are recorded, because this machine is shared.
Last line: ``coder: <ratio> x CompressAI per image`` = CompressAI's total per-image time (encode +
decode, all images and streams) divided by ours; above 1 we are faster.
"""
from __future__ import annotations

import os

import numpy as np

from ..util import median_seconds_each
from . import BenchResult


def _streams(sizes: tuple[int, ...]) -> list[dict]:
    """(name, values, indexes, tables) of the y and z streams of each eval photo at each size."""
    import torch

    from ..codec import HyperpriorCodec
    from ..codec.metrics import to_tensor
    from ..codec.models import pad_to
    from ..data import eval_images
    from ..hub import load_artifact

    model = load_artifact("codec-q3", HyperpriorCodec).eval()
    out = []
    with torch.no_grad():
        for size in sizes:
            for k, img in enumerate(eval_images(size)):
                streams, _ = model.stream_symbols(pad_to(to_tensor(img)))
                for part, (v, i, t) in zip("yz", streams):
                    out.append({"name": f"photo{k}-{size}px-{part}", "size": size,
                                "values": np.ascontiguousarray(v, np.int64), "indexes": np.ascontiguousarray(i, np.int64),
                                "tables": t})
    return out


def run(quick: bool = False) -> BenchResult:
    """Time both coders on every stream; check round trips, byte equality with the readable coder."""
    import torch
    from compressai.ans import RansDecoder, RansEncoder

    from ..codec import fastcoder, rangecoder

    repeats = 5 if quick else 21
    load_before = os.getloadavg()
    streams = _streams((256, 512))
    # compile outside the timings (numba caches the machine code on disk after the first run)
    s0 = streams[0]
    fastcoder.decode(fastcoder.encode(s0["values"], s0["indexes"], s0["tables"]), s0["indexes"], s0["tables"])
    rows, totals = [], {k: 0.0 for k in ("ours_call", "cai_call", "ours_image", "cai_image")}
    by_size: dict[int, dict[str, float]] = {}
    for s in streams:
        v, i, t = s["values"], s["indexes"], s["tables"]
        cdfs, lengths, offsets = t.cdf.astype(np.int32).tolist(), t.lengths.tolist(), t.offsets.tolist()
        vl, il = v.tolist(), i.tolist()
        ours = fastcoder.encode(v, i, t)
        theirs = RansEncoder().encode_with_indexes(vl, il, cdfs, lengths, offsets)
        assert np.array_equal(fastcoder.decode(ours, i, t), v)
        assert np.array_equal(np.asarray(RansDecoder().decode_with_indexes(theirs, il, cdfs, lengths, offsets)), v)
        if s["size"] == 256:  # the readable coder writes the very same bytes (pure Python: small streams only)
            assert rangecoder.encode(v, i, t) == ours
        med = median_seconds_each({
            "ours_enc": lambda: fastcoder.encode(v, i, t),
            "cai_enc_call": lambda: RansEncoder().encode_with_indexes(vl, il, cdfs, lengths, offsets),
            "cai_enc_image": lambda: RansEncoder().encode_with_indexes(v.tolist(), i.tolist(), cdfs, lengths, offsets),
            "ours_dec": lambda: fastcoder.decode(ours, i, t),
            "cai_dec_call": lambda: RansDecoder().decode_with_indexes(theirs, il, cdfs, lengths, offsets),
            "cai_dec_image": lambda: np.asarray(RansDecoder().decode_with_indexes(
                theirs, i.tolist(), cdfs, lengths, offsets), np.int64),
        }, repeats, warmup=0)  # the round-trip checks above were the warm-up
        ideal = t.ideal_bits(v, i) / 8
        rows.append({
            "stream": s["name"], "symbols": int(v.size), "ideal_bytes": round(ideal, 2),
            "ours_bytes": len(ours), "compressai_bytes": len(theirs),
            "ours_overhead_percent": round(100 * (len(ours) / ideal - 1), 4),
            "compressai_overhead_percent": round(100 * (len(theirs) / ideal - 1), 4),
            "ms": {k: round(1e3 * x, 4) for k, x in med.items()},
        })
        totals["ours_call"] += med["ours_enc"] + med["ours_dec"]
        totals["ours_image"] += med["ours_enc"] + med["ours_dec"]
        totals["cai_call"] += med["cai_enc_call"] + med["cai_dec_call"]
        totals["cai_image"] += med["cai_enc_image"] + med["cai_dec_image"]
        b = by_size.setdefault(s["size"], {"ideal": 0.0, "ours": 0, "cai": 0, "ours_s": 0.0, "cai_call_s": 0.0,
                                           "cai_image_s": 0.0, "ours_enc": 0.0, "ours_dec": 0.0,
                                           "cai_enc_call": 0.0, "cai_dec_call": 0.0})
        b["ideal"] += ideal
        b["ours"] += len(ours)
        b["cai"] += len(theirs)
        b["ours_s"] += med["ours_enc"] + med["ours_dec"]
        b["cai_call_s"] += med["cai_enc_call"] + med["cai_dec_call"]
        b["cai_image_s"] += med["cai_enc_image"] + med["cai_dec_image"]
        for k in ("ours_enc", "ours_dec", "cai_enc_call", "cai_dec_call"):
            b[k] += med[k]
    summary = {}
    for size, b in by_size.items():
        n = 3  # eval photos per size
        summary[f"{size}px"] = {
            "per_image_ms": {"ours_encode": round(1e3 * b["ours_enc"] / n, 3), "ours_decode": round(1e3 * b["ours_dec"] / n, 3),
                             "compressai_encode_call": round(1e3 * b["cai_enc_call"] / n, 3),
                             "compressai_decode_call": round(1e3 * b["cai_dec_call"] / n, 3),
                             "compressai_encode_decode_per_image": round(1e3 * b["cai_image_s"] / n, 3)},
            "ours_overhead_percent": round(100 * (b["ours"] / b["ideal"] - 1), 4),
            "compressai_overhead_percent": round(100 * (b["cai"] / b["ideal"] - 1), 4),
            "ratio_call_only": round(b["cai_call_s"] / b["ours_s"], 3),
            "ratio_per_image": round(b["cai_image_s"] / b["ours_s"], 3),
        }
    ratio_image = totals["cai_image"] / totals["ours_image"]
    table = {
        "summary": summary,
        "ratio_call_only": round(totals["cai_call"] / totals["ours_call"], 3),
        "ratio_per_image": round(ratio_image, 3),
        "streams": rows,
        "repeats_interleaved": repeats,
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "threads": {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "VLMBOOK_THREADS": os.environ.get("VLMBOOK_THREADS"), "coders": 1},
        "ours": "vlmbook.codec.fastcoder (numba-compiled range coder, same bytes as the readable rangecoder)",
        "reference": "compressai.ans RansEncoder / RansDecoder (C++), same CDF tables",
    }
    return BenchResult("coder", ratio_image, "x CompressAI per image (encode + decode, 256 and 512 px)", table,
                       fmt="{:.2f}")
