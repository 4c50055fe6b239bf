"""Chapter 5 §5.7–5.8: the recipe's levers, citations with <p_k>, oracle features, greedy evaluation."""
import pytest
import torch

from vlmbook.data import Museum, generate_scene, questions, support_patches
from vlmbook.fusion import VisionLanguageModel, VLMConfig
from vlmbook.fusion.data import ORACLE_DIM, Batcher, museum_qa, oracle_features, patch_labels, with_oracle_features
from vlmbook.fusion.evaluate import evaluate, score_answers, teacher_forced_accuracy
from vlmbook.fusion.grounding import format_citation, parse_citations
from vlmbook.fusion.masks import block_mask, image_spans
from vlmbook.fusion.model import RECIPE, CellPool, batch_block_mask
from vlmbook.fusion.text import museum_answers

SMALL = dict(hidden=32, intermediate=64, enc_channels=8, layers=2, corpus_scenes=200, codebook_size=32, image_size=72,
             grid=3)


def _model(**kw):
    torch.manual_seed(0)
    return VisionLanguageModel(VLMConfig(**{**SMALL, **RECIPE, **kw})).eval()


@pytest.fixture(scope="module")
def recipe():
    return _model()


@pytest.fixture(scope="module")
def oracle():
    return _model(image_side="features", feature_dim=ORACLE_DIM)


@pytest.fixture(scope="module")
def val():
    return with_oracle_features(museum_qa("val", 3, 72))


def test_prompt_layout_and_cite_first_answer(recipe):
    m = recipe
    ids = m.prompt_ids("What colour is the star?", "red", [4, 5])
    toks = m.tokenizer.convert_ids_to_tokens(ids)
    q = m.tokenizer.convert_ids_to_tokens(m.encode_text("What colour is the star?"))
    assert toks == ["<bos>", "<|user|>", *q, *["<image>"] * 9, "</image>", "<|assistant|>",
                    "[CITE:", "<p_4>", "<p_5>", "]", "red", "<|end|>"]
    assert m.decode_answer(ids[-6:]) == "[CITE:<p_4><p_5>] red"
    assert parse_citations(m.decode_answer(ids[-6:])) == ("red", [4, 5])
    image_first = _model(layout="image_first", cite=False)
    assert image_first.prompt_ids("What?")[:2 + 9 + 1] == [image_first.ids["bos"], image_first.ids["user"]] + \
        [image_first.ids["image"]] * 9 + [image_first.ids["image_end"]]
    with pytest.raises(ValueError, match="out of range"):
        m.citation_ids([9])


def test_patch_tokens_are_their_own_family(recipe):
    m = recipe
    lo, hi = m.patch_range
    vlo, vhi = m.visual_range
    assert hi - lo == 9 and vhi - vlo == 32 and (hi <= vlo or vhi <= lo)
    assert m.tokenizer.convert_ids_to_tokens(list(range(lo, hi))) == [f"<p_{k}>" for k in range(9)]


def test_closed_answers_are_one_token_per_word(recipe):
    m = recipe
    toks = m.tokenizer.convert_ids_to_tokens
    assert all(toks(m.encode_text(a)) == [w for w in a.split()] for a in museum_answers() if " " not in a)
    assert toks(m.encode_text("white star")) == ["white", "Ġ", "star"]
    # the question spells the object with the same word tokens as the answers, never one compound token
    q = toks(m.encode_text("Where is the white star?"))
    assert "white" in q and "star" in q and not any(" " in t for t in q)
    assert m.decode_answer(m.answer_ids("white star", [2])) == "[CITE:<p_2>] white star"
    seen = {qa.answer for i in range(30) for qa in questions(generate_scene("train", i)) if qa.qtype != "plaque"}
    assert seen <= set(museum_answers())
    assert len(_model(closed_answers=False).encode_text(" red star")) > 1


