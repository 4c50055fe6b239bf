"""Chapter 5 unit tests: tokenizer, LM, discrete/continuous routes, masks, gated cross-attention."""
import pytest
import torch

from vlmbook.data import Museum
from vlmbook.fusion import (LMConfig, PatchEncoder, PatchQuantizer, GatedAdapter, GatedCrossAttention, block_mask,
                            build_lm, causal_mask, codes_to_token_ids, image_spans, image_string, load_causal_lm,
                            media_mask, merge_image_features, museum_tokenizer, prefix_lm_mask, render_prompt, to_4d,
                            token_ids_to_codes, train_bpe_tokenizer, truncate_ids, visual_token)
from vlmbook.fusion.text import IMAGE, IMAGE_END, SPECIAL_TOKENS, museum_corpus

TINY_LM = LMConfig(vocab_size=96, hidden=32, layers=4, heads=4, kv_heads=2, intermediate=64, max_positions=64)


@pytest.fixture(scope="module")
def tok():
    return museum_tokenizer(384, 16, 200)


# -- text side ----------------------------------------------------------------------------
def test_tokenizer_special_and_visual_tokens(tok):
    for s in SPECIAL_TOKENS:
        assert len(tok(s, add_special_tokens=False)["input_ids"]) == 1
    v = tok.convert_tokens_to_ids([visual_token(k) for k in range(16)])
    assert v == list(range(v[0], v[0] + 16))
    ids = tok("<v_3><v_4>" + IMAGE_END + "What colour is the star?", add_special_tokens=False)["input_ids"]
    assert ids[:3] == [v[3], v[4], tok.convert_tokens_to_ids(IMAGE_END)]
    assert tok.decode(ids) == "<v_3><v_4></image>What colour is the star?"


def test_tokenizer_golden_and_deterministic(tok):
    again = train_bpe_tokenizer(museum_corpus(200), 384, 16)
    text = "Which is larger, the red star or the blue ring? red star"
    a = tok(text, add_special_tokens=False)["input_ids"]
    assert a == again(text, add_special_tokens=False)["input_ids"]
    assert len(tok) == 406
    assert len(a) == 18  # colour and shape names are single BPE tokens
    assert tok.convert_ids_to_tokens(a)[-2:] == ['Ġred', 'Ġstar']


def test_tokenizer_bad_input():
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe_tokenizer(["a b"], vocab_size=100)
    with pytest.raises(ValueError, match="non-empty"):
        train_bpe_tokenizer([], vocab_size=300)
    with pytest.raises(ValueError, match="visual code"):
        visual_token(-1)


def test_build_lm_shapes_and_seed():
    lm = build_lm(TINY_LM, seed=0)
    ids = torch.arange(10)[None]
    out = lm(ids).logits
    assert out.shape == (1, 10, 96) and out.dtype == torch.float32
    assert torch.equal(build_lm(TINY_LM, seed=0)(ids).logits, out)
    assert round(float(out[0, -1, :5].sum().detach()), 4) == 0.0429
    with pytest.raises(ValueError, match="divisible"):
        LMConfig(hidden=30, heads=4)
    with pytest.raises(ValueError, match="LMConfig"):
        build_lm({"hidden": 32})


def test_load_causal_lm_roundtrip(tmp_path, tok):
    lm = build_lm(TINY_LM.replace(vocab_size=len(tok)), seed=1)
    lm.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    lm2, tok2 = load_causal_lm(tmp_path)
    ids = torch.tensor([tok2("How many objects are there?", add_special_tokens=False)["input_ids"]])
    assert torch.allclose(lm2(ids).logits, lm(ids).logits, atol=1e-5)
    assert len(tok2) == len(tok)
    with pytest.raises(ValueError, match="config.json"):
        load_causal_lm(tmp_path / "nothing")


