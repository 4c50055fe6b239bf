"""Chapter 3: entropy coders, entropy models, GDN, integer hyper-synthesis, BD-rate, token storage."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlmbook.codec import (GDN, BitstreamError, CdfTables, CodecConfig, EntropyBottleneck, GaussianConditional,
                           HyperpriorCodec, discretized_likelihood, quantize, quantize_pmf, rate_gradients)
from vlmbook.codec import fastcoder, rangecoder, rans, storage
from vlmbook.codec.context import ContextModel, MaskedConv2d, parallel_params, sequential_params
from vlmbook.codec.integer import IntegerSynthesis
from vlmbook.codec.metrics import bd_rate, pillow_rd


def gaussian_tables(n_tables: int = 16) -> tuple[CdfTables, np.ndarray]:
    gc = GaussianConditional("gaussian", scale_table=np.exp(np.linspace(np.log(0.11), np.log(16), n_tables)))
    return gc.update(), gc.scale_table.double().numpy()


def sample(n: int, seed: int = 0):
    tables, scales = gaussian_tables()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(scales), n)
    vals = np.round(rng.standard_normal(n) * scales[idx]).astype(np.int64)
    return tables, vals, idx


# ---------------------------------------------------------------------------------------
# CDF tables
# ---------------------------------------------------------------------------------------
def test_quantize_pmf_properties_and_golden():
    cdf = quantize_pmf(np.array([0.5, 0.25, 0.25, 1e-12]), precision=4)
    assert cdf.dtype == np.int64 and cdf.tolist() == [0, 7, 11, 15, 16]
    assert cdf[0] == 0 and cdf[-1] == 16 and np.all(np.diff(cdf) >= 1)  # no zero frequency
    cdf16 = quantize_pmf(np.random.default_rng(0).random(300))
    assert cdf16[-1] == 1 << 16 and np.all(np.diff(cdf16) >= 1)
    assert int(cdf16[150]) == 32609


def test_quantize_pmf_rejects_bad_input():
    for bad in (np.array([]), np.array([0.5, -0.1]), np.array([np.nan]), np.zeros(3)):
        with pytest.raises(ValueError):
            quantize_pmf(bad)
    with pytest.raises(ValueError):
        quantize_pmf(np.ones(20), precision=4)


def test_cdf_tables_validation():
    with pytest.raises(ValueError):
        CdfTables(np.array([[0, 5, 5, 16]]), np.array([4]), np.array([0]), precision=4)  # zero frequency
    t = CdfTables(np.array([[0, 5, 9, 16]]), np.array([4]), np.array([-1]), precision=4)
    sym, esc, rel = t.split(np.array([-1, 0, 1, 5]), np.zeros(4, int))
    assert sym.tolist() == [0, 1, 2, 2] and esc.tolist() == [False, False, True, True]
    with pytest.raises(ValueError):
        t.split(np.array([0]), np.array([1]))


# ---------------------------------------------------------------------------------------
# Coders
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 2, 7, 333, 4095, 4096, 20_000])
def test_fast_coder_writes_the_readable_coders_bytes(n):
    tables, vals, idx = sample(n, seed=10 + n)
    if n > 7:
        vals[:4] = [70, -2**29, 31, 2**30]  # escapes, including the longest payloads
    data = fastcoder.encode(vals, idx, tables)
    assert data == rangecoder.encode(vals, idx, tables)  # the same algorithm, compiled: the same bytes
    assert np.array_equal(fastcoder.decode(data, idx, tables), vals)
    assert np.array_equal(rangecoder.decode(data, idx, tables), vals)


def test_fast_coder_golden_and_close_to_ideal():
    tables, vals, idx = sample(20_000, seed=4)
    data = fastcoder.encode(vals, idx, tables)
    assert len(data) == 6614  # as the readable coder (test_coders_golden_sizes)
    ideal = tables.ideal_bits(vals, idx) / 8
    assert ideal <= len(data) <= ideal + 2  # the flush and the padding: at most 2 bytes
    other = tables.offsets[idx] - 1  # every value escapes just below its table
    assert np.array_equal(fastcoder.decode(fastcoder.encode(other, idx, tables), idx, tables), other)


def test_fast_and_readable_decoders_reject_the_same_corruptions():
    tables, vals, idx = sample(1500, seed=7)
    data = fastcoder.encode(vals, idx, tables)
    rng = np.random.default_rng(1)
    raised = 0
    for trial in range(120):
        b = bytearray(data)
        if trial % 3 == 0:
            b = b[: rng.integers(0, len(b))]
        elif trial % 3 == 1:
            b = b + bytes([int(rng.integers(256))])
        else:
            b[rng.integers(len(b))] ^= 1 << int(rng.integers(8))
        results = []
        for coder in (fastcoder, rangecoder):
            try:
                results.append(coder.decode(bytes(b), idx, tables))
            except BitstreamError as e:
                results.append(str(e))
        if isinstance(results[0], str):
            raised += 1
            assert results[0] == results[1]
        else:
            assert np.array_equal(results[0], results[1])
    assert raised >= 80  # length and padding checks catch every truncation and extension
    with pytest.raises(ValueError):
        fastcoder.encode(vals, idx + 100, tables)
    with pytest.raises(ValueError):
        fastcoder.encode(np.array([2**40]), np.array([0]), tables)

@pytest.mark.parametrize("coder", [rangecoder, rans, fastcoder])
def test_round_trip_with_escapes(coder):
    tables, vals, idx = sample(5000, seed=1)
    vals[:6] = [10_000, -10_000, 1, -2**30, 2**30, 0]  # far outside every table: escapes
    data = coder.encode(vals, idx, tables)
    assert isinstance(data, bytes)
    out = coder.decode(data, idx, tables)
    assert out.dtype == np.int64 and np.array_equal(out, vals)


def test_rans_lanes_and_empty():
    tables, vals, idx = sample(3001, seed=2)
    for lanes in (1, 7, 64, 4096):
        assert np.array_equal(rans.decode(rans.encode(vals, idx, tables, lanes=lanes), idx, tables), vals)
    empty = np.zeros(0, np.int64)
    assert rans.decode(rans.encode(empty, empty, tables), empty, tables).size == 0
    with pytest.raises(ValueError):
        rans.encode(vals, idx, tables, lanes=0)


def test_stream_length_within_0p1_percent_of_ideal():
    tables, vals, idx = sample(120_000, seed=3)
    ideal = tables.ideal_bits(vals, idx) / 8
    r = rangecoder.encode(vals, idx, tables)
    a = rans.encode(vals, idx, tables, lanes=32)
    assert abs(len(r) - ideal) <= 0.001 * ideal + 8  # the range coder's flush is < 8 bytes
    # rANS: the final states are a fixed 8 bytes a lane (they also carry a few bits of the message)
    assert ideal - rans.header_bytes(32) <= len(a) <= 1.001 * ideal + rans.header_bytes(32)
    one = rans.encode(vals, idx, tables, lanes=1)
    assert abs(len(one) - ideal) <= 0.001 * ideal + rans.header_bytes(1)


def test_coders_golden_sizes():
    tables, vals, idx = sample(20_000, seed=4)
    assert len(rangecoder.encode(vals, idx, tables)) == 6614
    assert len(rans.encode(vals, idx, tables, lanes=16)) == 6714


def test_rans_matches_compressai_on_same_tables():
    ans = pytest.importorskip("compressai.ans")
    tables, vals, idx = sample(20_000, seed=5)
    cdfs = tables.cdf.astype(np.int32).tolist()
    theirs = ans.RansEncoder().encode_with_indexes(vals.tolist(), idx.tolist(), cdfs, tables.lengths.tolist(),
                                                   tables.offsets.tolist())
    ours = rans.encode(vals, idx, tables, lanes=1)
    # both are within a few bytes of each other: same tables, same 16-bit precision
    assert abs(len(ours) - len(theirs)) <= rans.header_bytes(1) + 8
    back = ans.RansDecoder().decode_with_indexes(theirs, idx.tolist(), cdfs, tables.lengths.tolist(),
                                                 tables.offsets.tolist())
    assert np.array_equal(np.asarray(back), vals)


def test_decoders_reject_corruption():
    tables, vals, idx = sample(2000, seed=6)
    data = rans.encode(vals, idx, tables, lanes=4)
    rng = np.random.default_rng(0)
    raised = 0
    for trial in range(300):
        b = bytearray(data)
        if trial % 3 == 0:
            b = b[: rng.integers(0, len(b))]
        else:
            for _ in range(rng.integers(1, 4)):
                b[rng.integers(len(b))] ^= 1 << int(rng.integers(8))
        try:
            out = rans.decode(bytes(b), idx, tables)
            assert out.shape == vals.shape
        except BitstreamError:
            raised += 1
    assert raised >= 250  # the final-state check catches nearly every corruption
    with pytest.raises(BitstreamError):
        rans.decode(b"\x00", idx, tables)
    with pytest.raises(BitstreamError):  # the symbols end after more bits than the stream holds
        rangecoder.decode(b"", idx, tables)


# ---------------------------------------------------------------------------------------
# Entropy models
# ---------------------------------------------------------------------------------------
def test_quantize_modes():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert torch.equal(quantize(x, "round"), torch.round(x))
    ste = quantize(x, "ste")
    ste.sum().backward()
    assert torch.equal(ste, torch.round(x)) and torch.equal(x.grad, torch.ones_like(x))
    n = quantize(x, "noise")
    assert (n - x).abs().max() <= 0.5
    with pytest.raises(ValueError):
        quantize(x, "floor")


@pytest.mark.parametrize("family", ["gaussian", "laplace", "logistic"])
def test_likelihood_sums_to_one_and_analytic_gradient(family):
    s = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64)
    k = torch.arange(-200, 201, dtype=torch.float64)[:, None]
    p = discretized_likelihood(k, s.expand(401, 3), None, family)
    assert torch.allclose(p.sum(0), torch.ones(3, dtype=torch.float64), atol=1e-9)
    torch.manual_seed(1)
    y = torch.randn(50, dtype=torch.float64) * 3
    mu = torch.randn(50, dtype=torch.float64).requires_grad_()
    sc = (torch.rand(50, dtype=torch.float64) * 3 + 0.2).requires_grad_()
    (-torch.log2(discretized_likelihood(y, sc, mu, family))).sum().backward()
    g_mu, g_s = rate_gradients(y, mu.detach(), sc.detach(), family)
    assert torch.allclose(g_mu, mu.grad, rtol=1e-6, atol=1e-9)
    assert torch.allclose(g_s, sc.grad, rtol=1e-6, atol=1e-9)


def test_gaussian_conditional_tables_and_golden():
    gc = GaussianConditional()
    t = gc.update()
    assert t.num_tables == 64 and np.all(t.lengths >= 3)
    assert gc.build_indexes(torch.tensor([0.01, 0.11, 0.12, 1e6])).tolist() == [0, 0, 1, 63]
    y = torch.tensor([0.0, 1.0, -2.0])
    _, lik = gc(y, torch.tensor([1.0, 1.0, 2.0]), mode="round")
    assert lik.shape == y.shape
    assert float(-torch.log2(lik).sum()) == pytest.approx(6.480584621429443, abs=1e-4)
    with pytest.raises(ValueError):
        GaussianConditional("cauchy")


def test_hyperprior_is_compressai_scale_hyperprior_under_one_seed():
    """Same seed -> same initial weights, same forward pass and same gradients as CompressAI's model."""
    cai = pytest.importorskip("compressai.models")
    from vlmbook.codec.models import rd_loss

    cfg = CodecConfig.tiny()
    torch.manual_seed(0)
    ours = HyperpriorCodec(cfg)
    torch.manual_seed(0)
    theirs = cai.ScaleHyperprior(cfg.N, cfg.M)
    mine, ref = ours.state_dict(), theirs.state_dict()
    shared = [k for k in mine if k in ref and k != "gaussian_conditional.scale_table"]
    assert len(shared) == 60  # every conv, GDN and entropy-bottleneck parameter and table buffer
    assert all(torch.equal(mine[k], ref[k]) for k in shared)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    losses = []
    for model in (ours, theirs):
        torch.manual_seed(5)  # the same noise draws in both
        out = model(x)
        loss = rd_loss(out, x, 0.01)[0] + model.aux_loss()
        loss.backward()
        losses.append(float(loss))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for name in ("g_a.0.weight", "g_s.6.weight", "h_s.4.weight", "entropy_bottleneck.quantiles",
                 "entropy_bottleneck.matrices.0", "g_a.1.gamma"):
        gm, gr = ours.get_parameter(name).grad, theirs.get_parameter(name).grad
        assert torch.allclose(gm, gr, rtol=1e-4, atol=1e-6 * float(gr.abs().max())), name