def test_full_prefix_mask_and_batched_block_mask():
    m = _model(mask="full_prefix")
    ids = torch.tensor([m.prompt_ids("What colour is the star?", "red", [1])])
    allowed = m.attention_mask(ids)[0, 0] == 0
    a = int((ids[0] == m.ids["assistant"]).nonzero()[0])
    assert allowed[1, a] and allowed[2, a - 2]           # the question sees the image after it
    assert not allowed[a, a + 1] and allowed[a + 1, a]   # the answer stays causal
    # the batched mask equals Chapter 5's block_mask row by row (random block layouts)
    g = torch.Generator().manual_seed(0)
    blocks = torch.rand(5, 12, generator=g) < 0.5
    got = batch_block_mask(blocks)
    for r in range(5):
        spans = image_spans(blocks[r].long(), [1])
        assert torch.equal(got[r], block_mask(12, spans))


def test_cell_embeddings_tell_tokens_apart():
    """Without cell embeddings, permuting the image tokens' features changes nothing the answer reads
    except through RoPE; with them, each token's value carries its cell."""
    m = _model(image_side="features", feature_dim=ORACLE_DIM, cell_embed="sincos")
    f = oracle_features(patch_labels("train", 1, 3))
    x = m.image_features(features=f)
    y = m.image_features(features=f[:, torch.arange(8, -1, -1)])
    assert not torch.allclose(x, y.flip(1), atol=1e-6)
    n = _model(image_side="features", feature_dim=ORACLE_DIM, cell_embed="none")
    assert torch.allclose(n.image_features(features=f), n.image_features(features=f[:, torch.arange(8, -1, -1)]).flip(1))
    with pytest.raises(ValueError, match="cell_embed"):
        VLMConfig(cell_embed="everywhere")


@pytest.mark.parametrize("route", ["continuous", "gated", "discrete"])
def test_generate_cached_equals_uncached_and_logprobs(route, val):
    kw = dict(route=route) if route == "discrete" else dict(route=route, image_side="features", feature_dim=ORACLE_DIM)
    m = _model(**kw)
    if route == "discrete":
        m.quantizer.fit(Museum("train", 72).tensors(0, 8), iters=2)
    if route == "gated":
        for b in m.adapter.blocks:
            torch.nn.init.constant_(b.attn_gate, 0.7)
    side = {"codes": m.quantizer.encode(val.images[:2])} if route == "discrete" else {"features": val.features[:2]}
    q = torch.tensor([m.encode_text("What colour is the star?") + [m.ids["assistant"]]] * 2)
    a, lp = m.generate(None, q, max_new_tokens=5, return_logprobs=True, **side)
    b = m.generate(None, q, max_new_tokens=5, use_cache=False, **side)
    assert torch.equal(a, b) and lp.shape == a.shape and bool((lp <= 0).all())
    # the log-probs of what it emitted equal answer_logprobs of those tokens under the model
    prompt = m.question_prompt(q)
    full = torch.cat([prompt, a], 1)
    targets = torch.zeros_like(full, dtype=torch.bool)
    targets[:, prompt.shape[1] - 1:full.shape[1] - 1] = True
    ended = torch.cumsum((a == m.ids["end"]).long(), 1)
    keep = (ended == 0) | ((ended == 1) & (a == m.ids["end"]))  # up to and including the first <|end|>
    targets[:, prompt.shape[1] - 1:full.shape[1] - 1] &= keep
    assert torch.allclose(m.answer_logprobs(full, targets, **side), lp.sum(1), atol=1e-4)
    # stop_token=-1 never stops
    assert m.generate(None, q, max_new_tokens=4, stop_token=-1, **side).shape == (2, 4)


def test_question_first_has_no_reusable_prefix(recipe, val):
    with pytest.raises(ValueError, match="image_first"):
        recipe.cache_prefix(val.images[:1])


