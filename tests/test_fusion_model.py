"""Chapter 5: VisionLanguageModel (routes, generate, KV/prompt cache, save/load), grounding, cost, training."""
import dataclasses
import json

import pytest
import torch

from vlmbook.data import Museum, QUESTION_TYPES, cite, support_patches
from vlmbook.fusion import ROUTES, VisionLanguageModel, VLMConfig
from vlmbook.fusion.cost import gated_flops, measure_forward, prefix_flops
from vlmbook.fusion.grounding import (audit_json, audit_record, citation_boxes, citation_precision, citation_scores,
                                      format_citation, parse_citations)
from vlmbook.fusion.train import Batcher, DemoConfig, answer_loss, evaluate, museum_qa, train_route
from vlmbook.util import step_generator

SMALL = dict(hidden=32, intermediate=64, enc_channels=8, layers=2, corpus_scenes=200, codebook_size=32)


@pytest.fixture(scope="module")
def images():
    return Museum("train", 64).tensors(0, 4)


@pytest.fixture(scope="module")
def models(images):
    out = {}
    for r in ROUTES:
        torch.manual_seed(0)
        m = VisionLanguageModel(VLMConfig(route=r, **SMALL))
        if r == "discrete":
            m.quantizer.fit(Museum("train", 64).tensors(0, 16), iters=5)
        if r == "gated":  # open the gates so that the image matters in these tests
            for b in m.adapter.blocks:
                torch.nn.init.constant_(b.attn_gate, 0.7)
        out[r] = m.eval()
    return out


def _question(m, text="What colour is the star?", B=2):
    return torch.tensor([m.encode_text(text) + [m.ids["assistant"]]] * B)


@pytest.mark.parametrize("route", ROUTES)
def test_forward_shapes(models, images, route):
    m = models[route]
    ids = torch.tensor([m.prompt_ids("What colour is the star?", "red")] * 2)
    logits = m(ids, images=images[:2])
    assert logits.shape == (2, ids.shape[1], m.lm.config.vocab_size) and logits.dtype == torch.float32
    assert m.image_slots == (1 if route == "gated" else 16)
    # the image matters: other images give other logits
    assert not torch.allclose(logits, m(ids, images=images[2:4]), atol=1e-5)


@pytest.mark.parametrize("route", ROUTES)
def test_generate_cache_equivalence(models, images, route):
    m = models[route]
    q = _question(m)
    no_cache = m.generate(images[:2], q, max_new_tokens=5, use_cache=False)
    cache = m.generate(images[:2], q, max_new_tokens=5)
    pc = m.cache_prefix(images[:2])
    prompt_cached = m.generate(None, q, max_new_tokens=5, prefix=pc)
    again = m.generate(None, q, max_new_tokens=5, prefix=pc)  # the cached prefix is not consumed
    assert no_cache.dtype == torch.long and no_cache.shape[0] == 2
    assert torch.equal(no_cache, cache) and torch.equal(cache, prompt_cached) and torch.equal(cache, again)