def test_entropy_bottleneck_matches_compressai():
    cai = pytest.importorskip("compressai.entropy_models")
    torch.manual_seed(0)
    ours = EntropyBottleneck(4, filters=(3, 3, 3))
    theirs = cai.EntropyBottleneck(4, filters=(3, 3, 3))
    theirs.load_state_dict({k: v for k, v in ours.state_dict().items() if not k.startswith("_")}, strict=False)
    x = torch.randn(2, 4, 5, 5) * 3
    ours.eval(), theirs.eval()
    _, l1 = ours(x, mode="round")
    _, l2 = theirs(x, training=False)
    assert torch.allclose(l1, l2, rtol=1e-5, atol=1e-7)
    assert torch.allclose(ours.loss(), theirs.loss())
    tables = ours.update()
    assert tables.num_tables == 4
    vals, idx = ours.symbols(x)
    assert np.array_equal(rans.decode(rans.encode(vals, idx, tables), idx, tables), vals)
    assert torch.allclose(ours.dequantize(vals, tuple(x.shape)), ours(x, mode="round")[0])


def test_gdn_matches_compressai_and_inverts():
    gdn_mod = pytest.importorskip("compressai.layers")
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 5)
    for inverse in (False, True):
        assert torch.allclose(GDN(6, inverse=inverse)(x), gdn_mod.GDN(6, inverse=inverse)(x), atol=1e-6)
    beta, gamma = GDN(6).effective()
    assert torch.allclose(beta, torch.ones(6)) and torch.allclose(gamma, 0.1 * torch.eye(6), atol=1e-6)
    with pytest.raises(ValueError):
        GDN(6)(torch.randn(1, 5, 4, 4))


