"""Benchmark ``coder``: our vectorised interleaved rANS vs CompressAI's C++ rANS on identical
symbols and identical 16-bit CDF tables (64 Gaussian scale tables, as a hyperprior uses).

Reports each coder's size overhead against the ideal (sum of -log2 p under the quantised
tables) and encode / decode throughput. CompressAI's API takes Python lists, so its timing
includes the ``tolist()`` conversion a caller must do; the pure C++ call is reported too.
Last line: ``coder: <ratio> x CompressAI throughput`` (encode + decode time, target >= 1.0).
"""
from __future__ import annotations

import time

import numpy as np

from . import BenchResult


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run(quick: bool = False) -> BenchResult:
    """Both coders on the same N symbols drawn from the tables' own distributions."""
    from compressai.ans import RansDecoder, RansEncoder

    from ..codec import GaussianConditional, rangecoder, rans

    n = 200_000 if quick else 2_000_000
    repeats = 2 if quick else 3
    gc = GaussianConditional()
    tables = gc.update()
    scales = gc.scale_table.double().numpy()
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 40, n)  # scales 0.11 .. ~16: typical of a trained hyperprior
    vals = np.round(rng.standard_normal(n) * scales[idx]).astype(np.int64)
    ideal = tables.ideal_bits(vals, idx) / 8
    cdfs = tables.cdf.astype(np.int32).tolist()
    lengths, offsets = tables.lengths.tolist(), tables.offsets.tolist()
    tables.lut()  # built once per model in practice (it is part of loading the tables)

    table: dict[str, object] = {"symbols": n, "ideal_bytes": round(ideal, 1)}
    # CompressAI
    t_enc_list, cai = _best(lambda: RansEncoder().encode_with_indexes(
        vals.tolist(), idx.tolist(), cdfs, lengths, offsets), repeats)
    sl, il = vals.tolist(), idx.tolist()
    t_enc_call, _ = _best(lambda: RansEncoder().encode_with_indexes(sl, il, cdfs, lengths, offsets), repeats)
    t_dec_list, back = _best(lambda: np.asarray(RansDecoder().decode_with_indexes(
        cai, idx.tolist(), cdfs, lengths, offsets)), repeats)
    t_dec_call, _ = _best(lambda: RansDecoder().decode_with_indexes(cai, il, cdfs, lengths, offsets), repeats)
    assert np.array_equal(back, vals)
    table["compressai"] = {
        "bytes": len(cai), "overhead_percent": round(100 * (len(cai) / ideal - 1), 4),
        "encode_msym_s": round(n / t_enc_list / 1e6, 2), "decode_msym_s": round(n / t_dec_list / 1e6, 2),
        "encode_msym_s_call_only": round(n / t_enc_call / 1e6, 2),
        "decode_msym_s_call_only": round(n / t_dec_call / 1e6, 2),
    }
    ratios = {}
    for lanes in (32, 1024, 4096):
        t_enc, data = _best(lambda: rans.encode(vals, idx, tables, lanes=lanes), repeats)
        t_dec, out = _best(lambda: rans.decode(data, idx, tables), repeats)
        assert np.array_equal(out, vals)
        table[f"ours_rans_{lanes}_lanes"] = {
            "bytes": len(data), "fixed_header_bytes": rans.header_bytes(lanes),
            "overhead_percent": round(100 * (len(data) / ideal - 1), 4),
            "overhead_percent_excl_header": round(100 * ((len(data) - rans.header_bytes(lanes)) / ideal - 1), 4),
            "encode_msym_s": round(n / t_enc / 1e6, 2), "decode_msym_s": round(n / t_dec / 1e6, 2),
        }
        ratios[lanes] = (t_enc_list + t_dec_list) / (t_enc + t_dec)
    table["throughput_ratio_vs_compressai"] = {str(k): round(v, 3) for k, v in ratios.items()}
    # the readable coder on a slice (pure Python; for its overhead, not speed)
    m = 100_000
    t0 = time.perf_counter()
    rc = rangecoder.encode(vals[:m], idx[:m], tables)
    t_rc = time.perf_counter() - t0
    ideal_m = tables.ideal_bits(vals[:m], idx[:m]) / 8
    table["ours_range_coder_100k"] = {"bytes": len(rc), "overhead_percent": round(100 * (len(rc) / ideal_m - 1), 4),
                                      "encode_msym_s": round(m / t_rc / 1e6, 3)}
    head = ratios[1024]
    table["headline"] = "1,024 lanes, encode+decode, CompressAI timed with its list conversion"
    return BenchResult("coder", head, "x CompressAI throughput", table, fmt="{:.2f}")
