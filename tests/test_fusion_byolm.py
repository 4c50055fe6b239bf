"""Bring your own language model: ``VisionLanguageModel`` on any local Hugging Face causal LM (Chapter 5 §5.1).

The test builds five tiny architectures itself (GPT-2: learned absolute positions and no
``model.layers``; OPT; Llama; Qwen2; GPT-NeoX), each saved as a plain HF checkpoint folder with
a tokenizer whose special tokens follow its family (Qwen2's has no bos). Each runs the three
routes (discrete codes, continuous prefix, gated cross-attention): forward, greedy generate with
and without the KV cache, and save -> ``from_pretrained`` after the original folder is deleted.
LoRA on the VLM's LM saves, reloads and merges.
"""
from __future__ import annotations

import copy
import shutil

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tests.test_fusion_lm import CORPUS, D, _configs
from vlmbook.fusion import ROUTES, VisionLanguageModel, VLMConfig
from vlmbook.fusion.lm import CausalLM
from vlmbook.fusion.text import BOS, SPECIAL_TOKENS, patch_token, visual_token

torch.set_num_threads(1)

ARCHS = ("gpt2", "opt", "llama", "qwen2", "gpt_neox")
#: bos / eos / unk / pad as each family's own tokenizer sets them (Qwen2: no bos; GPT-2: no pad)
FAMILY_TOKENS = {
    "gpt2": dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"),
    "opt": dict(bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"),
    "llama": dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>"),
    "qwen2": dict(eos_token="<|endoftext|>", pad_token="<|endoftext|>"),
    "gpt_neox": dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"),
}
#: small VLM fields: 2 x 2 image tokens, 16 codebook words, 32-px images (discrete: 2 cells x 4 sub-blocks)
FIELDS = dict(grid=2, codebook_size=16, image_size=32, quant_sub=4)
QUESTION = "what colour is the cube ?"


def family_tokenizer(arch: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE on the test corpus with ``arch``'s family special tokens (not the book's)."""
    specials = FAMILY_TOKENS[arch]
    tok = Tokenizer(models.BPE(unk_token=specials.get("unk_token")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=list(dict.fromkeys(specials.values())),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **specials)


def save_checkpoint(arch: str, folder, seed: int = 0):
    """A tiny seeded ``arch`` model + tokenizer saved as transformers writes them; returns the model."""
    tok = family_tokenizer(arch)
    extra = 5 if arch == "llama" else 0  # an embedding table larger than the tokenizer, as Qwen's
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(_configs(len(tok) + extra)[arch]).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model


def build(path, route: str, **fields) -> VisionLanguageModel:
    """``from_lm`` in ``route``; continuous/gated read random features, gated gates opened."""
    side = {} if route == "discrete" else {"image_side": "features"}
    m = VisionLanguageModel.from_lm(path, route=route, **FIELDS, **side, **fields).eval()
    if route == "discrete":
        m.quantizer.fit(torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)), iters=3)
        # new rows start at the mean of the old ones (HF's resize): make the codebook words tell
        # codes apart, as training would
        lo, hi = m.visual_range
        with torch.no_grad():
            m.lm.get_input_embeddings().weight[lo:hi].normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    if route == "gated":  # open the gates so that the image matters
        for b in m.adapter.blocks:
            torch.nn.init.constant_(b.attn_gate, 0.7)
    return m


def image_inputs(m: VisionLanguageModel, B: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    """Seeded images (discrete route) or encoder features (continuous, gated) for ``B`` exhibits."""
    g = torch.Generator().manual_seed(seed)
    if m.config.route == "discrete":
        return {"images": torch.rand(B, 3, 32, 32, generator=g)}
    return {"features": torch.randn(B, m.config.image_tokens, m.config.hidden, generator=g)}


def question(m: VisionLanguageModel, B: int = 2) -> torch.Tensor:
    return torch.tensor([m.encode_text(QUESTION) + [m.ids["assistant"]]] * B)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """arch -> (checkpoint folder, the original HF model)."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {a: (root / a, save_checkpoint(a, root / a)) for a in ARCHS}


@pytest.fixture(scope="module")
def vlms(checkpoints, tmp_path_factory):
    """(arch, route) -> VLM built from a copy of the checkpoint that is deleted right after."""
    out = {}
    for arch in ARCHS:
        copy_dir = tmp_path_factory.mktemp("gone") / arch
        shutil.copytree(checkpoints[arch][0], copy_dir)
        for route in ROUTES:
            out[arch, route] = build(copy_dir, route)
        shutil.rmtree(copy_dir)
    return out


# -- every architecture ------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_lm_keeps_its_weights_and_gains_the_books_tokens(arch, checkpoints, vlms):
    m = vlms[arch, "continuous"]
    t, original = m.tokenizer, checkpoints[arch][1]
    assert m.config.hidden == D and m.config.lm_path.endswith(arch) and type(m.lm) is type(original)
    for tok in (*SPECIAL_TOKENS, *(visual_token(k) for k in range(16)), *(patch_token(k) for k in range(4))):
        assert t.convert_tokens_to_ids(tok) not in (None, t.unk_token_id), tok
    assert m.visual_range[1] - m.visual_range[0] == 16 and m.patch_range[1] - m.patch_range[0] == 4
    # the family's own bos is kept; a tokenizer without one gets the book's <bos>, one without pad a <pad>
    assert t.bos_token == FAMILY_TOKENS[arch].get("bos_token", BOS) and m.ids["bos"] == t.bos_token_id
    assert m.ids["pad"] is not None and m.ids["pad"] == t.pad_token_id
    assert m.text.vocab_size >= len(t) > len(family_tokenizer(arch))
    # the LM is the checkpoint's: text-only logits over the old vocabulary are unchanged
    ids = torch.tensor([family_tokenizer(arch)(QUESTION)["input_ids"]])
    with torch.no_grad():
        ref = original(input_ids=ids).logits
        torch.testing.assert_close(m.text(ids)[..., :ref.shape[-1]], ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shape_image_matters_and_gradients(arch, route, vlms):
    m = vlms[arch, route]
    ids = torch.tensor([m.prompt_ids(QUESTION, "red")] * 2)
    logits = m(ids, **image_inputs(m))
    assert logits.shape == (2, ids.shape[1], m.text.vocab_size) and logits.dtype == torch.float32
    with torch.no_grad():
        other = m(ids, **image_inputs(m, seed=2))
    assert (other - logits).abs().amax() > 1e-4  # other images, other logits: the LM reads the image
    logits[:, -3:].logsumexp(-1).sum().backward()
    part = m.projector if route != "discrete" else m.lm.get_input_embeddings()
    grads = [p.grad for p in part.parameters()]
    m.zero_grad(set_to_none=True)
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("arch", ARCHS)
def test_generate_cached_equals_uncached(arch, route, vlms):
    m = vlms[arch, route]
    q, img = question(m), image_inputs(m)
    images = img.pop("images", None)
    cached = m.generate(images, q, max_new_tokens=5, stop_token=-1, **img)
    plain = m.generate(images, q, max_new_tokens=5, stop_token=-1, use_cache=False, **img)
    assert cached.shape == (2, 5) and cached.dtype == torch.long and torch.equal(cached, plain)
    with torch.no_grad():
        full = m(m.question_prompt(q), images=images, **img)[:, -1, :len(m.tokenizer)]
    assert torch.equal(cached[:, 0], full.argmax(-1))  # greedy = argmax of the forward pass
    if route == "discrete":  # prompt caching: the image prefix run once, reused
        assert torch.equal(m.generate(None, q, max_new_tokens=5, stop_token=-1, prefix=m.cache_prefix(images)), cached)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("arch", ARCHS)
def test_save_reload_without_the_checkpoint(arch, route, vlms, tmp_path):
    m = vlms[arch, route]
    assert not (tmp_path.parent / m.config.lm_path).exists()  # the checkpoint it was built from is gone
    m.save_pretrained(tmp_path / "vlm")
    for f in ("config.json", "model.safetensors", "lm/config.json", "tokenizer/tokenizer.json"):
        assert (tmp_path / "vlm" / f).is_file(), f
    back = VisionLanguageModel.from_pretrained(tmp_path / "vlm")
    assert back.config == m.config and type(back.lm) is type(m.lm)
    assert back.tokenizer.get_vocab() == m.tokenizer.get_vocab() and back.ids == m.ids
    ids = torch.tensor([m.prompt_ids(QUESTION, "red")] * 2)
    img = image_inputs(m)
    with torch.no_grad():
        assert torch.equal(back(ids, **img), m(ids, **img))
    images = img.pop("images", None)
    assert torch.equal(back.generate(images, question(m), max_new_tokens=4, **img),
                       m.generate(images, question(m), max_new_tokens=4, **img))


def test_golden_logits_llama_continuous(vlms):
    m = vlms["llama", "continuous"]
    ids = torch.tensor([m.prompt_ids(QUESTION)])
    with torch.no_grad():
        out = m(ids, **image_inputs(m, B=1))[0, -1, 4:8]
    torch.testing.assert_close(out, torch.tensor(GOLDEN), rtol=0, atol=1e-4)


GOLDEN = [0.172547, 0.194601, 0.002874, 0.033353]  # seed 0 tiny Llama checkpoint, features from seed 1


# -- LoRA on the VLM's language model ----------------------------------------------------------
@pytest.mark.parametrize("arch,route", [("gpt2", "gated"), ("opt", "continuous"), ("llama", "discrete")])
def test_lora_save_reload_merge(arch, route, checkpoints, tmp_path):
    m = build(checkpoints[arch][0], route)
    ids = torch.tensor([m.prompt_ids(QUESTION, "red")] * 2)
    img = image_inputs(m)
    images = img.pop("images", None)
    with torch.no_grad():
        base = m(ids, images=images, **img)
    m.apply_lora(r=4, alpha=8)
    assert m.text.is_peft and not _is_peft_module(m.lm)  # vlm.lm stays the HF model, the wrapper in m.text
    with torch.no_grad():
        torch.testing.assert_close(m(ids, images=images, **img), base, rtol=0, atol=1e-6)  # LoRA B = 0 at init
        g = torch.Generator().manual_seed(0)
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        tuned = m(ids, images=images, **img)
    assert (tuned - base).abs().amax() > 1e-3
    lm_trainable = [n for n, p in m.lm.named_parameters() if p.requires_grad]
    assert lm_trainable and all("lora_" in n for n in lm_trainable)  # the LM's base weights are frozen
    side = m.quantizer if route == "discrete" else m.projector
    assert route == "discrete" or all(p.requires_grad for p in side.parameters())  # the projector still trains
    gen = m.generate(images, question(m), max_new_tokens=4, stop_token=-1, **img)
    assert torch.equal(gen, m.generate(images, question(m), max_new_tokens=4, stop_token=-1, use_cache=False, **img))
    m.save_pretrained(tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").is_file()
    back = VisionLanguageModel.from_pretrained(tmp_path / "lora")
    assert back.text.is_peft
    with torch.no_grad():
        assert torch.equal(back(ids, images=images, **img), tuned)
        assert torch.equal(back.generate(images, question(m), max_new_tokens=4, stop_token=-1, **img), gen)
        back.text.model.disable_adapter_layers()
        torch.testing.assert_close(back(ids, images=images, **img), base, rtol=0, atol=0)  # saved base = original
        back.text.model.enable_adapter_layers()
        back.merge_lora()
        assert not back.text.is_peft and not any("lora_" in k for k in back.state_dict())
        torch.testing.assert_close(back(ids, images=images, **img), tuned, rtol=0, atol=1e-5)
        assert torch.equal(back.generate(images, question(m), max_new_tokens=4, stop_token=-1, **img), gen)
    back.save_pretrained(tmp_path / "merged")
    assert not (tmp_path / "merged" / "adapter").exists()
    with torch.no_grad():
        assert torch.equal(VisionLanguageModel.from_pretrained(tmp_path / "merged")(ids, images=images, **img),
                           back(ids, images=images, **img))


def _is_peft_module(module) -> bool:
    from peft import PeftModel

    return isinstance(module, PeftModel)


def test_get_peft_model_by_hand_and_reload_for_training(checkpoints, tmp_path):
    """``vlm.lm = get_peft_model(vlm.lm, cfg)``, the reader's own LoRA setup, works the same way."""
    from peft import LoraConfig, get_peft_model

    from vlmbook.fusion.lm import quiet_peft

    m = build(checkpoints["qwen2"][0], "continuous")
    ids = torch.tensor([m.prompt_ids(QUESTION, "red")] * 2)
    img = image_inputs(m)
    with quiet_peft():
        m.lm = get_peft_model(m.lm, LoraConfig(r=2, target_modules=["q_proj", "v_proj", "down_proj"]))
    assert m.text.is_peft and not _is_peft_module(m.lm)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.fill_(0.1)
        tuned = m(ids, **img)
    q = question(m)
    gen = m.generate(None, q, max_new_tokens=4, stop_token=-1, **img)
    assert torch.equal(gen, m.generate(None, q, max_new_tokens=4, stop_token=-1, use_cache=False, **img))
    m(ids, **img)[:, -3:].logsumexp(-1).sum().backward()  # a training step reaches the adapter and the projector
    for name, p in m.named_parameters():
        assert (p.grad is not None) == ("lora_" in name or not name.startswith("lm.")), name
    m.save_pretrained(tmp_path)
    frozen = VisionLanguageModel.from_pretrained(tmp_path)
    train = VisionLanguageModel.from_pretrained(tmp_path, is_trainable=True)
    with torch.no_grad():
        assert torch.equal(frozen(ids, **img), tuned) and torch.equal(train(ids, **img), tuned)
    assert torch.equal(frozen.generate(None, q, max_new_tokens=4, stop_token=-1, **img), gen)
    assert not any(p.requires_grad for p in frozen.lm.parameters())
    names = [n for n, p in train.lm.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


# -- other ways in, and clear errors -------------------------------------------------------------
def test_model_object_config_path_and_from_lm_agree(checkpoints):
    """``from_lm(path)``, ``from_lm(model, tokenizer)``, ``from_lm(CausalLM)`` and ``VLMConfig(lm_path=...)``."""
    path = checkpoints["gpt2"][0]
    ref = build(path, "continuous")
    ids = torch.tensor([ref.prompt_ids(QUESTION, "red")])
    img = image_inputs(ref, B=1)
    model, tok = (transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True),
                  transformers.AutoTokenizer.from_pretrained(path, local_files_only=True))
    n_tok = len(tok)
    by_config = VisionLanguageModel(VLMConfig(route="continuous", image_side="features", hidden=D, lm_path=str(path),
                                              **FIELDS))
    in_memory = VisionLanguageModel.from_lm(model, tok, route="continuous", image_side="features", **FIELDS)
    wrapped = VisionLanguageModel.from_lm(CausalLM(copy.deepcopy(model), tok), route="continuous",
                                          image_side="features", **FIELDS)
    assert len(tok) == n_tok  # the reader's tokenizer is copied, not changed
    with torch.no_grad():
        want = ref(ids, **img)
        for m in (by_config, in_memory, wrapped):
            assert torch.equal(m.eval()(ids, **img), want)
    assert in_memory.lm is model  # a model object is used in place


def test_a_causallm_folder_and_a_bf16_model(checkpoints, tmp_path):
    """A folder written by ``CausalLM.save_pretrained`` (tokenizer in ``tokenizer/``) loads; bf16 becomes float32."""
    lm = CausalLM.from_pretrained(checkpoints["gpt_neox"][0])
    lm.save_pretrained(tmp_path / "lm")
    assert (tmp_path / "lm" / "tokenizer").is_dir() and not (tmp_path / "lm" / "tokenizer.json").exists()
    ref = build(checkpoints["gpt_neox"][0], "gated")
    m = build(tmp_path / "lm", "gated")
    ids = torch.tensor([m.prompt_ids(QUESTION, "red")])
    with torch.no_grad():
        assert torch.equal(m(ids, **image_inputs(m, B=1)), ref(ids, **image_inputs(ref, B=1)))
    half = CausalLM.from_pretrained(checkpoints["gpt_neox"][0]).hf.to(torch.bfloat16)
    m16 = VisionLanguageModel.from_lm(half, family_tokenizer("gpt_neox"), route="gated", image_side="features",
                                      **FIELDS)
    assert m16.text.dtype == torch.float32 and m16(ids, **image_inputs(m16, B=1)).isfinite().all()


def test_closed_answers_and_citations_on_a_foreign_tokenizer(checkpoints):
    m = build(checkpoints["opt"][0], "continuous", cite=True, closed_answers=True)
    ans = m.answer_ids("red star", patches=[1, 3])
    # every answer word is one whole-word token of the foreign tokenizer too (never a compound token)
    words = m.encode_text("red star")
    assert ans == m.citation_ids([1, 3]) + words + [m.ids["end"]]
    toks = m.tokenizer.convert_ids_to_tokens(words)
    assert "red" in toks and "star" in toks
    assert m.decode_answer(ans) == "[CITE:<p_1><p_3>] red star"


def test_clear_errors(checkpoints, tmp_path):
    path = checkpoints["llama"][0]
    with pytest.raises(ValueError, match="config.json"):
        VisionLanguageModel.from_lm(tmp_path / "nothing-here")
    with pytest.raises(ValueError, match="config.json"):
        VisionLanguageModel(VLMConfig(lm_path=str(tmp_path), hidden=D))
    with pytest.raises(ValueError, match="hidden=64 conflicts"):
        VisionLanguageModel.from_lm(path, hidden=64)
    with pytest.raises(ValueError, match="hidden=64 conflicts with the hidden size 32"):
        VisionLanguageModel(VLMConfig(lm_path=str(path)))  # hidden defaults to the book's 64
    with pytest.raises(ValueError, match="lm_path"):
        VisionLanguageModel.from_lm(path, lm_path="elsewhere")
    model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    with pytest.raises(ValueError, match="tokenizer"):
        VisionLanguageModel.from_lm(model)
    with pytest.raises(ValueError, match="lm_path"):
        VisionLanguageModel(VLMConfig(hidden=D), lm=model)
    from peft import LoraConfig, get_peft_model

    from vlmbook.fusion.lm import quiet_peft

    with quiet_peft():
        wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="apply_lora"):
        VisionLanguageModel.from_lm(wrapped, family_tokenizer("llama"))
    CausalLM.from_pretrained(path).apply_lora(r=2).save_pretrained(tmp_path / "lora")
    with pytest.raises(ValueError, match="unmerged LoRA adapter"):
        VisionLanguageModel.from_lm(tmp_path / "lora")
    with pytest.raises(TypeError, match="checkpoint folder"):
        VisionLanguageModel.from_lm(42)
    # OPT-350m style: embeddings narrower than the decoder cannot feed gated blocks of one width
    cfg = transformers.OPTConfig(vocab_size=300, hidden_size=D, word_embed_proj_dim=16, ffn_dim=64,
                                 num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128)
    opt = transformers.OPTForCausalLM(cfg)
    with pytest.raises(ValueError, match="gated route needs one width"):
        VisionLanguageModel.from_lm(opt, family_tokenizer("opt"), route="gated", image_side="features", **FIELDS)
    m = VisionLanguageModel.from_lm(opt, family_tokenizer("opt"), route="continuous", image_side="features", **FIELDS)
    assert m.config.hidden == 16  # the prefix routes write at the embedding width
    # a saved VLM whose lm/ folder went missing says so
    m.save_pretrained(tmp_path / "vlm")
    shutil.rmtree(tmp_path / "vlm" / "lm")
    with pytest.raises(ValueError, match="lm/config.json"):
        VisionLanguageModel.from_pretrained(tmp_path / "vlm")


def test_the_books_own_model_is_unchanged(tmp_path):
    """``lm_path`` empty: the book's tiny Llama; configs saved before the field existed still load."""
    cfg = VLMConfig(hidden=32, intermediate=64, layers=2, corpus_scenes=200, codebook_size=32)
    assert cfg.lm_path == "" and VLMConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "lm_path"},
                                                     require_all=True) == cfg
    m = VisionLanguageModel(cfg).eval()
    assert type(m.lm).__name__ == "LlamaForCausalLM" and m.tokenizer.bos_token == BOS
    # LoRA on the book's Llama: seeded, saved beside the base weights, reloaded as it was
    ids = torch.tensor([m.prompt_ids(QUESTION, "red")])
    feats = {"images": torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))}
    m.apply_lora(r=2)
    a = {n: p.clone() for n, p in m.named_parameters() if "lora_A" in n}
    assert a and all(torch.equal(p, a[n]) for n, p in VisionLanguageModel(cfg).apply_lora(r=2).named_parameters()
                     if "lora_A" in n)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.fill_(0.05)
        tuned = m(ids, **feats)
    m.save_pretrained(tmp_path)
    assert not (tmp_path / "lm").exists() and (tmp_path / "adapter").is_dir()
    with torch.no_grad():
        assert torch.equal(VisionLanguageModel.from_pretrained(tmp_path)(ids, **feats), tuned)
    with pytest.raises(ValueError, match="heads"):
        VLMConfig(lm_path="x", hidden=30, heads=4)


def test_lora_with_trained_image_token_rows(checkpoints, tmp_path):
    """The discrete route's new ``<v_k>`` rows train through ``modules_to_save`` and travel with the adapter."""
    m = build(checkpoints["qwen2"][0], "discrete")  # untied embeddings and head
    ids = torch.tensor([m.prompt_ids(QUESTION, "red")] * 2)
    img = image_inputs(m)
    with torch.no_grad():
        base = m(ids, **img)
    m.apply_lora(r=2, modules_to_save=["embed_tokens", "lm_head"])
    lo, hi = m.visual_range
    with torch.no_grad():
        m.lm.get_input_embeddings().weight[lo:hi].normal_(0, 1, generator=torch.Generator().manual_seed(3))
        tuned = m(ids, **img)
    assert (tuned - base).abs().amax() > 1e-3
    m.save_pretrained(tmp_path / "m")
    back = VisionLanguageModel.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(back(ids, **img), tuned)
        back.text.model.disable_adapter_layers()
        torch.testing.assert_close(back(ids, **img), base, rtol=0, atol=0)
        back.text.model.enable_adapter_layers()
        torch.testing.assert_close(back.merge_lora()(ids, **img), tuned, rtol=0, atol=1e-5)