# ---------------------------------------------------------------------------------------
# Integer hyper-synthesis (bit-exact decoding)
# ---------------------------------------------------------------------------------------
def test_integer_synthesis_matches_float_and_torch_float64():
    torch.manual_seed(0)
    model = HyperpriorCodec(CodecConfig.tiny())
    z = torch.round(torch.randn(1, model.config.N, 2, 3) * 2)
    ints = IntegerSynthesis(model.h_s)(z)
    assert ints.dtype == np.int64 and ints.shape == (1, model.config.M, 8, 12)
    with torch.no_grad():
        ref = model.h_s(z).numpy()
    assert np.abs(ints / 4096.0 - ref).max() < 0.01
    assert int(ints.sum()) == 287026  # golden: seed 0, modules built in CompressAI's order
    # the same integer network in float64 on torch (any device) gives identical integers
    import copy
    h = copy.deepcopy(model.h_s).double()
    with torch.no_grad():
        for m in h:
            if hasattr(m, "weight"):
                m.weight.copy_(torch.round(m.weight * 4096))
                m.bias.copy_(torch.round(m.bias * 4096 * 4096))
        a = torch.round(z.double() * 4096)
        for m in h:
            a = m(a)
            if hasattr(m, "weight"):
                a = torch.floor(a / 4096)
    assert np.array_equal(a.numpy().astype(np.int64), ints)