# -- masks --------------------------------------------------------------------------------
def test_masks_shapes_and_values():
    c = causal_mask(5)
    assert c.dtype == torch.bool and c.shape == (5, 5) and int(c.sum()) == 15
    p = prefix_lm_mask(6, 1, 4)
    assert bool(p[1, 3]) and not bool(p[0, 1]) and not bool(p[4, 5]) and int(p.sum()) == 21 + 3
    b = block_mask(8, [(1, 3), (4, 7)])
    assert bool(b[1, 2]) and bool(b[4, 6]) and not bool(b[1, 4]) and bool(b[4, 1])
    assert torch.equal(block_mask(5, []), causal_mask(5))
    m = media_mask(6, [1, 4], 2)
    assert m.shape == (6, 4)
    assert m[0].sum() == 0 and m[1:4, :2].all() and not m[1:4, 2:].any() and m[4:, 2:].all() and not m[4:, :2].any()


def test_masks_bad_input():
    with pytest.raises(ValueError):
        block_mask(5, [(3, 7)])
    with pytest.raises(ValueError, match="overlap"):
        block_mask(8, [(1, 4), (3, 6)])
    with pytest.raises(ValueError):
        media_mask(5, [3, 1], 2)
    with pytest.raises(ValueError, match="bool"):
        to_4d(torch.ones(3, 3))
    with pytest.raises(ValueError, match="length"):
        causal_mask(0)


def test_to_4d_equals_hf_causal_mask():
    """A 4-D causal mask gives the same logits as HF's own causal mask (eager and sdpa)."""
    for impl in ("eager", "sdpa"):
        lm = build_lm(TINY_LM.replace(attn_implementation=impl), seed=0)
        ids = torch.arange(3, 12)[None]
        ref = lm(ids).logits
        got = lm(ids, attention_mask=to_4d(causal_mask(9))).logits
        assert torch.allclose(ref, got, atol=1e-5)
    # a prefix mask changes the image block's outputs but not the tokens before it
    got = lm(ids, attention_mask=to_4d(prefix_lm_mask(9, 2, 6))).logits
    assert torch.allclose(got[:, :2], ref[:, :2], atol=1e-5) and not torch.allclose(got[:, 2:6], ref[:, 2:6], atol=1e-3)


def test_image_spans():
    assert image_spans([1, 7, 7, 2, 8, 8, 8], [7, 8]) == [(1, 3), (4, 7)]
    assert image_spans([1, 2], [7]) == []
    with pytest.raises(ValueError):
        image_spans(torch.zeros(2, 2), [1])


# -- discrete route ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images():
    return Museum("train", 64).tensors(0, 40)


def test_quantizer_fit_encode_golden(images):
    q = PatchQuantizer(16, grid=4, sub=2).fit(images, iters=10, seed=0)
    codes = q.encode(images[:3])
    assert codes.shape == (3, 4, 4) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    assert codes[0].flatten().tolist()[:8] == [7, 14, 14, 3, 14, 3, 3, 14]
    assert q.decode(codes).shape == (3, 3, 8, 8)
    # nearest centroid: re-encoding the centroid mosaic gives back the codes
    assert torch.equal(q.encode(torch.nn.functional.interpolate(q.decode(codes), size=64)), codes)
    with pytest.raises(ValueError, match="not fitted"):
        PatchQuantizer(16, 4, 2).encode(images[:1])
    with pytest.raises(ValueError, match="divisible"):
        q.features(torch.zeros(1, 3, 30, 30))


def test_codes_to_token_ids_roundtrip_and_errors():
    codes = torch.tensor([[[0, 3], [5, 7]]])
    ids = codes_to_token_ids(codes, 100, 8)
    assert ids.tolist() == [[100, 103, 105, 107]]
    assert torch.equal(token_ids_to_codes(ids, 100, 8), codes.reshape(1, 4))
    with pytest.raises(ValueError, match="unknown code"):
        codes_to_token_ids(torch.tensor([[[0, 8]]]), 100, 8)
    with pytest.raises(ValueError, match="exceed"):
        codes_to_token_ids(codes, 100, 8, max_tokens=3)
    with pytest.raises(ValueError, match="integer"):
        codes_to_token_ids(codes.float(), 100, 8)
    with pytest.raises(ValueError, match="outside"):
        token_ids_to_codes(torch.tensor([[99]]), 100, 8)