def test_sampling_is_seeded_and_greedy_is_argmax(models, images):
    m = models["continuous"]
    q = _question(m)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = m.generate(images[:2], q, max_new_tokens=4, do_sample=True, temperature=2.0, generator=g())
    b = m.generate(images[:2], q, max_new_tokens=4, do_sample=True, temperature=2.0, generator=g())
    assert torch.equal(a, b)
    ids = torch.cat([torch.tensor([m.prefix_ids()] * 2), q], 1)
    first = m(ids, images=images[:2])[:, -1, :len(m.tokenizer)].argmax(-1)
    assert torch.equal(m.generate(images[:2], q, max_new_tokens=1)[:, 0], first)
    with pytest.raises(ValueError, match="temperature"):
        m.generate(images[:2], q, do_sample=True, temperature=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        m.generate(images[:2], q, max_new_tokens=0)


def test_prefix_mask_makes_image_block_bidirectional(models):
    m = models["discrete"]
    ids = torch.tensor([m.prompt_ids("What colour is the star?")])
    mask = m.attention_mask(ids)[0, 0] == 0
    s = 2  # image block starts after <bos><|user|>
    assert mask[s, s + 15] and not mask[s - 1, s] and not mask[s + 16, s + 17]
    assert m.config.mask == "prefix"


def test_placeholder_count_errors(models, images):
    for r in ("discrete", "continuous"):
        m = models[r]
        ids = torch.tensor([m.prompt_ids("What?")])
        with pytest.raises(ValueError, match="count mismatch"):
            m(ids[:, 1:] if False else torch.cat([ids[:, :3], ids[:, 4:]], 1), images=images[:1])
        with pytest.raises(ValueError, match="no images"):
            m(ids)


def test_save_load_roundtrip(models, images, tmp_path):
    for r in ROUTES:
        m = models[r]
        m.save_pretrained(tmp_path / r)
        assert (tmp_path / r / "tokenizer" / "tokenizer.json").is_file()
        m2 = VisionLanguageModel.from_pretrained(tmp_path / r)
        ids = torch.tensor([m.prompt_ids("How many objects are there?", "3")])
        assert torch.allclose(m2(ids, images=images[:1]), m(ids, images=images[:1]), atol=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match="route"):
        VLMConfig(route="telepathy")
    with pytest.raises(ValueError, match="image_size"):
        VLMConfig(route="discrete", image_size=60)
    with pytest.raises(ValueError, match="VLMConfig"):
        VisionLanguageModel({"route": "gated"})


# -- grounding ---------------------------------------------------------------------------
def test_citations_parse_boxes_precision():
    s = Museum("train", 64)[0]
    qa = next(q for q in s.qas if q.qtype == "colour")
    truth = support_patches(s.scene, qa, 4)
    text, patches = parse_citations(qa.answer + " " + " ".join(format_citation([k]) for k in truth))
    assert text == qa.answer and patches == truth
    assert parse_citations(format_citation(truth) + " " + qa.answer) == (qa.answer, truth)
    assert parse_citations("[CITE:] no") == ("no", [])
    # the museum's own cite() writes what the guide writes, and it parses back
    assert parse_citations(cite(qa.answer, truth)) == (qa.answer, truth)
    # codebook words are not places: <v_k> inside a citation bracket is not a citation
    assert parse_citations(qa.answer + " [CITE:<v_3>]")[1] == []
    assert citation_precision(truth, s.scene, qa, 4) == 1.0
    wrong = [k for k in range(16) if k not in truth][:2]
    assert citation_scores(wrong, s.scene, qa, 4) == {"precision": 0.0, "recall": 0.0}
    assert citation_boxes([0, 5], 4, 64) == [(0, 0, 16, 16), (16, 16, 32, 32)]
    with pytest.raises(ValueError, match="out of range"):
        citation_precision([16], s.scene, qa, 4)
    with pytest.raises(ValueError):
        parse_citations(None)


def test_audit_record_json():
    rec = audit_record("train/0", "prompt", "[CITE:<p_5>] red", [10, 11], grid=4, size=64, timestamp="2026-01-01T00:00:00+00:00")
    assert rec["cited_patches"] == [5] and rec["boxes"] == [[16, 16, 32, 32]] and rec["answer"] == "red"
    assert rec["prompt_sha256"][:12] == "3e0c2f4b8cfe" or len(rec["prompt_sha256"]) == 64
    assert json.loads(audit_json(rec)) == rec
    with pytest.raises(ValueError):
        audit_record("", "p", "a", [], 4, 64)


# -- cost --------------------------------------------------------------------------------
def test_flops_formulas():
    assert prefix_flops(0, 10, 8, 1, ff=24) == 2 * (4 * 10 * 64 + 3 * 10 * 8 * 24) + 4 * 100 * 8
    assert prefix_flops(64, 32, 128, 4) > prefix_flops(16, 32, 128, 4)
    # gated grows linearly in M, prefix quadratically: the ratio widens with M
    r = [prefix_flops(M, 32, 128, 4) / gated_flops(M, 32, 128, 4, every=2) for M in (64, 256, 1024)]
    assert r[0] < r[1] < r[2]
    with pytest.raises(ValueError):
        prefix_flops(-1, 10, 8, 1)
    with pytest.raises(ValueError, match="every"):
        gated_flops(4, 10, 8, 2, every=0)


def test_measure_forward_runs():
    t = measure_forward("prefix", 8, 8, repeats=1, batch=1)
    assert t > 0
    with pytest.raises(ValueError, match="route"):
        measure_forward("other", 8, 8)
    with pytest.raises(ValueError, match="repeats"):  # timed by util.median_seconds, which checks it
        measure_forward("gated", 8, 8, repeats=0, batch=1)


# -- training --------------------------------------------------------------------------------
def test_museum_qa_and_batches():
    data = museum_qa("train", 20)
    assert data.images.shape == (20, 3, 64, 64)
    assert all(it[3] != "plaque" for it in data.items) and {it[3] for it in data.items} <= set(QUESTION_TYPES)
    m = VisionLanguageModel(VLMConfig(route="continuous", **SMALL))
    b = Batcher(m, data, 8, caption_frac=0.25)
    x, y = b.batch(5), b.batch(5)
    assert torch.equal(x["input_ids"], y["input_ids"])  # a pure function of the step
    assert int(x["targets"].sum()) == len(x["labels"])
    assert (x["labels"] == m.ids["end"]).sum() == 8  # every answer ends with <|end|>
    assert x["images"].shape == (8, 3, 64, 64) and "features" not in x
    cached = Batcher(m, dataclasses.replace(data, features=torch.randn(20, 16, 4)), 8).batch(5)
    assert "images" not in cached and cached["features"].shape == (8, 16, 4)  # pixels are not gathered
    d = VisionLanguageModel(VLMConfig(route="discrete", **SMALL))
    d.quantizer.fit(data.images, seed=0)
    codes = Batcher(d, dataclasses.replace(data, codes=None), 8).batch(5)
    assert "images" not in codes and codes["codes"].shape == (8, 4, 4)
    assert data.codes is None and data.features is None  # the caller's data is never filled in
    # the gathered batch equals the per-row loop (packing's path, with no follow-ups), captions included
    for step in range(4):
        idx = torch.randint(len(b.seqs), (8,), generator=torch.Generator().manual_seed(step)).tolist()
        fast, loop = b.collate(idx), b.collate(idx, [[] for _ in idx])
        assert fast.keys() == loop.keys() and all(torch.equal(fast[k], loop[k]) for k in fast)
        assert fast["input_ids"].dtype == torch.long and fast["targets"].dtype == torch.bool
    assert b.collate([0])["input_ids"].shape == (1, len(b.seqs[0]))  # padded to the longest row only


def test_packed_batches_are_conversations_about_one_exhibit():
    """pack = k: batch_size / k rows, each a question plus k - 1 follow-ups about the same exhibit,
    every answer with its loss; what the first turn sees is the unpacked sequence (equal logits)."""
    data = museum_qa("train", 20)
    m = VisionLanguageModel(VLMConfig(route="continuous", **SMALL)).eval()
    flat, packed = Batcher(m, data, 8, seed=3), Batcher(m, data, 8, seed=3, pack=4)
    x = packed.batch(2)
    assert x["input_ids"].shape[0] == 2 and x["images"].shape[0] == 2
    g = step_generator(3, 2)
    first = torch.randint(packed.n_qa, (2,), generator=g).tolist()
    follow = [packed._follow_ups(i, g) for i in first]
    assert all(len(f) == 3 and i not in f and {packed.image_of[j] for j in f} == {packed.image_of[i]}
               for i, f in zip(first, follow))
    n_answers = sum(1 + len(f) for f in follow)
    assert (x["labels"] == m.ids["end"]).sum() == n_answers == 8
    assert int(x["targets"].sum()) == len(x["labels"]) == sum(packed.answer_len[j] for j in first + sum(follow, []))
    assert torch.equal(packed.batch(2)["input_ids"], x["input_ids"])  # a pure function of the step
    # the first turn of a packed row reads exactly what the unpacked sequence reads
    one = flat.collate([first[0]])
    L = one["input_ids"].shape[1]
    with torch.no_grad():
        a = m(one["input_ids"], images=one["images"])
        b = m(x["input_ids"][:1], images=x["images"][:1])[:, :L]
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="pack"):
        Batcher(m, data, 6, pack=4)
    with pytest.raises(ValueError, match="caption_frac"):
        Batcher(m, data, 8, pack=2, caption_frac=0.25)
    with pytest.raises(ValueError, match="pack"):
        DemoConfig(batch_size=64, pack=3)