def test_float_indexes_are_fragile_integer_ones_are_not():
    gc = GaussianConditional()
    table = gc.scale_table
    s = table[10:20].clone()  # scales exactly on table boundaries
    nudged = torch.nextafter(s, torch.full_like(s, 1e9))  # one float32 ulp, as a GPU might differ
    assert not torch.equal(gc.build_indexes(s), gc.build_indexes(nudged))


# ---------------------------------------------------------------------------------------
# Context model
# ---------------------------------------------------------------------------------------
def test_masked_conv_is_causal_and_sequential_equals_parallel():
    torch.manual_seed(0)
    conv = MaskedConv2d(2, 3, 5)
    x = torch.randn(1, 2, 6, 6)
    base = conv(x)
    x2 = x.clone()
    x2[:, :, 3, 3:] += 1  # change the centre and everything after it in raster order
    x2[:, :, 4:] += 1
    assert torch.allclose(conv(x2)[:, :, 3, 3], base[:, :, 3, 3])
    ctx = ContextModel(4)
    y = torch.round(torch.randn(1, 4, 5, 4) * 2)
    s = torch.rand(1, 4, 5, 4) + 0.2
    m1, s1, _ = sequential_params(ctx, y, s)
    m2, s2, _ = parallel_params(ctx, y, s)
    assert torch.allclose(m1, m2, atol=1e-5) and torch.allclose(s1, s2, atol=1e-5)
    with pytest.raises(ValueError):
        MaskedConv2d(1, 1, 4)


