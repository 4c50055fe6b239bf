"""Bring your own language model: ``vlmbook.fusion.lm.CausalLM`` over many HF architectures.

Every model here is built tiny from a config by the test itself (no downloads). Each
architecture is checked against its own Hugging Face forward, with a prefix-LM mask, with a KV
cache, through save -> load, and through a LoRA round trip; a harness then runs the three VLM
routes (discrete ids, continuous prefix, gated cross-attention) at adapter level.
"""
from __future__ import annotations

import copy

import pytest
import torch
import transformers

from vlmbook.fusion.gated import GatedAdapter
from vlmbook.fusion.lm import CausalLM, additive_mask, causal_position_ids, load_tokenizer, patch_token, save_tokenizer
from vlmbook.fusion.masks import block_mask, media_mask
from vlmbook.fusion.text import train_bpe_tokenizer, visual_token

torch.set_num_threads(1)

CORPUS = ["the red cube is left of the blue ball", "what colour is the small cone ? green",
          "how many objects are there ? three", "is the large sphere made of metal ? yes",
          "a yellow cylinder stands behind a purple cube"] * 4

D, L, H = 32, 2, 4  # width, layers, heads of every tiny model


def _configs(vocab: int) -> dict[str, transformers.PretrainedConfig]:
    ids = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3)
    return {
        "llama": transformers.LlamaConfig(vocab_size=vocab, hidden_size=D, intermediate_size=64, num_hidden_layers=L,
                                          num_attention_heads=H, num_key_value_heads=2, max_position_embeddings=128,
                                          tie_word_embeddings=True, **ids),
        "gpt2": transformers.GPT2Config(vocab_size=vocab, n_embd=D, n_layer=L, n_head=H, n_positions=128, **ids),
        "opt": transformers.OPTConfig(vocab_size=vocab, hidden_size=D, word_embed_proj_dim=D, ffn_dim=64,
                                      num_hidden_layers=L, num_attention_heads=H, max_position_embeddings=128, **ids),
        "qwen2": transformers.Qwen2Config(vocab_size=vocab, hidden_size=D, intermediate_size=64, num_hidden_layers=L,
                                          num_attention_heads=H, num_key_value_heads=2, max_position_embeddings=128,
                                          **ids),
        "mistral": transformers.MistralConfig(vocab_size=vocab, hidden_size=D, intermediate_size=64,
                                              num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=2,
                                              max_position_embeddings=128, sliding_window=None, **ids),
        "gemma": transformers.GemmaConfig(vocab_size=vocab, hidden_size=D, intermediate_size=64, num_hidden_layers=L,
                                          num_attention_heads=H, num_key_value_heads=1, head_dim=8,
                                          max_position_embeddings=128, **ids),
        "phi": transformers.PhiConfig(vocab_size=vocab, hidden_size=D, intermediate_size=64, num_hidden_layers=L,
                                      num_attention_heads=H, max_position_embeddings=128, **ids),
        "gpt_neox": transformers.GPTNeoXConfig(vocab_size=vocab, hidden_size=D, intermediate_size=64,
                                               num_hidden_layers=L, num_attention_heads=H,
                                               max_position_embeddings=128, **ids),
        "qwen3": transformers.Qwen3Config(vocab_size=vocab, hidden_size=D, intermediate_size=64, num_hidden_layers=L,
                                          num_attention_heads=H, num_key_value_heads=2, head_dim=8,
                                          max_position_embeddings=128, **ids),
    }


ARCHS = ("llama", "gpt2", "opt", "qwen2", "mistral", "gemma", "phi", "gpt_neox", "qwen3")


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(CORPUS, vocab_size=300)


def build(arch: str, tokenizer, seed: int = 0, attn: str = "sdpa") -> CausalLM:
    """A tiny freshly initialised model of ``arch`` with its own copy of the tokenizer."""
    cfg = _configs(len(tokenizer))[arch]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)
    return CausalLM(model.eval(), copy.deepcopy(tokenizer))


def rand_ids(lm: CausalLM, B: int = 2, T: int = 10, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, len(lm.tokenizer), (B, T), generator=g)


def prefix_mask(T: int, start: int, end: int, B: int = 2) -> torch.Tensor:
    """(B, 1, T, T) bool prefix-LM mask with image block [start, end)."""
    return block_mask(T, [(start, end)])[None, None].expand(B, 1, T, T)