def test_shared_test_set_serves_every_route(models):
    """A discrete model's codes must not leak to the next model evaluated on the same data."""
    test = museum_qa("test", 6)
    accs = {r: evaluate(models[r], test) for r in ("discrete", "continuous", "gated")}
    assert test.codes is None and test.features is None
    for r, acc in accs.items():
        fresh = museum_qa("test", 6)
        assert evaluate(models[r], fresh) == acc, r
    other = VisionLanguageModel(VLMConfig(route="discrete", **SMALL))
    other.quantizer.fit(test.images.flip(-1), seed=1)
    a, b = Batcher(models["discrete"], test, 4).batch(0), Batcher(other, test, 4).batch(0)
    assert not torch.equal(a["codes"], b["codes"])  # each model reads its own quantizer's codes
    with pytest.raises(ValueError, match="unknown question types"):
        museum_qa("train", 2, exclude=("poetry",))


def test_evaluate_matches_greedy_generation(models):
    """Teacher-forced exact match == greedy decoding returns exactly the reference answer."""
    from vlmbook.fusion.evaluate import teacher_forced_accuracy

    data = museum_qa("val", 3)
    m = models["continuous"]
    acc = teacher_forced_accuracy(m, data)
    assert 0.0 <= acc["all"] <= 100.0
    ok = []
    for img, q, a, _ in data.items:
        out = m.generate(data.images[img:img + 1], _question(m, q, 1), max_new_tokens=6)[0].tolist()
        ref = m.encode_text(" " + a) + [m.ids["end"]]
        ok.append(out[:len(ref)] == ref)
    assert acc["all"] == round(100.0 * sum(ok) / len(ok), 2)