# ---------------------------------------------------------------------------------------
# BD-rate and anchors
# ---------------------------------------------------------------------------------------
def test_context_model_starts_as_the_hyperprior_and_training_lowers_its_rate():
    from vlmbook.codec.context import fit_context

    from vlmbook.hub import load_artifact

    torch.manual_seed(0)
    codec = load_artifact("codec-q3", HyperpriorCodec).eval()
    y = torch.round(torch.randn(2, 32, 4, 4) * 3)
    s = torch.rand(2, 32, 4, 4) * 3 + 0.2
    ctx = ContextModel(32)
    hyper = discretized_likelihood(y, s.clamp_min(0.11)).clamp_min(1e-9)
    assert torch.allclose(ctx(y, s), hyper)  # zero-initialised last layer: exactly the hyperprior
    _, hist = fit_context(codec, steps=30, crops=8, size=128, batch=8, lr=3e-3)
    assert hist[-1]["bpp_y"] < hist[0]["bpp_y"]


def test_bd_rate_near_uses_local_anchor_points():
    from vlmbook.codec.metrics import bd_rate_near

    anchor = {"bpp": [0.2, 0.3, 0.4, 0.6, 0.9, 1.4, 2.0], "psnr": [24, 26, 27, 29, 31, 33, 35]}
    bd, lo, hi = bd_rate_near(anchor, [0.22, 0.33, 0.44, 0.66], [24, 26, 27, 29])
    assert bd == pytest.approx(10.0, abs=0.5) and (lo, hi) == (24, 29)
    with pytest.raises(ValueError):
        bd_rate_near(anchor, [0.1, 0.11, 0.12, 0.13], [10, 11, 12, 13])


def test_bd_rate_known_curves():
    psnr = np.array([28.0, 31.0, 34.0, 37.0])
    rate = np.exp(0.15 * psnr) / 100
    assert bd_rate(rate, psnr, 0.8 * rate, psnr) == pytest.approx(-20.0, abs=1e-6)
    assert bd_rate(rate, psnr, rate, psnr) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(rate, psnr, 1.25 * rate, psnr + 0.0) == pytest.approx(25.0, abs=1e-6)
    with pytest.raises(ValueError):
        bd_rate(rate[:3], psnr[:3], rate[:3], psnr[:3])
    with pytest.raises(ValueError):
        bd_rate(rate, psnr, rate, psnr + 20)


def test_pillow_rd_monotone():
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    rd = pillow_rd([img], "JPEG", qualities=(10, 50, 90))
    assert rd["bpp"] == sorted(rd["bpp"]) and rd["psnr"] == sorted(rd["psnr"])
    # its PSNR is the book's one psnr (uint8 peak 255) of the decoded file
    import io

    from PIL import Image

    from vlmbook.rd.metrics import psnr
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=50)
    dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert rd["psnr"][1] == psnr(img, dec)
    with pytest.raises(ValueError):
        pillow_rd([img], "GIF")