def test_from_pretrained_loads_tokenizer_without_training(recipe, val, tmp_path, monkeypatch):
    recipe.save_pretrained(tmp_path / "m")
    import vlmbook.fusion.text as text

    def boom(*a, **k):
        raise AssertionError("from_pretrained must not train a tokenizer")
    monkeypatch.setattr(text, "train_bpe_tokenizer", boom)
    text._cached_museum_tokenizer.cache_clear()
    m2 = VisionLanguageModel.from_pretrained(tmp_path / "m")
    assert type(m2) is VisionLanguageModel and m2.tokenizer.get_vocab() == recipe.tokenizer.get_vocab()
    ids = torch.tensor([recipe.prompt_ids("What colour is the star?", "red", [3])])
    assert torch.equal(m2(ids, images=val.images[:1]), recipe(ids, images=val.images[:1]))


def test_oracle_features_are_one_hot_cells():
    lab = patch_labels("train", 4, 3)
    f = oracle_features(lab)
    assert f.shape == (4, 9, ORACLE_DIM) and torch.equal(f.sum(-1), torch.full((4, 9), 3.0))
    n_obj = [len(generate_scene("train", i).objects) for i in range(4)]
    assert (lab[..., 0] > 0).sum(1).tolist() == n_obj
    with pytest.raises(ValueError):
        oracle_features(lab[..., :2])


def test_support_patches_are_object_cells_at_grid_3():
    """At the book's 3 × 3 grid a citation is the cell of each supporting object, in the order the
    question names them, so a perfect cell reader can cite exactly."""
    for i in range(20):
        s = generate_scene("train", i)
        for qa in questions(s):
            if qa.qtype == "plaque":
                continue
            got = support_patches(s, qa, 3)
            assert sorted(got) == sorted({s.objects[j].cell for j in qa.objects})
            named = [o for o in s.objects if o.name in qa.question]
            if qa.qtype in ("spatial", "compare"):
                assert got == [o.cell for o in sorted(named, key=lambda o: qa.question.index(o.name))]
    # the coverage rule of earlier editions stays available
    s = generate_scene("train", 0)
    qa = questions(s)[0]
    assert set(support_patches(s, qa, 3)) <= set(support_patches(s, qa, 3, min_cover=0.01))
    with pytest.raises(ValueError, match="min_cover"):
        support_patches(s, qa, 3, min_cover=0.0)


def test_score_answers_and_greedy_evaluate(oracle, val):
    truth = [format_citation(p) + " " + it[2] for it, p in zip(val.items, val.patches)]
    perfect = score_answers(truth, val)
    assert perfect["all"] == 100.0 and perfect["cite_precision"] == 100.0 and perfect["cite_recall"] == 100.0
    wrong = score_answers(["[CITE:] nothing"] * len(val), val)
    assert wrong["all"] == 0.0 and wrong["cite_precision"] == 100.0 and wrong["cite_recall"] < 100.0
    acc = evaluate(oracle, val)
    answers = []
    for img, q, _, _ in val.items:
        qi = torch.tensor([oracle.encode_text(q) + [oracle.ids["assistant"]]])
        out = oracle.generate(None, qi, max_new_tokens=17, features=val.features[img:img + 1])
        answers.append(oracle.decode_answer(out[0].tolist()))
    assert acc == score_answers(answers, val)
    # teacher forcing counts a whole answer right only when greedy decoding reproduces it exactly
    tf = teacher_forced_accuracy(oracle, val)
    ref = [oracle.decode_answer(oracle.answer_ids(it[2], p)) for it, p in zip(val.items, val.patches)]
    assert tf["all"] == round(100.0 * sum(a == r for a, r in zip(answers, ref)) / len(ref), 2)


def test_batcher_needs_patches_for_citing_model(recipe):
    data = museum_qa("train", 3, 72)
    b = Batcher(recipe, data, 4).batch(0)
    assert int(b["targets"].sum()) == len(b["labels"])
    with pytest.raises(ValueError, match="supporting patches"):
        Batcher(recipe, data.__class__(data.images, data.items), 4)