# -- each architecture ----------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_matches_hf_forward(arch, tokenizer):
    lm = build(arch, tokenizer)
    ids = rand_ids(lm)
    with torch.no_grad():
        ref_h = lm.backbone(input_ids=ids).last_hidden_state
        ref_logits = lm.hf(input_ids=ids).logits
        emb = lm.embed(ids)
        h, cache = lm.decode(emb)
        h2, _ = lm.decode(emb, attention_mask=torch.ones_like(ids))
        h4, _ = lm.decode(emb, attention_mask=block_mask(10, [])[None, None].expand(2, 1, 10, 10))
    assert emb.shape == (2, 10, lm.hidden_size) and h.shape == (2, 10, lm.hidden_size) and cache is None
    assert lm.vocab_size == len(tokenizer) and lm.head(h).shape == (2, 10, lm.vocab_size)
    torch.testing.assert_close(h, ref_h, rtol=0, atol=1e-5)
    torch.testing.assert_close(h2, ref_h, rtol=0, atol=1e-5)
    torch.testing.assert_close(h4, ref_h, rtol=0, atol=1e-5)  # an explicit 4-D causal mask = the default
    torch.testing.assert_close(lm(ids), ref_logits, rtol=0, atol=1e-5)
    assert len(lm.decoder_layers()) == L


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_mask_makes_image_block_bidirectional(arch, tokenizer):
    lm = build(arch, tokenizer)
    ids = rand_ids(lm)
    emb = lm.embed(ids).detach()
    # random nudges (a constant one would vanish in LayerNorm)
    nudge = torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(2))
    later_img = emb.clone()
    later_img[:, 5] += nudge  # the last image position of block [2, 6)
    later_txt = emb.clone()
    later_txt[:, 8] += nudge  # a text position after the image
    m = prefix_mask(10, 2, 6)
    with torch.no_grad():
        base = lm.decode(emb, m)[0]
        img = lm.decode(later_img, m)[0]
        txt = lm.decode(later_txt, m)[0]
        img_causal = lm.decode(later_img)[0]
        base_causal = lm.decode(emb)[0]
        base_float = lm.decode(emb, additive_mask(m, torch.float32))[0]
    assert (img[:, 2:5] - base[:, 2:5]).abs().amax() > 1e-3  # earlier image tokens see a later one
    torch.testing.assert_close(img[:, :2], base[:, :2], rtol=0, atol=0)  # text before the image does not
    torch.testing.assert_close(txt[:, :8], base[:, :8], rtol=0, atol=0)  # text stays causal
    torch.testing.assert_close(img_causal[:, :5], base_causal[:, :5], rtol=0, atol=0)  # causal mask: no peeking
    torch.testing.assert_close(base_float, base, rtol=0, atol=0)  # bool and additive masks agree


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_decoding_equals_full_forward(arch, tokenizer):
    lm = build(arch, tokenizer)
    ids = rand_ids(lm, T=12)
    m = prefix_mask(12, 2, 6)
    with torch.no_grad():
        emb = lm.embed(ids)
        full = lm.decode(emb, m)[0]
        cache = lm.new_cache()
        h, cache = lm.decode(emb[:, :7], m[:, :, :7, :7], cache=cache)  # the image prefix and one text token
        steps = [h]
        for t in range(7, 12):
            h, cache = lm.decode(emb[:, t:t + 1], m[:, :, t:t + 1, :t + 1], cache=cache)
            steps.append(h)
    assert cache.get_seq_length() == 12
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-5)
    # greedy generation with the cache = Hugging Face's own greedy generate
    prompt = rand_ids(lm, T=5, seed=3)
    ours = lm.generate(prompt, max_new_tokens=6)
    ref = lm.hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, min_new_tokens=6,
                         do_sample=False, pad_token_id=0)[:, 5:]
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_identical_logits_and_tokenizer(arch, tokenizer, tmp_path):
    lm = build(arch, tokenizer)
    ids_of = lm.add_image_tokens(codebook_size=8, patches=9)
    # <image> and </image> are already in the book's tokenizer: they keep their ids
    assert ids_of["<image>"] == tokenizer.convert_tokens_to_ids("<image>")
    assert ids_of["p0"] == ids_of["v0"] + 8 and lm.vocab_size == len(lm.tokenizer) == len(tokenizer) + 8 + 9
    text = "<image><v_3><v_7></image> what colour is <p_4> ? red"
    ids = torch.tensor([lm.tokenizer(text, add_special_tokens=False)["input_ids"]])
    assert ids_of["v0"] + 3 in ids[0].tolist() and ids_of["p0"] + 4 in ids[0].tolist()
    lm.save_pretrained(tmp_path / "lm")
    back = CausalLM.from_pretrained(tmp_path / "lm")
    assert type(back.hf) is type(lm.hf) and not back.is_peft
    assert back.tokenizer(text, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    assert len(back.tokenizer) == len(lm.tokenizer) and back.tokenizer.decode(ids[0]) == lm.tokenizer.decode(ids[0])
    with torch.no_grad():
        assert torch.equal(back(ids), lm(ids))


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_round_trip(arch, tokenizer, tmp_path):
    lm = build(arch, tokenizer)
    ids = rand_ids(lm)
    with torch.no_grad():
        base_logits = lm(ids)
    lm.apply_lora(r=4, alpha=8)
    assert lm.is_peft and len(lm.decoder_layers()) == L
    with torch.no_grad():
        torch.testing.assert_close(lm(ids), base_logits, rtol=0, atol=1e-6)  # LoRA B = 0 at init
        g = torch.Generator().manual_seed(0)
        for name, p in lm.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        tuned = lm(ids)
        tuned_gen = lm.generate(ids, max_new_tokens=4)
    assert (tuned - base_logits).abs().amax() > 1e-3  # the adapter changes the outputs
    trainable = [n for n, p in lm.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # LoRA on the LM only, base frozen
    lm.save_pretrained(tmp_path / "lora")
    back = CausalLM.from_pretrained(tmp_path / "lora")
    assert back.is_peft
    with torch.no_grad():
        assert torch.equal(back(ids), tuned)
        assert torch.equal(back.generate(ids, max_new_tokens=4), tuned_gen)
        back.model.disable_adapter_layers()
        torch.testing.assert_close(back(ids), base_logits, rtol=0, atol=0)  # the saved base is the original one
        back.model.enable_adapter_layers()
        back.merge_lora()
        assert not back.is_peft
        torch.testing.assert_close(back(ids), tuned, rtol=0, atol=1e-5)
        assert torch.equal(back.generate(ids, max_new_tokens=4), tuned_gen)


# -- the three VLM routes, at adapter level ------------------------------------------------
ROUTE_ARCHS = ("llama", "gpt2", "opt", "gpt_neox", "qwen3")


@pytest.mark.parametrize("arch", ROUTE_ARCHS)
def test_route_discrete_codes_become_new_token_ids(arch, tokenizer):
    lm = build(arch, tokenizer)
    t = lm.add_image_tokens(codebook_size=16)
    codes = torch.tensor([[3, 0, 15, 7], [1, 1, 2, 9]])
    text = lm.tokenizer(" what colour ?", add_special_tokens=False)["input_ids"]
    ids = torch.cat([codes + t["v0"], torch.tensor([[t["</image>"]] + text] * 2)], 1)
    assert lm.tokenizer.convert_ids_to_tokens(ids[0, :4].tolist()) == [visual_token(k) for k in (3, 0, 15, 7)]
    T = ids.shape[1]
    m = prefix_mask(T, 0, 4)
    other = ids.clone()
    other[:, 3] = t["v0"] + 5  # another code in the last image slot
    with torch.no_grad():
        logits = lm.head(lm.decode(lm.embed(ids), m)[0])
        logits2 = lm.head(lm.decode(lm.embed(other), m)[0])
        causal, causal2 = (lm.head(lm.decode(lm.embed(x))[0]) for x in (ids, other))
    assert logits.shape == (2, T, lm.vocab_size)
    assert (logits2[:, :3] - logits[:, :3]).abs().amax() > 1e-6  # earlier codes read a later one (bidirectional)
    assert torch.equal(causal2[:, :3], causal[:, :3])  # and do not under the causal mask


@pytest.mark.parametrize("arch", ROUTE_ARCHS)
def test_route_continuous_prefix_scatter(arch, tokenizer):
    lm = build(arch, tokenizer)
    t = lm.add_image_tokens()
    M = 4
    text = lm.tokenizer(" what colour ?", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[t["<image>"]] * M + [t["</image>"]] + text] * 2)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, M, lm.hidden_size, generator=g)
    emb = lm.embed(ids).detach()
    slots = ids == t["<image>"]
    merged = emb.masked_scatter(slots[..., None], feats.reshape(-1, lm.hidden_size))
    assert torch.equal(merged[:, :M], feats) and torch.equal(merged[:, M:], emb[:, M:])
    T = ids.shape[1]
    with torch.no_grad():
        h = lm.decode(merged, prefix_mask(T, 0, M))[0]
        feats2 = feats.clone()
        feats2[:, -1] += torch.randn(lm.hidden_size, generator=g)
        h2 = lm.decode(emb.masked_scatter(slots[..., None], feats2.reshape(-1, lm.hidden_size)), prefix_mask(T, 0, M))[0]
    assert (h2[:, 0] - h[:, 0]).abs().amax() > 1e-4  # the first image token sees the last
    assert (h2[:, -1] - h[:, -1]).abs().amax() > 1e-4  # the question reads the image