def test_training_learns_something():
    """A short run lowers the answer loss well below its start (all three routes share the code)."""
    m, hist = train_route("continuous", VLMConfig(**SMALL), DemoConfig(train_scenes=50, steps=30, batch_size=16, warmup=3))
    assert hist[-1]["loss"] < 0.7 * hist[0]["loss"]
    assert answer_loss(m, Batcher(m, museum_qa("train", 5), 4).batch(0))[0].ndim == 0


def test_patch_labels_and_encoder_warmup():
    from vlmbook.data import generate_scene
    from vlmbook.fusion import PatchEncoder
    from vlmbook.fusion.train import patch_labels, pretrain_encoder

    lab = patch_labels("train", 6, 4)
    assert lab.shape == (6, 16, 3) and lab.dtype == torch.int64
    n_obj = [len(generate_scene("train", i).objects) for i in range(6)]
    assert (lab[..., 0] > 0).sum(1).tolist() == n_obj  # one labelled patch per object
    enc = PatchEncoder(16, 4, 8)
    hist = pretrain_encoder(enc, Museum("train", 64).tensors(0, 6), lab, steps=20, batch_size=6, lr=1e-2)
    assert hist[-1]["loss"] < hist[0]["loss"]
    with pytest.raises(ValueError, match="label rows"):
        pretrain_encoder(enc, Museum("train", 64).tensors(0, 5), lab, steps=1)


def test_majority_baseline():
    from vlmbook.fusion.train import QAData, majority_baseline

    img = torch.zeros(1, 3, 8, 8)
    train = QAData(img, [(0, "q", "yes", "exists"), (0, "q", "yes", "exists"), (0, "q", "no", "exists"),
                         (0, "c", "red", "colour")])
    test = QAData(img, [(0, "q", "yes", "exists"), (0, "q", "no", "exists"), (0, "c", "red", "colour"),
                        (0, "c", "blue", "colour")])
    acc = majority_baseline(train, test)
    assert acc == {"all": 50.0, "colour": 50.0, "exists": 50.0, "single": 50.0}