def test_clip_image_side_with_chapter4_compressors():
    x = torch.arange(2 * 64 * 4, dtype=torch.float32).view(2, 64, 4)
    pooled = CellPool(3)(x)
    ref = torch.nn.functional.adaptive_avg_pool2d(x.transpose(1, 2).reshape(2, 4, 8, 8), 3).flatten(2).transpose(1, 2)
    assert pooled.shape == (2, 9, 4) and torch.equal(pooled, ref)
    imgs = Museum("train", 64).tensors(0, 2)
    for comp in ("cells", "perceiver"):
        m = _model(image_side="clip", compressor=comp, image_size=64)
        ids = torch.tensor([m.prompt_ids("What colour is the star?", "red", [0])] * 2)
        assert m(ids, images=imgs).shape[:2] == ids.shape
    with pytest.raises(ValueError, match="compressor"):
        VLMConfig(image_side="clip", image_size=64)
    with pytest.raises(ValueError, match="image_size"):
        VLMConfig(image_side="clip", compressor="cells", image_size=72)


def test_bench_summarises_ablation_records(tmp_path):
    from vlmbook.bench.vlm import load_ablation, summarise

    def rec(seed, all_):
        return {"variant": "recipe", "seed": seed, "steps": 10, "source": "clip", "route": "continuous",
                "levers": {}, "image_tokens": 9, "threads": 1, "steps_per_s": 2.0,
                "accuracy": {"all": all_, "single": all_, "relational": 0.0, "cite_precision": 90.0}}
    p = tmp_path / "a.jsonl"
    import json
    p.write_text("".join(json.dumps(rec(s, a)) + "\n" for s, a in ((0, 70.0), (1, 80.0), (2, 90.0))))
    row = summarise(load_ablation(p))["clip/continuous/recipe/10"]
    assert row["seeds"] == [0, 1, 2] and row["all"] == {"mean": 80.0, "min": 70.0, "max": 90.0}
    assert "colour" not in row and row["cite_precision"]["mean"] == 90.0
    with pytest.raises(ValueError, match="not found"):
        load_ablation(tmp_path / "missing.jsonl")
    p.write_text("{")
    with pytest.raises(ValueError, match="JSON lines"):
        load_ablation(p)


def test_qk_norm_lm_is_the_llama_with_normed_queries_and_keys():
    from transformers import LlamaForCausalLM, Qwen3ForCausalLM

    from vlmbook.fusion.text import LMConfig, build_lm

    cfg = LMConfig(vocab_size=64, hidden=32, layers=2, heads=4, kv_heads=4, intermediate=64)
    plain, normed = build_lm(cfg), build_lm(cfg.replace(qk_norm=True))
    assert isinstance(plain, LlamaForCausalLM) and isinstance(normed, Qwen3ForCausalLM)
    a = dict(plain.named_parameters())
    b = dict(normed.named_parameters())
    extra = sorted(set(b) - set(a))
    assert set(a) <= set(b) and extra and all(k.endswith(("q_norm.weight", "k_norm.weight")) for k in extra)
    # with unit norm weights and the same seed, only the q/k normalisation differs
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(plain(ids).logits, normed(ids).logits)
    with pytest.raises(ValueError, match="qk_norm"):
        LMConfig(qk_norm=1)
    m = _model(qk_norm=True)
    assert isinstance(m.lm, Qwen3ForCausalLM) and m.config.qk_norm


def test_curriculum_starts_with_the_simplest_exhibits():
    data = museum_qa("train", 40, 72)
    m = _model(image_side="features", feature_dim=ORACLE_DIM)
    data = with_oracle_features(data)
    b = Batcher(m, data, batch_size=16, seed=0, curriculum=100)
    n_of_item = [data.n_objects[i] for i in b.image_of]
    assert b.pool_size(0) < b.pool_size(50) < b.pool_size(100) == len(data.items)
    assert b.pool_size(1000) == len(data.items)
    first = b.batch(0)
    rows = [b.by_difficulty[k] for k in range(b.pool_size(0))]
    assert max(n_of_item[int(i)] for i in rows) == min(data.n_objects)
    # the batch's images all come from the simplest exhibits
    simple = {b.image_of[int(i)] for i in rows}
    assert first["features"].shape[0] == 16 and simple
    flat = Batcher(m, data, batch_size=16, seed=0)
    assert flat.pool_size(0) == len(data.items)
    with pytest.raises(ValueError, match="curriculum"):
        Batcher(m, data, batch_size=16, curriculum=-1)


