"""Chapter 7 §7.5: the accuracy–latency sweep over the ablation's configurations."""
from __future__ import annotations

import itertools

import pytest

from vlmbook.eval.sweeps import accuracy_latency, pareto_front

#: (PSNR dB, MS-SSIM) of the seeded untrained tokenizer of test_tokenizer_metrics_shape_golden_and_batching
GOLDEN_TOKENIZER = (14.955, 0.4753)


def test_pareto_front_golden_and_property():
    lat = [5.0, 1.0, 3.0, 2.0, 4.0, 2.0]
    acc = [90.0, 40.0, 80.0, 30.0, 60.0, 50.0]
    front = pareto_front(lat, acc)
    assert front == [1, 5, 2, 0]  # golden: sorted by latency, accuracy rising along it
    on = set(front)
    for i, j in itertools.product(range(len(lat)), repeat=2):
        if i in on and i != j:  # nothing beats a front point on both axes
            assert not (lat[j] <= lat[i] and acc[j] >= acc[i] and (lat[j], acc[j]) != (lat[i], acc[i]))
    for j in set(range(len(lat))) - on:  # every other point is beaten by one on the front
        assert any(lat[i] <= lat[j] and acc[i] >= acc[j] for i in on)
    assert pareto_front([1.0, 1.0], [5.0, 5.0]) == [0]
    with pytest.raises(ValueError, match="points"):
        pareto_front([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        pareto_front([float("nan")], [1.0])


def _rec(source, route, variant, seed, acc):
    # the fields an ablation record carries (vlmbook.fusion.ablation.run_cell)
    return {"source": source, "route": route, "variant": variant, "seed": seed, "steps": 3000, "levers": {},
            "image_tokens": 9, "threads": 1, "steps_per_s": 10.0, "accuracy": {"all": acc}}


def test_accuracy_latency_measures_each_encoder_configuration():
    from vlmbook.plot import to_png
    from vlmbook.plot.eval import pareto_figure

    records = [_rec("clip", "continuous", "curriculum", s, a) for s, a in ((0, 80.0), (1, 90.0))]
    records += [_rec("vq", "discrete", "recipe", 0, 30.0), _rec("oracle", "continuous", "recipe", 0, 99.0)]
    rows = accuracy_latency(records, repeats=1)
    assert [(r["source"], r["route"], r["variant"]) for r in rows] == [("clip", "continuous", "curriculum"),
                                                                       ("vq", "discrete", "recipe")]
    assert [(r["route"], r["seeds"], r["accuracy"]) for r in rows] == [("continuous", 2, 85.0), ("discrete", 1, 30.0)]
    assert rows[0]["compressor"] == "perceiver" and rows[1]["compressor"] == "none"
    assert all(r["ttft_ms"] > 0 and r["tokens_per_s"] > 0 and r["image_tokens"] == 9 for r in rows)
    assert rows[0]["pareto"]  # the more accurate one is always on the front
    assert to_png(pareto_figure(rows))[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="nothing to sweep"):
        accuracy_latency(records[-1:])


def _tiny_tokenizer(down: int = 3):
    import torch

    from vlmbook.vq import TokenizerConfig, VQTokenizer

    torch.manual_seed(0)
    return VQTokenizer(TokenizerConfig(downsample=down, channels=16, res_blocks=0, codebook_size=32,
                                       kmeans_init=False)).eval()


def test_tokenizer_metrics_shape_golden_and_batching():
    from vlmbook.eval.sweeps import tokenizer_metrics
    from vlmbook.vq import eval_images

    images = eval_images(6, 64)
    model = _tiny_tokenizer()
    m = tokenizer_metrics(model, images)
    assert set(m) == {"psnr", "ms_ssim", "usage", "perplexity", "tokens_per_image", "codebook_size"}
    assert m["tokens_per_image"] == 64 and m["codebook_size"] == 32  # 64 px through 3 stride-2 stages: 8 x 8
    assert 0 < m["ms_ssim"] <= 1 and 0 < m["usage"] <= 1
    assert (m["psnr"], m["ms_ssim"]) == pytest.approx(GOLDEN_TOKENIZER, abs=2e-3)  # seeded untrained model
    # property: the figures do not depend on how the images are split into batches
    m2 = tokenizer_metrics(model, images, batch=4)
    assert m2["ms_ssim"] == pytest.approx(m["ms_ssim"], abs=1e-4) and m2["usage"] == m["usage"]
    with pytest.raises(ValueError, match="S, 3, H, W"):
        tokenizer_metrics(model, images[:, :1])


def test_tokenizer_ms_ssim_orders_reconstructions():
    # property: MS-SSIM is 1 for a perfect copy and falls as noise grows (checked through the metric's settings)
    import torch
    from pytorch_msssim import ms_ssim

    from vlmbook.eval.sweeps import MS_SSIM_WINDOW
    from vlmbook.vq import eval_images

    x = eval_images(4, 64).double()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    scores = [float(ms_ssim((x + s * noise).clamp(0, 1), x, data_range=1.0, win_size=MS_SSIM_WINDOW))
              for s in (0.0, 0.05, 0.2)]
    assert scores[0] == pytest.approx(1.0) and scores[0] > scores[1] > scores[2]


def test_tokenizer_sweep_rows_round_trip_through_the_metrics_schema(tmp_path):
    from vlmbook.eval.metrics import metrics_table, read_metrics, write_metrics
    from vlmbook.eval.sweeps import tokenizer_rows, tokenizer_sweep

    rows = tokenizer_sweep(steps=2, downsamples=(3, 4), batch_size=4, n_eval=4)
    assert [r["tokens_per_image"] for r in rows] == [16, 64]  # fewest tokens first
    assert all(r["steps"] == 2 and r["codebook_size"] == 256 for r in rows)
    path = write_metrics(metrics_table("tokenizer_sweep", {"rows": rows, "date": "today"}), tmp_path / "t.csv")
    back = tokenizer_rows(read_metrics(path))
    assert [r["tokens_per_image"] for r in back] == [16, 64]
    for r, b in zip(rows, back):
        assert {k: b[k] for k in ("psnr", "ms_ssim", "usage")} == pytest.approx({k: r[k] for k in ("psnr", "ms_ssim", "usage")})
    from vlmbook.plot import to_png
    from vlmbook.plot.eval import tokenizer_sweep_figure

    assert to_png(tokenizer_sweep_figure(back))[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no tokenizer sweep rows"):
        tokenizer_rows(metrics_table("x", {"rows": [{"psnr": 1.0}]}))
    with pytest.raises(ValueError, match="steps"):
        tokenizer_sweep(steps=0)


def test_budget_rows_and_token_budget_match_chapter_4():
    import numpy as np

    from vlmbook.eval.metrics import metrics_table
    from vlmbook.eval.sweeps import budget_rows, token_budget
    from vlmbook.resample import choose_budget, fit_budget_curve

    # accuracy rising as a - b / (M + c) for one compressor, plus the uncompressed reference
    ms = [1, 2, 4, 8, 16, 32, 64]
    truth = lambda m: 0.8 - 0.3 / (m + 1.0)  # noqa: E731
    probe = [{"kind": "all", "M": 64, "accuracy": 0.81}] + [{"kind": "perceiver", "M": m, "accuracy": truth(m)} for m in ms]
    probe += [{"kind": "tome", "M": 4, "accuracy": 0.5}, {"kind": "tome", "M": 16, "accuracy": 0.6}]  # too few to fit
    rows = budget_rows(metrics_table("resample", {"probe": probe, "cost": [{"N": 64}]}))
    assert rows == probe
    out = token_budget(rows, context=512, text_len=96)
    assert list(out) == ["perceiver"]  # 'all' is the reference and tome has two budgets only
    c = out["perceiver"]["curve"]
    assert (c.a, c.b, c.c) == pytest.approx((0.8, 0.3, 1.0), abs=1e-3)  # golden: the fit recovers the curve
    ref = fit_budget_curve(ms, [truth(m) for m in ms])
    assert out["perceiver"]["M_star"] == choose_budget(512, 96, ref, 0.01, list(range(1, 65))) == 20  # 0.8 - 0.3/(M + 1) within 0.01 of M = 64
    # property: a context with room for fewer image tokens never gets a larger budget
    small = token_budget(rows, context=96 + 8, text_len=96)["perceiver"]["M_star"]
    assert small <= out["perceiver"]["M_star"] and small <= 8
    assert np.isfinite(c.rmse)
    with pytest.raises(ValueError, match="no probe rows"):
        budget_rows(metrics_table("resample", {"cost": [1.0]}))


def test_tokenizer_summary_golden_and_single_seed_property():
    from vlmbook.eval.sweeps import tokenizer_summary
    from vlmbook.plot import to_png
    from vlmbook.plot.eval import tokenizer_sweep_figure

    def row(t, seed, psnr):
        return {"tokens_per_image": t, "seed": seed, "psnr": psnr, "ms_ssim": psnr / 30, "usage": 0.9, "perplexity": 100.0}

    rows = [row(64, 0, 20.0), row(16, 0, 17.0), row(16, 1, 19.0)]
    s = tokenizer_summary(rows)
    assert [(r["tokens_per_image"], r["seeds"]) for r in s] == [(16, 2), (64, 1)]
    assert s[0]["psnr"] == pytest.approx(18.0) and s[0]["psnr_std"] == pytest.approx(2 ** 0.5)  # golden, ddof = 1
    assert s[1]["psnr"] == 20.0 and s[1]["psnr_std"] == 0.0  # property: one seed is its own mean, no spread
    assert s[0]["usage_std"] == 0.0 and set(s[0]) >= {"ms_ssim", "ms_ssim_std", "perplexity", "perplexity_std"}
    assert to_png(tokenizer_sweep_figure(s))[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="one row per tokens-per-image"):
        tokenizer_sweep_figure(rows)
    with pytest.raises(ValueError, match="at least one row"):
        tokenizer_summary([])


def test_build_tokenizer_record_writes_every_seed(tmp_path, monkeypatch):
    from vlmbook.eval import sweeps
    from vlmbook.eval.metrics import read_metrics

    def fake(steps, seed=0, **_):  # the training itself is tested above; here only the record
        return [{"downsample": d, "steps": steps, "seed": seed, "tokens_per_image": (64 // 2 ** d) ** 2, "psnr": 10.0 + seed,
                 "ms_ssim": 0.5, "usage": 0.9, "perplexity": 50.0, "codebook_size": 256} for d in (4, 3)]

    monkeypatch.setattr(sweeps, "tokenizer_sweep", fake)
    assert sweeps.main(["tokenizers", "--steps", "3", "--seeds", "1,0", "--out", str(tmp_path / "t.csv")]) == 0
    table = read_metrics(tmp_path / "t.csv")
    rows = sweeps.tokenizer_rows(table)
    assert [(r["tokens_per_image"], r["seed"]) for r in rows] == [(16, 0), (16, 1), (64, 0), (64, 1)]
    paths = table.column("path").to_pylist()
    assert "recipe/seeds" in paths and "load_average/before" in paths and "threads" in paths