def test_plug_in_other_encoder_and_quantizer(images):
    """Any encoder (B,3,H,W)->(B,N,D) + compressor (B,N,D)->(B,M,D') and any quantizer fit the routes."""
    class Flatten(torch.nn.Module):  # 64 patches of 8×8 px, D = 192
        def forward(self, x):
            return x.unfold(2, 8, 8).unfold(3, 8, 8).permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], 64, 192)

    class Pool4(torch.nn.Module):  # (B, 64, 192) -> (B, 16, 192)
        def forward(self, x):
            return x.view(x.shape[0], 16, 4, 192).mean(2)

    m = VisionLanguageModel(VLMConfig(route="continuous", **SMALL))
    m.replace_encoder(Flatten(), 192, compressor=Pool4())
    ids = torch.tensor([m.prompt_ids("What colour is the star?", "red")])
    assert m(ids, images=images[:1]).shape[:2] == ids.shape
    m.replace_encoder(Flatten(), 192)  # 64 features for 16 placeholders: a clear error
    with pytest.raises(ValueError, match="count mismatch"):
        m(ids, images=images[:1])

    class Fixed(torch.nn.Module):
        codebook_size = 8

        def encode(self, x):
            return torch.arange(16).remainder(8).view(1, 4, 4).expand(x.shape[0], -1, -1)

    d = VisionLanguageModel(VLMConfig(route="discrete", **SMALL))
    d.replace_quantizer(Fixed())
    _, _, lm_ids = d.embed(ids, images[:1])
    assert lm_ids[0, 2:18].tolist() == [d.visual_range[0] + k % 8 for k in range(16)]
    with pytest.raises(ValueError, match="codebook_size"):
        d.replace_quantizer(PatchQuantizerBig())
    with pytest.raises(ValueError, match="replace_quantizer"):
        d.replace_encoder(Flatten(), 192)


class PatchQuantizerBig(torch.nn.Module):
    codebook_size = 10_000


def test_ask_returns_text(models, images):
    m = models["continuous"]
    out = m.ask(images[0], "What colour is the star?", max_new_tokens=3)
    assert isinstance(out, str)
    assert m.decode_answer(m.encode_text(" red") + [m.ids["end"]] + m.encode_text(" blue")) == "red"
    with pytest.raises(ValueError, match="one"):
        m.ask(images[:2], "What?")


def test_frozen_encoder_features_match_images_and_stay_fixed():
    """A warmed-up, frozen encoder: cached features give the same logits as images, and training leaves it unchanged."""
    from vlmbook.fusion.train import encode_all, warm_encoder

    cfg = VLMConfig(**SMALL)
    demo = DemoConfig(train_scenes=12, steps=4, batch_size=6, warmup=1, encoder_steps=3, caption_frac=0.0)
    data = museum_qa("train", 12)
    enc = warm_encoder(cfg, demo, data)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    m, hist = train_route("continuous", cfg, demo, train=data, encoder=enc)
    assert len(hist) >= 1 and not any(p.requires_grad for p in m.encoder.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.encoder.state_dict().items())
    feats = encode_all(m.encoder, data.images[:3], batch=2)
    assert feats.shape == (3, 16, cfg.hidden) and feats.dtype == torch.float32
    ids = torch.tensor([m.prompt_ids("What colour is the star?", "red")] * 3)
    assert torch.allclose(m(ids, features=feats), m(ids, images=data.images[:3]), atol=1e-5)
    d = VisionLanguageModel(VLMConfig(route="discrete", **SMALL))
    with pytest.raises(ValueError, match="codes, not encoder features"):
        d(ids, features=feats)


def test_demo_config_validation():
    with pytest.raises(ValueError, match="encoder_steps"):
        DemoConfig(encoder_steps=-1)
    assert DemoConfig.tiny().encoder_steps > 0 and DemoConfig.tiny().freeze_encoder


def test_training_log_is_kept_saved_and_checked(tmp_path):
    """eval_every scores held-out data during training; the log travels with save/from_pretrained."""
    from vlmbook.fusion import VisionLanguageModel
    from vlmbook.fusion.train import evaluate

    test = museum_qa("test", 4)
    demo = DemoConfig(train_scenes=30, steps=12, batch_size=8, warmup=2)
    m, _ = train_route("continuous", VLMConfig(**SMALL), demo, eval_data=test, eval_every=5)
    assert [e["step"] for e in m.training_log] == [5, 10, 12]
    assert m.training_log[-1] == {"step": 12, "greedy": True, **evaluate(m, test)}  # the last entry scores the returned model
    m.save_pretrained(tmp_path / "m")
    assert VisionLanguageModel.from_pretrained(tmp_path / "m").training_log == m.training_log
    (tmp_path / "m" / "training_log.json").write_text("[{")
    with pytest.raises(ValueError, match="training_log.json is not valid JSON"):
        VisionLanguageModel.from_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="needs eval_data"):
        train_route("continuous", VLMConfig(**SMALL), demo, eval_every=5)
    with pytest.raises(ValueError, match="eval_every must be >= 0"):
        train_route("continuous", VLMConfig(**SMALL), demo, eval_data=test, eval_every=-1)