def test_base_preset_trains_one_step_on_cpu():
    """The GPU preset's shapes and memory arithmetic, checked on CPU with one step of each stage."""
    from vlmbook.fusion.train import DemoConfig, train_route

    cfg, demo = VLMConfig.base(), DemoConfig.base()
    assert cfg.image_tokens <= 16 and cfg.qk_norm and cfg.cite and cfg.kv_heads < cfg.heads
    data = museum_qa("train", 4, cfg.image_size, grid=cfg.grid)
    vlm, hist = train_route("continuous", cfg, demo.replace(steps=1, encoder_steps=1, batch_size=8, warmup=0),
                            train=data, device="cpu")
    assert len(hist) == 1 and torch.isfinite(torch.tensor(hist[0]["loss"]))
    assert vlm.config.hidden == 256 and vlm.lm.config.num_key_value_heads == 2


def test_museum_stream_draws_fresh_labelled_exhibits():
    from vlmbook.data import Museum
    from vlmbook.fusion.train import museum_stream

    draw = museum_stream(64, 3, start=100)
    imgs, labs = draw(2, 4)  # exhibits 108..111
    assert imgs.shape == (4, 3, 64, 64) and imgs.dtype == torch.float32 and labs.shape == (4, 9, 3)
    assert torch.equal(imgs, Museum("train", size=64, length=200).tensors(108, 4))
    assert torch.equal(labs, patch_labels("train", 4, 3, start=108))
    again, _ = museum_stream(64, 3, start=100)(2, 4)
    assert torch.equal(imgs, again)
    assert int((labs[..., 0] > 0).sum()) == sum(len(generate_scene("train", 108 + i).objects) for i in range(4))