# ---------------------------------------------------------------------------------------
# Token storage
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "binary", "parquet"])
def test_token_storage_round_trip(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow.parquet", exc_type=ImportError)  # the env's pyarrow may need NumPy >= 2
    rng = np.random.default_rng(0)
    ids = ["a", "b", "museum/7"]
    grids = [rng.integers(0, 65536, (4, 4)), rng.integers(0, 1024, (2, 8)), np.zeros((1, 1), np.int64)]
    save, load = getattr(storage, f"save_{fmt}"), getattr(storage, f"load_{fmt}")
    p = tmp_path / f"tok.{fmt}"
    save(p, ids, grids)
    ids2, grids2 = load(p)
    assert ids2 == ids and all(g2.dtype == np.uint16 and np.array_equal(g, g2) for g, g2 in zip(grids, grids2))
    with pytest.raises(ValueError):
        save(p, ["x"], [np.array([[70000]])])


def test_token_binary_size_and_corruption(tmp_path):
    p = tmp_path / "t.bin"
    storage.save_binary(p, ["x"], [np.arange(100).reshape(10, 10)])
    assert p.stat().st_size == 9 + 2 + 1 + 8 + 200 + 4
    data = bytearray(p.read_bytes())
    data[30] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(BitstreamError):
        storage.load_binary(p)


def test_codec_bench_seed_mean_and_quick_run(tmp_path, monkeypatch):
    from vlmbook.bench import codec as bench

    a = [{"bpp": 0.2, "psnr": 25.0}, {"bpp": 0.4, "psnr": 26.0}]
    b = [{"bpp": 0.3, "psnr": 24.0}, {"bpp": 0.6, "psnr": 27.0}]
    assert bench.mean_curve([a, b]) == (pytest.approx([0.25, 0.5]), pytest.approx([24.5, 26.5]))
    assert bench.mean_curve([a]) == ([0.2, 0.4], [25.0, 26.0])
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        bench.run(quick=True, seeds=0)
    # An empty cache: --quick measures only our committed seed-0 artifacts and trains nothing.
    monkeypatch.setenv("VLMBOOK_CACHE", str(tmp_path))
    res = bench.run(quick=True, seeds=2)
    t = res.table
    assert t["seeds"] == {"ours": [0], "compressai": []} and "ours_vs_compressai" not in t["bd_rate_percent"]
    # mean of one seed is that seed
    assert t["bd_rate_percent"]["ours_vs_jpeg"] == pytest.approx(t["bd_rate_percent_per_seed"]["ours_seed0_vs_jpeg"])
    assert t["bd_rate_percent"]["ours_vs_jpeg"] < -20 and not list(tmp_path.iterdir())
    # the headline is the mean-scale series against WebP (positive today: the tiny codecs lose)
    assert res.headline == pytest.approx(t["bd_rate_percent"]["meanscale_vs_webp"])
    from vlmbook.codec.models import MS_LAMBDAS, MSW_LAMBDAS

    gaps = t["meanscale_psnr_gap_to_webp_db"]
    assert len(t["meanscale"]) == len(MS_LAMBDAS) + len(MSW_LAMBDAS) == len(gaps)
    assert [p["artifact"] for p in t["meanscale"]][-2:] == ["codec-ms-q7", "codec-msw-q1"]
    assert gaps[0] is None and all(g > 0 for g in gaps if g is not None)  # below WebP's floor; else WebP wins


def test_widen_computes_what_the_base_computes_and_can_learn():
    """Chapter 3 §3.9: widened channels start silent, so the widened codec is the base codec."""
    from vlmbook.codec import widen
    from vlmbook.codec.models import rd_loss

    torch.manual_seed(0)
    base = HyperpriorCodec(CodecConfig(model="meanscale", N=8, M=12)).eval()
    with torch.no_grad():  # a trained-looking base: no zero weights anywhere
        for p in base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    wide = widen(base, N=12, M=20).eval()
    assert (wide.config.N, wide.config.M, wide.config.model) == (12, 20, "meanscale")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = base(x, "round"), wide(x, "round")
    assert b["y"].shape == (2, 20, 4, 4) and b["z_hat"].shape == (2, 12, 1, 1)
    assert torch.equal(a["x_hat"], b["x_hat"])
    assert torch.equal(a["y_hat"], b["y_hat"][:, :12])
    assert torch.allclose(a["scales"], b["scales"][:, :12]) and torch.allclose(a["means"], b["means"][:, :12])
    assert torch.equal(b["means"][:, 12:], torch.zeros_like(b["means"][:, 12:]))  # new latents: mean 0 ...
    assert b["scales"][:, 12:].unique().numel() == 1  # ... and one constant scale
    # one step moves the new synthesis weights off zero: the new channels can be learned
    opt = torch.optim.Adam(wide.train().parameters(), 1e-3)
    loss, _ = rd_loss(wide(x), x, 0.05)
    loss.backward()
    assert wide.g_s[0].weight.grad[12:].abs().sum() > 0
    opt.step()
    assert wide.g_s[0].weight[12:].abs().sum() > 0
    with pytest.raises(ValueError, match="mean-scale"):
        widen(HyperpriorCodec(CodecConfig(N=8, M=12)), M=20)
    with pytest.raises(ValueError, match="must not shrink"):
        widen(base, N=4, M=20)
    with pytest.raises(ValueError, match="one must grow"):
        widen(base)
