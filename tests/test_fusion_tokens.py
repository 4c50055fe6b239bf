"""Chapter 7 §7.4: the guide with M image tokens not tied to the 3 × 3 cells, its joint warm-up read-out,
and the token sweep's rows, latency front and Q(M) budget."""
import pytest
import torch

from tests.test_fusion_recipe import SMALL, _model
from vlmbook.fusion import VisionLanguageModel, VLMConfig
from vlmbook.fusion.data import oracle_features, patch_labels
from vlmbook.fusion.model import RECIPE
from vlmbook.fusion.warmup import CellProbe, pretrain_encoder


@pytest.fixture(scope="module")
def four():
    """The patch encoder (one token per cell: 9 in) through a Perceiver to M = 4 image tokens."""
    return _model(image_side="patch", compressor="perceiver", tokens=4)


def test_tokens_decouple_image_tokens_from_cells():
    c = VLMConfig.tiny()
    assert (c.tokens, c.image_tokens, c.cells) == (0, 9, 9)
    c4 = c.replace(tokens=4)
    assert (c4.image_tokens, c4.cells) == (4, 9)
    assert c.replace(tokens=9).image_tokens == 9
    for bad, match in ((dict(tokens=-1), "tokens"), (dict(tokens=4, compressor="cells"), "tokens.*compressor"),
                       (dict(tokens=4, cell_embed="sincos"), "tokens.*sincos"),
                       (dict(tokens=4, cite_cells=True), "tokens.*cite_cells")):
        with pytest.raises(ValueError, match=match):
            c.replace(**bad)
    with pytest.raises(ValueError, match="tokens.*image_side='vq'"):  # k-means codes are one per cell
        VLMConfig(**{**SMALL, **RECIPE, "route": "discrete", "tokens": 4})
    # pixel shuffle makes 64 / r² tokens from clip-tiny's 8 × 8 patches: 1, 4, 16 or 64, never 9 or 8
    assert [c.replace(compressor="pixel_shuffle", tokens=m).image_tokens for m in (1, 4, 16)] == [1, 4, 16]
    with pytest.raises(ValueError, match="tokens.*pixel_shuffle compressor cannot make M=8 tokens from 64"):
        c.replace(compressor="pixel_shuffle", tokens=8)
    assert c.replace(compressor="tome", tokens=5).image_tokens == 5
    with pytest.raises(ValueError, match="compressor.*cannot make M=9 tokens from 64"):
        c.replace(compressor="pixel_shuffle")  # one token per cell is not a pixel-shuffle budget
    # a model saved before the field existed has one token per cell
    old = {k: v for k, v in c.to_dict().items() if k != "tokens"}
    assert VLMConfig.from_dict(old, require_all=True).image_tokens == 9


def test_four_tokens_reach_the_lm_and_citations_still_name_nine_cells(four):
    m = four
    torch.manual_seed(0)
    images = torch.rand(2, 3, 72, 72)
    assert m.encoder(images).shape == (2, 9, 32)  # one token per cell in
    assert m.image_features(images).shape == (2, 4, 32)
    ids = m.prompt_ids("What colour is the star?", "red", [8])
    assert ids.count(m.ids["image"]) == 4
    assert m.patch_range[1] - m.patch_range[0] == 9  # <p_0> … <p_8>: the cells
    assert m.citation_ids([0, 8])[1:3] == [m.patch_range[0], m.patch_range[0] + 8]
    with pytest.raises(ValueError, match="out of range for 9"):
        m.citation_ids([9])
    x = torch.tensor([ids, ids])
    logits = m(x, images=images)
    assert logits.shape[:2] == x.shape and torch.isfinite(logits).all()
    m.train()
    loss = logits.float().logsumexp(-1).mean()
    loss.backward()
    grads = [p.grad for p in m.compressor.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)  # the loss reaches the compressor
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())
    m.zero_grad(set_to_none=True)
    m.eval()