def test_clip_warm_up_trains_chapter4_perceiver_with_the_vit_and_both_stay_frozen():
    """The recipe's image side is Chapter 4's ViT + Perceiver Resampler, warmed up together on cell labels;
    the LM run loads both and trains neither (cached ViT features give the same logits as images)."""
    from vlmbook.fusion.train import DemoConfig, _ENCODERS, clip_encoder, encode_all, train_route
    from vlmbook.resample.compressors import PerceiverResampler
    from vlmbook.vision.clip import load_clip_tiny

    cfg = VLMConfig.tiny().replace(hidden=32, intermediate=64, corpus_scenes=200)
    assert cfg.compressor == "perceiver" and cfg.compressor_depth == 1
    demo = DemoConfig(train_scenes=6, test_scenes=2, steps=2, batch_size=4, warmup=1, encoder_steps=2,
                      encoder_fresh=True, caption_frac=0.0)
    data = museum_qa("train", 6, 64, grid=3)
    _ENCODERS.clear()
    vision, comp = clip_encoder(cfg, demo, data)
    assert isinstance(comp, PerceiverResampler) and len(comp.layers) == 1
    # the warm-up moved the ViT away from Chapter 4's contrastive weights
    clip = load_clip_tiny().vision.state_dict()
    assert any(not torch.equal(clip[k], v) for k, v in vision.state_dict().items())
    again_v, again_c = clip_encoder(cfg, demo, data)  # cached: the same weights, a fresh copy
    assert again_c is not comp and all(torch.equal(a, b) for a, b in zip(comp.state_dict().values(),
                                                                         again_c.state_dict().values()))
    # a different encoder_lr is a different warm-up
    _, other = clip_encoder(cfg, demo.replace(encoder_lr=1e-4), data)
    assert any(not torch.equal(a, b) for a, b in zip(comp.state_dict().values(), other.state_dict().values()))
    m, _ = train_route("continuous", cfg, demo, train=data, encoder=(vision, comp))
    assert not any(p.requires_grad for p in [*m.encoder.parameters(), *m.compressor.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(comp.state_dict().values(), m.compressor.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(vision.state_dict().values(), m.encoder.state_dict().values()))
    m.eval()
    ids = torch.tensor([m.prompt_ids("What colour is the star?", "red")] * 2)
    feats = encode_all(m.encoder, data.images[:2])
    assert feats.shape == (2, 64, 64)
    assert torch.allclose(m(ids, features=feats), m(ids, images=data.images[:2]), atol=1e-5)
    _ENCODERS.clear()


def test_frozen_compressor_output_is_cached_and_trains_bit_for_bit_as_running_it():
    """With ViT and Perceiver frozen, train_route caches the compressor's output: the batches carry
    ``compressed`` instead of ``features``, and loss and gradients equal, bit for bit, those of running
    the compressor on the cached ViT features every step (so the recipe's runs are unchanged)."""
    import dataclasses

    from vlmbook.fusion.train import DemoConfig, _ENCODERS, answer_loss, clip_encoder, encode_all, train_route

    cfg = VLMConfig.tiny().replace(corpus_scenes=200)
    demo = DemoConfig(train_scenes=40, test_scenes=2, steps=3, batch_size=16, warmup=1, encoder_steps=2,
                      encoder_fresh=True, caption_frac=0.0)
    data = museum_qa("train", 40, 64, grid=3)
    _ENCODERS.clear()
    vision, comp = clip_encoder(cfg, demo, data)
    keys = []

    def spy(model, batch, step=0):
        keys.append(sorted(k for k in batch if k in ("images", "features", "compressed")))
        return answer_loss(model, batch, step)

    m, _ = train_route("continuous", cfg, demo, train=data, encoder=(vision, comp), loss=spy)
    assert keys == [["compressed"]] * 3
    feats = encode_all(m.encoder, data.images)
    comp_all = encode_all(m.compressor, feats, batch=17)  # chunks unlike the batches below
    assert comp_all.shape == (40, 9, 64)
    m.train()
    old = Batcher(m, dataclasses.replace(data, features=feats), 16, 0, 0.0)
    new = Batcher(m, dataclasses.replace(data, compressed=comp_all), 16, 0, 0.0)
    params = [p for p in m.parameters() if p.requires_grad]
    for step in range(3):
        a, b = old.batch(step), new.batch(step)
        assert "features" in a and "compressed" not in a and "compressed" in b and "features" not in b
        grads = []
        for batch in (a, b):
            loss = answer_loss(m, batch)[0]
            grads.append([loss.detach(), *torch.autograd.grad(loss, params)])
        assert all(torch.equal(x, y) for x, y in zip(*grads))
    with pytest.raises(ValueError, match="compressor"):
        VisionLanguageModel(VLMConfig(**SMALL))(torch.tensor([m.prompt_ids("What?")]), compressed=comp_all[:1])
    _ENCODERS.clear()


def test_vlm_and_demo_config_name_bad_encoder_fields():
    from vlmbook.fusion.train import DemoConfig

    with pytest.raises(ValueError, match="compressor_depth"):
        VLMConfig.tiny().replace(compressor_depth=0)
    with pytest.raises(ValueError, match="encoder_lr"):
        DemoConfig(encoder_lr=0.0)
    assert VLMConfig.tiny().replace(compressor_depth=2).compressor_depth == 2


def test_cell_probe_readout_scores_occupied_cells():
    """Heads that read oracle one-hots exactly score 100 %; a head that always says 'empty' scores 0 on occupied cells."""
    from vlmbook.data.museum import COLOUR_NAMES, SHAPES, SIZE_NAMES
    from vlmbook.fusion.train import CellProbe

    labels = patch_labels("test", 20, 3)
    feats = oracle_features(labels)
    probe = CellProbe(torch.nn.Identity(), ORACLE_DIM)
    start = 0
    with torch.no_grad():
        for head, n in zip(probe.heads, (len(COLOUR_NAMES), len(SHAPES), len(SIZE_NAMES))):
            head.weight.zero_(); head.bias.zero_()
            head.weight[:, start:start + n + 1] = torch.eye(n + 1)
            start += n + 1
    read = probe.readout(feats, labels, batch=7)
    assert read["colour"] == read["shape"] == read["size"] == read["all_three"] == 100.0
    assert set(read) == {"colour", "shape", "size", "all_three", "shape_small", "shape_medium", "shape_large"}
    with torch.no_grad():
        probe.heads[1].weight.zero_(); probe.heads[1].bias.zero_(); probe.heads[1].bias[0] = 1.0  # always "empty"
    read = probe.readout(feats, labels)
    assert read["shape"] == 0.0 and read["colour"] == 100.0 and read["all_three"] == 0.0
    with pytest.raises(ValueError, match="labels must be"):
        probe.readout(feats, labels[:3])


def test_encoder_readout_record():
    from vlmbook.fusion.ablation import encoder_readout

    rec = encoder_readout("cells", 3e-3, steps=2, test_scenes=6)
    assert rec["compressor"] == "cells" and rec["steps"] == 2 and rec["threads"] == 1
    assert all(0.0 <= rec[k] <= 100.0 for k in ("colour", "shape", "size", "all_three"))


def test_cite_cells_puts_cell_k_embedding_on_p_k():
    """With cite_cells, <p_k>'s input embedding is its token row plus cell k's vector, in the prompt and
    in generation (cached = uncached); other tokens are untouched; the flag needs citations and cells."""
    cfg = VLMConfig(route="continuous", image_side="features", feature_dim=ORACLE_DIM, grid=3, hidden=32,
                    intermediate=64, corpus_scenes=200, codebook_size=16, **RECIPE).replace(cite_cells=True)
    m = VisionLanguageModel(cfg).eval()
    with torch.no_grad():
        m.cell_embed.normal_()
    lo, _ = m.patch_range
    ids = torch.tensor([[m.ids["bos"], lo + 4, lo + 0, m.ids["end"]]])
    plain = m.text.embed(ids)
    got = m.embed_tokens(ids)
    assert torch.equal(got[0, [0, 3]], plain[0, [0, 3]])
    assert torch.allclose(got[0, 1], plain[0, 1] + m.cell_embed[4]) and torch.allclose(got[0, 2], plain[0, 2] + m.cell_embed[0])
    off = VisionLanguageModel(cfg.replace(cite_cells=False))
    assert torch.equal(off.embed_tokens(ids), off.text.embed(ids))
    feats = oracle_features(patch_labels("test", 2, 3))
    q = torch.tensor([m.encode_text("What colour is the star?") + [m.ids["assistant"]]] * 2)
    # near-uniform sampling from the untrained guide emits some <p_k>, which generation then reads back
    kw = dict(features=feats, max_new_tokens=60, stop_token=-1, do_sample=True, temperature=100.0)
    a = m.generate(None, q, use_cache=True, generator=torch.Generator().manual_seed(0), **kw)
    b = m.generate(None, q, use_cache=False, generator=torch.Generator().manual_seed(0), **kw)
    assert ((a >= lo) & (a < lo + 9)).any() and torch.equal(a, b)
    with pytest.raises(ValueError, match="cite_cells"):
        cfg.replace(cell_embed="none")
    with pytest.raises(ValueError, match="cite_cells"):
        cfg.replace(cite=False)


def test_configs_saved_before_cite_cells_and_compressor_depth_still_load():
    """A saved config without the new fields reads as what it was built with: no cite_cells, and
    Chapter 4's default of two compressor layers; a hand-written dict takes the dataclass defaults."""
    cfg = VLMConfig.tiny()
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("cite_cells", "compressor_depth")}
    saved = VLMConfig.from_dict(old, require_all=True)
    assert saved.cite_cells is False and saved.compressor_depth == 2
    assert saved == cfg.replace(compressor_depth=2)
    assert VLMConfig.from_dict(old).compressor_depth == 1 == cfg.compressor_depth