def test_render_prompt_several_images_and_questions(tok):
    codes = torch.tensor([[1, 2], [3, 4]])
    text = render_prompt([image_string(codes), image_string(n_placeholders=3)], ["Q1?", "Q2?"], ["yes", None])
    assert text == ("<bos><|user|><v_1><v_2><v_3><v_4></image><|user|><image><image><image></image>"
                    "Q1?<|assistant|> yes<|end|><|user|>Q2?<|assistant|>")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids(IMAGE)) == 3
    with pytest.raises(ValueError, match="only the last"):
        render_prompt([], ["a", "b"], [None, "x"])
    with pytest.raises(ValueError, match="exactly one"):
        image_string()


# -- continuous route ---------------------------------------------------------------------
def test_merge_image_features_scatter_and_count_check():
    emb = torch.zeros(2, 6, 4)
    ids = torch.tensor([[1, 9, 9, 9, 2, 3], [1, 2, 9, 9, 9, 3]])
    feats = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    out = merge_image_features(emb, ids, feats, 9)
    assert out.shape == emb.shape
    assert torch.equal(out[0, 1:4], feats[0]) and torch.equal(out[1, 2:5], feats[1])
    assert out[0, 0].abs().sum() == 0 and out[1, 5].abs().sum() == 0
    with pytest.raises(ValueError, match="count mismatch"):
        merge_image_features(emb, ids, feats[:, :2], 9)
    with pytest.raises(ValueError, match="features"):
        merge_image_features(emb, ids, feats[:1], 9)


def test_truncate_never_cuts_image_tokens():
    ids = [1, 2, 9, 9, 9, 9, 3, 4, 5]
    assert truncate_ids(ids, 20, [9]) == ids
    assert truncate_ids(ids, 7, [9]) == ids[:7]
    assert truncate_ids(ids, 4, [9]) == [1, 2]  # the limit fell inside the image: drop the whole image
    assert truncate_ids(ids, 6, [9]) == ids[:6]
    for n in range(len(ids) + 1):
        out = truncate_ids(ids, n, [9])
        assert len(out) <= n and out.count(9) in (0, 4)
    with pytest.raises(ValueError):
        truncate_ids(ids, -1, [9])


def test_patch_encoder_shapes():
    enc = PatchEncoder(dim=16, grid=4, channels=8)
    out = enc(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 16, 16) and out.dtype == torch.float32
    with pytest.raises(ValueError):
        enc(torch.rand(2, 64, 64))


# -- gated cross-attention ------------------------------------------------------------------
def test_gated_adapter_leaves_logits_unchanged_at_init():
    lm = build_lm(TINY_LM, seed=0)
    ids = torch.arange(2, 14).view(2, 6)
    ref = lm(ids).logits
    adapter = GatedAdapter(lm.model.layers, 32, every=2, heads=4)
    assert adapter.positions == [0, 2] and len(adapter.blocks) == 2
    media = torch.randn(2, 5, 32)
    with adapter.media(media):
        same = lm(ids).logits
    assert torch.equal(same, ref)
    for b in adapter.blocks:  # open the gates: now the image changes the text's logits
        torch.nn.init.constant_(b.attn_gate, 0.5)
    with adapter.media(media):
        changed = lm(ids).logits
    assert not torch.allclose(changed, ref, atol=1e-4)
    assert torch.equal(lm(ids).logits, ref)  # outside the context the hooks do nothing
    adapter.remove()


def test_gated_block_media_mask_and_errors():
    torch.manual_seed(0)
    blk = GatedCrossAttention(8, 2)
    torch.nn.init.constant_(blk.attn_gate, 1.0)
    x, media = torch.randn(1, 4, 8), torch.randn(1, 3, 8)
    mm = torch.tensor([[False] * 3, [True] * 3, [True] * 3, [True] * 3])
    y = blk(x, media, mm)
    assert torch.allclose(y[0, 0], x[0, 0])  # a token before the first image sees nothing
    assert not torch.allclose(y[0, 1], x[0, 1])
    with pytest.raises(ValueError, match="media_mask"):
        blk(x, media, torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="media"):
        blk(x, torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="every"):
        GatedAdapter(torch.nn.ModuleList(), 8, every=0)