@pytest.mark.parametrize("arch", ROUTE_ARCHS)
def test_route_gated_cross_attention_is_identity_at_init(arch, tokenizer):
    lm = build(arch, tokenizer)
    t = lm.add_image_tokens()
    ids = torch.cat([torch.tensor([[t["<image>"]]] * 2), rand_ids(lm, T=7)], 1)
    with torch.no_grad():
        plain = lm.decode(lm.embed(ids))[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        adapter = GatedAdapter(lm.decoder_layers(), lm.layer_hidden_size, every=1, heads=4)
    media = torch.randn(2, 4, lm.layer_hidden_size, generator=torch.Generator().manual_seed(1))
    mm = media_mask(8, [0], 4)[None].expand(2, -1, -1)
    with torch.no_grad(), adapter.media(media, mm):
        gated0 = lm.decode(lm.embed(ids))[0]
        cache = lm.new_cache()
        h_a, cache = lm.decode(lm.embed(ids[:, :5]), cache=cache)
    torch.testing.assert_close(gated0, plain, rtol=0, atol=1e-6)  # tanh(0) gates: the LM is unchanged
    with torch.no_grad():
        for blk in adapter.blocks:
            blk.attn_gate.fill_(0.5)
        with adapter.media(media, mm):
            gated = lm.decode(lm.embed(ids))[0]
            cache = lm.new_cache()
            h_a, cache = lm.decode(lm.embed(ids[:, :5]), cache=cache)
        with adapter.media(media, mm[:, 5:]):
            h_b, cache = lm.decode(lm.embed(ids[:, 5:]), cache=cache)
    assert (gated - plain).abs().amax() > 1e-3  # open gates: every block hook fires and reads the image
    torch.testing.assert_close(torch.cat([h_a, h_b], 1), gated, rtol=0, atol=1e-5)  # cached = uncached
    adapter.remove()
    with torch.no_grad():
        torch.testing.assert_close(lm.decode(lm.embed(ids))[0], plain, rtol=0, atol=0)


# -- small functions ------------------------------------------------------------------------
def test_position_ids_and_masks():
    assert causal_position_ids(2, 3, past=4).tolist() == [[4, 5, 6]] * 2
    pad = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert causal_position_ids(2, 2, past=3, attention_mask=pad).tolist() == [[1, 2], [3, 4]]
    with pytest.raises(ValueError, match="past"):
        causal_position_ids(2, 2, past=1, attention_mask=pad)
    allowed = torch.tensor([[True, False], [True, True]])[None, None]
    add = additive_mask(allowed, torch.float32)
    assert add[0, 0, 0, 0] == 0 and add[0, 0, 0, 1] == torch.finfo(torch.float32).min
    assert additive_mask(torch.full((1, 1, 1, 1), float("-inf")), torch.bfloat16).isfinite().all()
    with pytest.raises(ValueError, match="4-D"):
        additive_mask(allowed[0], torch.float32)
    assert patch_token(3) == "<p_3>"
    with pytest.raises(ValueError):
        patch_token(-1)


def test_bad_arguments_raise(tokenizer):
    lm = build("llama", tokenizer)
    ids = rand_ids(lm)
    with pytest.raises(ValueError, match="inputs_embeds"):
        lm.decode(torch.zeros(2, 3, lm.hidden_size + 1))
    with pytest.raises(ValueError, match="4-D attention_mask"):
        lm.decode(lm.embed(ids), prefix_mask(9, 2, 6))
    with pytest.raises(ValueError, match="position_ids"):
        lm.decode(lm.embed(ids), position_ids=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        lm.embed(torch.tensor([[lm.vocab_size]]))
    with pytest.raises(ValueError, match="merge"):
        lm.merge_lora()
    with pytest.raises(TypeError, match="causal LM"):
        CausalLM(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="config.json"):
        CausalLM.from_pretrained("/nonexistent")


def test_tokenizer_round_trip_and_golden(tokenizer, tmp_path):
    tok = copy.deepcopy(tokenizer)
    tok.add_tokens([visual_token(0), patch_token(0)], special_tokens=True)
    save_tokenizer(tok, tmp_path / "tok")
    back = load_tokenizer(tmp_path / "tok")
    text = "<v_0> the red cube <p_0>"
    assert back(text)["input_ids"] == tok(text)["input_ids"] and len(back) == len(tok)
    assert (tmp_path / "tok" / "tokenizer.json").is_file()


def test_golden_logits_llama(tokenizer):
    lm = build("llama", tokenizer)
    with torch.no_grad():
        out = lm(rand_ids(lm, B=1, T=4))[0, -1, 4:8]
    torch.testing.assert_close(out, torch.tensor(GOLDEN), rtol=0, atol=1e-4)


GOLDEN = [-0.031170, -0.135272, 0.026706, -0.014125]  # seed 0 tiny Llama, ids from seed 1


# -- bringing a model in from outside ---------------------------------------------------------
def test_wraps_a_model_peft_wrapped_by_hand(tokenizer, tmp_path):
    """``CausalLM(get_peft_model(hf, cfg))``: a reader's own LoRA setup works as well."""
    from peft import LoraConfig, get_peft_model

    from vlmbook.fusion.lm import quiet_peft

    plain = build("opt", tokenizer)
    ids = rand_ids(plain)
    with torch.no_grad():
        ref = plain(ids)
    with quiet_peft():
        peft_model = get_peft_model(plain.hf, LoraConfig(r=2, target_modules=["q_proj", "v_proj", "fc1"]))
    lm = CausalLM(peft_model, plain.tokenizer)
    assert lm.is_peft and lm.hf is peft_model.get_base_model()
    with torch.no_grad():
        torch.testing.assert_close(lm(ids), ref, rtol=0, atol=1e-6)
        for name, p in lm.model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.1)
        tuned = lm(ids)
    assert (tuned - ref).abs().amax() > 1e-3
    # gradients reach the adapter and the input embeddings (continuous image features train)
    emb = lm.embed(ids).detach().requires_grad_(True)
    lm.head(lm.decode(emb, prefix_mask(10, 2, 6))[0]).logsumexp(-1).sum().backward()
    grads = [p.grad for n, p in lm.model.named_parameters() if "lora_" in n]
    assert emb.grad is not None and emb.grad.abs().sum() > 0 and all(g is not None for g in grads)
    lm.save_pretrained(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(CausalLM.from_pretrained(tmp_path / "m")(ids), tuned)


def test_lora_with_trained_new_token_rows(tokenizer, tmp_path):
    """New <v_k>/<p_k> rows train through ``modules_to_save``; the adapter keeps them, the base does not."""
    lm = build("qwen2", tokenizer)  # untied embeddings and head
    t = lm.add_image_tokens(codebook_size=4, patches=4)
    ids = torch.cat([torch.arange(t["v0"], t["v0"] + 8)[None], rand_ids(lm, B=1, T=4)], 1)
    with torch.no_grad():
        base = lm(ids)
    lm.apply_lora(r=2, modules_to_save=["embed_tokens", "lm_head"])
    with torch.no_grad():
        lm.hf.get_input_embeddings().weight[t["v0"]:].normal_(0, 1, generator=torch.Generator().manual_seed(0))
        tuned = lm(ids)
    assert (tuned - base).abs().amax() > 1e-3
    lm.save_pretrained(tmp_path / "m")
    back = CausalLM.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(back(ids), tuned)
        back.model.disable_adapter_layers()
        torch.testing.assert_close(back(ids), base, rtol=0, atol=0)
        back.model.enable_adapter_layers()
        torch.testing.assert_close(back.merge_lora()(ids), tuned, rtol=0, atol=1e-5)


def test_loads_a_plain_hf_checkpoint_folder(tokenizer, tmp_path):
    """A folder as ``transformers`` writes it (model + tokenizer files side by side) loads as is."""
    lm = build("gpt2", tokenizer)
    lm.hf.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    back = CausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    ids = rand_ids(lm)
    with torch.no_grad():
        torch.testing.assert_close(back(ids), lm(ids), rtol=0, atol=1e-5)  # eager vs sdpa: same maths
    assert back.tokenizer("the red cube")["input_ids"] == lm.tokenizer("the red cube")["input_ids"]


@pytest.mark.parametrize("arch", ("gpt2", "opt", "llama"))
def test_eager_attention_and_bf16_take_the_prefix_mask(arch, tokenizer):
    lm = build(arch, tokenizer, attn="eager")
    ref = build(arch, tokenizer)  # same seed, sdpa
    ids = rand_ids(lm)
    m = prefix_mask(10, 2, 6)
    with torch.no_grad():
        torch.testing.assert_close(lm.decode(lm.embed(ids), m)[0], ref.decode(ref.embed(ids), m)[0], rtol=0, atol=1e-5)
        lm.hf.to(torch.bfloat16)
        h = lm.decode(lm.embed(ids), m)[0]
    assert h.dtype == torch.bfloat16 and h.isfinite().all()
    torch.testing.assert_close(h.float(), ref.decode(ref.embed(ids), m)[0], rtol=0, atol=0.1)


def test_learned_position_limit_is_a_clear_error(tokenizer):
    gpt2, opt, llama = (build(a, tokenizer) for a in ("gpt2", "opt", "llama"))
    assert gpt2.max_positions == 128 and opt.max_positions == 128 and llama.max_positions is None
    for lm in (gpt2, opt):
        with pytest.raises(ValueError, match="learned positions"):
            lm.decode(lm.embed(rand_ids(lm, B=1, T=4)), position_ids=torch.tensor([[125, 126, 127, 128]]))


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padded_batch_matches_unpadded_rows(arch, tokenizer):
    """A 2-D padding mask: positions count real tokens only, for learned and rotary positions alike."""
    lm = build(arch, tokenizer)
    long, short = rand_ids(lm, B=1, T=6, seed=4), rand_ids(lm, B=1, T=4, seed=5)
    batch = torch.cat([long, torch.cat([torch.zeros(1, 2, dtype=torch.long), short], 1)])
    pad = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        h = lm.decode(lm.embed(batch), pad)[0]
        torch.testing.assert_close(h[0], lm.decode(lm.embed(long))[0][0], rtol=0, atol=1e-5)
        torch.testing.assert_close(h[1, 2:], lm.decode(lm.embed(short))[0][0], rtol=0, atol=1e-5)
        # and one more token through the cache, with the padding mask grown by one column
        cache = lm.new_cache()
        lm.decode(lm.embed(batch), pad, cache=cache)
        nxt = rand_ids(lm, B=2, T=1, seed=6)
        step = lm.decode(lm.embed(nxt), torch.cat([pad, torch.ones(2, 1, dtype=torch.long)], 1), cache=cache)[0]
        ref = lm.decode(lm.embed(torch.cat([short, nxt[1:]], 1)))[0]
    torch.testing.assert_close(step[1, 0], ref[0, -1], rtol=0, atol=1e-5)


def test_the_books_tiny_llama_and_tokenizer(tmp_path):
    """The museum Llama (``build_lm``) and trained BPE (``museum_tokenizer``) through the adapter."""
    from vlmbook.fusion.text import SPECIAL_TOKENS, LMConfig, build_lm, train_bpe_tokenizer

    tok = train_bpe_tokenizer(CORPUS, vocab_size=300, codebook_size=4)
    lm = CausalLM(build_lm(LMConfig(vocab_size=len(tok), hidden=32, layers=2, heads=4, kv_heads=2,
                                    intermediate=64)), tok)
    ids = torch.tensor([tok("<image></image> the red cube", add_special_tokens=False)["input_ids"]])
    lm.save_pretrained(tmp_path)
    back = CausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(back(ids), lm(ids))
    for t in (*SPECIAL_TOKENS, visual_token(3), "<pad>", "<bos>", "<eos>"):
        assert back.tokenizer.convert_tokens_to_ids(t) == tok.convert_tokens_to_ids(t)
    assert (back.tokenizer.pad_token, back.tokenizer.bos_token, back.tokenizer.eos_token) == ("<pad>", "<bos>", "<eos>")


def test_generate_stops_and_pads_with_the_stop_token(tokenizer):
    lm = build("gpt2", tokenizer)
    prompt = rand_ids(lm, T=5, seed=3)
    free = lm.generate(prompt, max_new_tokens=6)
    stop = int(free[0, 1])  # row 0 emits it at step 2
    out = lm.generate(prompt, max_new_tokens=6, stop=stop)
    assert torch.equal(out[0, :2], free[0, :2]) and bool((out[0, 1:] == stop).all())
    hit = (free[1] == stop).nonzero()
    n1 = int(hit[0]) + 1 if len(hit) else 6
    assert torch.equal(out[1, :n1], free[1, :n1])
    with pytest.raises(ValueError, match="max_new_tokens"):
        lm.generate(prompt, max_new_tokens=0)


def test_opt_with_projected_embeddings(tokenizer):
    """OPT-350m style: embeddings narrower than the decoder (``project_in``/``project_out``)."""
    cfg = transformers.OPTConfig(vocab_size=len(tokenizer), hidden_size=D, word_embed_proj_dim=16, ffn_dim=64,
                                 num_hidden_layers=L, num_attention_heads=H, max_position_embeddings=128,
                                 do_layer_norm_before=False, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    lm = CausalLM(transformers.OPTForCausalLM(cfg).eval(), tokenizer)
    assert (lm.hidden_size, lm.layer_hidden_size) == (16, D)
    ids = rand_ids(lm)
    with torch.no_grad():
        h = lm.decode(lm.embed(ids), prefix_mask(10, 2, 6))[0]
        torch.testing.assert_close(lm(ids), lm.hf(input_ids=ids).logits, rtol=0, atol=1e-5)
    assert h.shape == (2, 10, 16)
    with torch.no_grad():
        plain = lm.decode(lm.embed(ids))[0]
    adapter = GatedAdapter(lm.decoder_layers(), lm.layer_hidden_size, heads=4)  # blocks run at decoder width
    media = torch.randn(2, 3, D, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), adapter.media(media):
        torch.testing.assert_close(lm.decode(lm.embed(ids))[0], plain, rtol=0, atol=1e-6)
        for blk in adapter.blocks:
            blk.attn_gate.fill_(0.5)
        assert (lm.decode(lm.embed(ids))[0] - plain).abs().amax() > 1e-3


def test_reload_for_training_keeps_only_lora_trainable(tokenizer, tmp_path):
    lm = build("llama", tokenizer).apply_lora(r=2)
    lm.save_pretrained(tmp_path)
    frozen = CausalLM.from_pretrained(tmp_path)
    train = CausalLM.from_pretrained(tmp_path, is_trainable=True)
    assert not any(p.requires_grad for p in frozen.parameters())
    names = [n for n, p in train.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


@pytest.mark.parametrize("arch", ("gemma", "llama"))
def test_embed_scale(arch, tokenizer):
    lm = build(arch, tokenizer)
    ids = rand_ids(lm)
    assert lm.embed_scale == (D ** 0.5 if arch == "gemma" else 1.0)
    w = lm.hf.get_input_embeddings().weight
    torch.testing.assert_close(lm.embed(ids), w[ids] * lm.embed_scale, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("arch", ("gpt2", "opt", "qwen3"))
def test_prefix_cache_reused_across_questions(arch, tokenizer):
    """Prompt caching: run the image prefix once, deep-copy its cache for each question."""
    lm = build(arch, tokenizer)
    prefix, q1, q2 = rand_ids(lm, T=6, seed=7), rand_ids(lm, T=4, seed=8), rand_ids(lm, T=3, seed=9)
    with torch.no_grad():
        m = prefix_mask(6, 1, 5)
        _, shared = lm.decode(lm.embed(prefix), m, cache=lm.new_cache())
        for q in (q1, q2):
            T = 6 + q.shape[1]
            full_mask = prefix_mask(T, 1, 5)
            ref = lm.decode(lm.embed(torch.cat([prefix, q], 1)), full_mask)[0][:, 6:]
            h, _ = lm.decode(lm.embed(q), full_mask[:, :, 6:], cache=copy.deepcopy(shared))
            torch.testing.assert_close(h, ref, rtol=0, atol=1e-5)
    assert shared.get_seq_length() == 6  # the shared prefix cache was not extended