def test_four_token_model_round_trips(four, tmp_path):
    four.save_pretrained(tmp_path / "m4")
    back = VisionLanguageModel.from_pretrained(tmp_path / "m4").eval()
    assert back.config.tokens == 4 and back.config.image_tokens == 4
    image = torch.rand(1, 3, 72, 72)
    ids = torch.tensor([four.prompt_ids("What colour is the star?")])
    assert torch.equal(four(ids, images=image), back(ids, images=image))


def test_joint_probe_with_block_diagonal_heads_equals_per_token_heads():
    """With M = cells, a joint read-out whose weights are block-diagonal copies of per-token heads gives
    the per-token logits: the joint probe generalises token k = cell k."""
    torch.manual_seed(0)
    per = CellProbe(torch.nn.Identity(), 6)
    joint = CellProbe(torch.nn.Identity(), 6, tokens=9, cells=9, joint=True)
    with torch.no_grad():
        for hp, hj in zip(per.heads, joint.heads):
            n = hp.out_features
            hj.weight.zero_()
            for k in range(9):
                hj.weight[k * n:(k + 1) * n, k * 6:(k + 1) * 6] = hp.weight
            hj.bias.copy_(hp.bias.repeat(9))
    f = torch.randn(5, 9, 6)
    for a, b in zip(per.logits(f), joint.logits(f)):
        assert a.shape == b.shape == (5, 9, a.shape[-1])
        torch.testing.assert_close(a, b)


def test_joint_probe_shapes_golden_and_errors():
    torch.manual_seed(0)
    probe = CellProbe(torch.nn.Identity(), 8, tokens=4, cells=9, joint=True)
    torch.manual_seed(1)
    out = probe.logits(torch.randn(3, 4, 8))
    assert [z.shape for z in out] == [(3, 9, z.shape[-1]) for z in out]
    assert [z.shape[-1] for z in out] == [h.out_features // 9 for h in probe.heads]
    assert out[0].dtype == torch.float32
    torch.testing.assert_close(out[0][0, 0, :3], torch.tensor([-0.3989, 0.7277, -0.8253]), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="per-token heads need one token per cell"):
        CellProbe(torch.nn.Identity(), 8, tokens=4, cells=9)
    with pytest.raises(ValueError, match="joint read-out needs tokens and cells"):
        CellProbe(torch.nn.Identity(), 8, joint=True)


def test_warm_up_packs_nine_cells_into_fewer_tokens():
    """pretrain_encoder picks the joint read-out when M ≠ cells, and it learns: from 4 tokens that together
    hold the 9 cells' one-hot attributes (a fixed random mixing), the heads read every cell."""
    labels = patch_labels("train", 256, 3)
    oh = oracle_features(labels).flatten(1)  # (n, 9 * ORACLE_DIM)
    torch.manual_seed(0)
    mix = torch.randn(oh.shape[1], 4 * 32) / oh.shape[1] ** 0.5
    images = (oh @ mix).view(-1, 4, 32)  # stand-in "images": the encoder is the identity
    _, probe = pretrain_encoder(torch.nn.Identity(), images, labels, steps=300, batch_size=64, lr=1e-2, seed=0,
                                return_probe=True)
    assert probe.joint and probe.cells == 9
    read = probe.readout(images, labels)
    assert read["all_three"] > 95.0, read
    # the same budget of per-token heads cannot do it: they need one token per cell
    with pytest.raises(ValueError, match="one token per cell"):
        CellProbe(torch.nn.Identity(), 32, tokens=4, cells=9, joint=False)


def test_run_cell_with_four_tokens_records_its_image_side():
    from vlmbook.fusion.ablation import run_cell, variant_config

    rec, vlm = run_cell("curriculum", 0, 6, "clip", "continuous", train_scenes=64, test_scenes=8, encoder_steps=3,
                        tokens=4, joint=True, return_model=True)
    assert rec["image_tokens"] == 4 and rec["encoder_joint"] is True and rec["encoder_artifact"] == ""
    assert vlm.config.image_tokens == 4 and vlm.config.cells == 9
    assert vlm.image_features(torch.rand(2, 3, 64, 64)).shape == (2, 4, vlm.config.hidden)
    assert 0.0 <= rec["accuracy"]["all"] <= 100.0
    assert variant_config("curriculum", "gated", "clip", tokens=16, compressor="qformer").compressor == "qformer"
    with pytest.raises(ValueError, match="clip source"):
        variant_config("curriculum", "continuous", "oracle", tokens=4)


def _rec(route, M, acc, seed=0, comp="perceiver", variant="curriculum", joint=True):
    return {"source": "clip", "route": route, "variant": variant, "compressor": comp, "image_tokens": M,
            "encoder_joint": joint, "steps": 3000, "seed": seed,
            "accuracy": {"all": acc, "single": acc, "relational": acc / 2, "cite_precision": 90.0, "cite_recall": 80.0}}


def test_token_rows_group_seeds_and_reject_mixed_sweeps():
    from vlmbook.eval.sweeps import token_rows

    rows = token_rows([_rec("continuous", 9, 80.0), _rec("continuous", 4, 60.0), _rec("continuous", 4, 70.0, seed=1),
                       _rec("gated", 4, 30.0)])
    assert [(r["route"], r["image_tokens"], r["seeds"]) for r in rows] == [("continuous", 4, 2), ("continuous", 9, 1),
                                                                          ("gated", 4, 1)]
    assert rows[0]["accuracy"] == 65.0 and (rows[0]["accuracy_min"], rows[0]["accuracy_max"]) == (60.0, 70.0)
    assert rows[0]["relational"] == 32.5 and rows[0]["cite_precision"] == 90.0
    with pytest.raises(ValueError, match="one variant"):
        token_rows([_rec("continuous", 4, 60.0), _rec("continuous", 9, 60.0, variant="recipe")])
    with pytest.raises(ValueError, match="source 'clip'"):
        token_rows([{**_rec("continuous", 4, 60.0), "source": "oracle"}])
    with pytest.raises(ValueError, match="no records"):
        token_rows([])
    with pytest.raises(ValueError, match=r"lacks \['image_tokens'\]"):
        token_rows([{k: v for k, v in _rec("continuous", 4, 60.0).items() if k != "image_tokens"}])


def test_guide_budget_recovers_the_knee_of_a_known_curve():
    from vlmbook.eval.sweeps import guide_budget, token_rows

    q = lambda M: 90.0 - 40.0 / (M + 1.0)  # noqa: E731  accuracy in %
    recs = [_rec("continuous", M, q(M)) for M in (1, 4, 9, 16, 36)] + [_rec("gated", M, 30.0) for M in (4, 9)]
    out = guide_budget(token_rows(recs), context=512, text_len=96, tolerance=1.0)
    assert list(out) == ["continuous/perceiver"]  # gated has two budgets only: no fit
    c = out["continuous/perceiver"]["curve"]
    assert abs(c.a - 0.90) < 1e-3 and abs(c.b - 0.40) < 1e-3 and abs(c.c - 1.0) < 1e-2
    # the best the compressor can make from 64 patches is q(64); the fewest M within one point of it
    want = min(M for M in range(1, 65) if q(M) >= q(64) - 1.0)
    assert want == 24 and out["continuous/perceiver"]["M_star"] == want
    with pytest.raises(ValueError, match="three or more"):
        guide_budget(token_rows(recs[-2:]))


def test_token_latency_times_each_configuration_and_marks_the_front():
    from vlmbook.eval.sweeps import token_latency, token_rows

    rows = token_latency(token_rows([_rec("continuous", 1, 40.0), _rec("continuous", 16, 80.0),
                                     _rec("gated", 1, 20.0)]), repeats=1)
    assert [r["image_tokens"] for r in rows] == [1, 16, 1]
    assert all(r["ttft_ms"] > 0 and r["tokens_per_s"] > 0 and r["threads"] == 1 for r in rows)
    best = max(rows, key=lambda r: r["accuracy"])
    assert best["pareto"]  # the most accurate configuration is always on the front
    fastest = min(rows, key=lambda r: (r["ttft_ms"], -r["accuracy"]))
    assert fastest["pareto"]


def test_budget_and_pareto_figures_label_the_guide_sweep():
    from vlmbook.plot.eval import pareto_figure
    from vlmbook.plot.resample import accuracy_vs_budget

    rows = [{"kind": "continuous", "M": m, "accuracy": a} for m, a in ((1, 36.0), (4, 52.0), (16, 70.0))]
    fig = accuracy_vs_budget(rows, full=89.9, ylabel="guide accuracy (%)", full_label="one token per cell")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "guide accuracy (%)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["continuous", "one token per cell"]
    pts = [{"route": "gated", "variant": "curriculum", "compressor": "perceiver", "image_tokens": 4, "seeds": 1,
            "accuracy": 30.0, "accuracy_min": 30.0, "accuracy_max": 30.0, "ttft_ms": 5.0, "pareto": True}]
    labels = [t.get_text() for t in pareto_figure(pts).axes[0].get_legend().get_texts()]
    assert "gated · curriculum (perceiver, M=4, 1 seed)" in labels


def test_committed_token_sweep_record():
    """The committed sweep: the curriculum recipe per (route, compressor, M); on the continuous and gated
    routes every image side warmed up in the run with the joint read-out, on the discrete route Chapter 2's
    tokenizer of that code grid; three seeds per M for each route's main line, and Q(M) fitted to each."""
    from vlmbook.bench.vlm import ABLATION, load_ablation
    from vlmbook.eval.sweeps import TOKEN_RECORD, guide_budget, token_rows
    from vlmbook.vq.tokenizer import TOKEN_ARTIFACTS

    recs = load_ablation(ABLATION.with_name(TOKEN_RECORD))
    for r in recs:
        assert (r["variant"], r["steps"], r["threads"]) == ("curriculum", 3000, 1)
        if r["route"] == "discrete":
            assert (r["source"], r["compressor"], r["encoder_steps"]) == ("vq", "none", 0)
            assert r["vq_artifact"] == TOKEN_ARTIFACTS[r["image_tokens"]]
        else:
            assert r["source"] == "clip" and r["encoder_joint"] is True and r["encoder_artifact"] == ""
            assert r["encoder_steps"] == 1500
        assert r["accuracy"]["step"] == 3000 and r["accuracy"]["greedy"] is True
    rows = token_rows(recs)
    seeds = {(r["route"], r["compressor"], r["image_tokens"]): r["seeds"] for r in rows}
    for line in (("continuous", "perceiver"), ("gated", "perceiver"), ("discrete", "vq")):
        assert [seeds.get((*line, m)) for m in (1, 4, 9, 16)] == [3, 3, 3, 3], line
    fit = guide_budget(rows)
    for key in ("continuous/perceiver", "gated/perceiver", "discrete/vq"):
        assert 1 <= fit[key]["M_star"] <= 64


# VLMBOOK_SLOW=2 pytest tests/test_fusion_tokens.py: one point of the sweep retrained (about 5 minutes, one thread)
@pytest.mark.skipif(__import__("os").environ.get("VLMBOOK_SLOW") != "2", reason="retrains a guide; set VLMBOOK_SLOW=2")
def test_rebuild_reproduces_a_token_sweep_point():
    from vlmbook.bench.vlm import ABLATION, load_ablation
    from vlmbook.eval.sweeps import TOKEN_RECORD
    from vlmbook.fusion.ablation import run_cell

    want = next(r for r in load_ablation(ABLATION.with_name(TOKEN_RECORD))
                if (r["route"], r["compressor"], r["image_tokens"]) == ("continuous", "perceiver", 4))
    got = run_cell("curriculum", 0, 3000, "clip", "continuous", tokens=4, joint=True)
    assert got["accuracy"]["all"] == pytest.approx(want["accuracy"]["all"], abs=1.0)


def test_encoder_readout_of_a_four_token_image_side():
    from vlmbook.fusion.ablation import encoder_readout

    rec = encoder_readout("perceiver", 3e-3, steps=2, test_scenes=6, tokens=4, joint=True)
    assert rec["image_tokens"] == 4 and rec["joint"] is True and rec["steps"] == 2
    assert all(0.0 <= rec[k] <= 100.0 for k in ("colour", "shape", "size", "all_three"))
    assert "image_tokens" not in encoder_readout("cells", 3e-3, steps=1, test_scenes=3)  # the committed records' form
