"""Chapter 6: the VLM adapter, chat template, chain of thought, curriculum, LoRA via peft, parameter groups, reward model."""
import pytest
import torch
from torch import nn

from vlmbook.data import Museum, generate_scene, support_patches
from vlmbook.data.museum import questions
from vlmbook.fusion import VisionLanguageModel, VLMConfig
from vlmbook.loop import LoopConfig
from vlmbook.train import (ANSWER, IGNORE, THOUGHT, ChatTemplate, Curriculum, Turn, apply_lora, chain_of_thought,
                           cot_text, difficulty, dpo_loss, freeze_all_but, load_lora, param_groups, reward_loss,
                           sequence_logprobs, sft_loss, trainable_fraction, vlm_lrs)
from vlmbook.train.policy import VLMPolicy, freeze
from vlmbook.train.reward import RewardModel
from vlmbook.train.runner import fit_groups

SMALL = dict(hidden=32, intermediate=64, enc_channels=8, layers=2, corpus_scenes=200, codebook_size=32, image_size=48,
             grid=3, quant_sub=4)


def _vlm(seed=0, **kw):
    torch.manual_seed(seed)
    return VisionLanguageModel(VLMConfig(route="continuous", seed=seed, **{**SMALL, **kw})).eval()


@pytest.fixture(scope="module")
def images():
    return Museum("train", 48).tensors(0, 4)


@pytest.fixture()
def policy():
    return VLMPolicy(_vlm())


# -- chat template and chain of thought ------------------------------------------------------
def test_chat_template_labels_only_assistant_tokens():
    t = ChatTemplate({"user": 1, "assistant": 2}, end_id=3)
    ids, labels = t.render([Turn.of("user", [10, 11]), Turn("assistant", (((20, 21), False), ((22,), True)))])
    assert ids == [1, 10, 11, 2, 20, 21, 22, 3]
    assert labels == [IGNORE] * 6 + [22, 3]  # hidden thought (20, 21) is shown but not learned; <end> is learned
    with pytest.raises(ValueError, match="role"):
        t.render([Turn.of("system", [1])])
    with pytest.raises(ValueError, match="no learned"):
        t.render([Turn.of("user", [10])])


def test_chain_of_thought_from_ground_truth():
    sc = generate_scene("train", 3)
    for qa in questions(sc):
        thought, answer = chain_of_thought(sc, qa, 3)
        assert answer.endswith(qa.answer)  # museum.cite writes the guide's cite-first form
        assert all(f"<p_{k}>" in answer for k in support_patches(sc, qa, 3))
        for i in qa.objects:
            assert sc.objects[i].name in thought
        if not qa.objects:
            assert thought == "no such object in the exhibit"
    a, b = cot_text("the red circle at top left", "yes")
    assert a == f" {THOUGHT} the red circle at top left" and b == f" {ANSWER} yes"


def test_policy_chat_hides_or_shows_the_thought(policy):
    th, ans = cot_text("small red circle at top left", "yes")
    shown = policy.chat("Is there a red circle?", [(th, True), (ans, True)], 0)
    hidden = policy.chat("Is there a red circle?", [(th, False), (ans, True)], 0)
    assert shown.ids == hidden.ids
    n_shown = sum(x != IGNORE for x in shown.labels)
    n_hidden = sum(x != IGNORE for x in hidden.labels)
    assert n_shown - n_hidden == len(policy.encode(th))
    # the answer part matches Chapter 5's layout exactly
    vlm = policy.module
    ex = policy.response("What colour is the star?", "red", 0)
    assert ex.ids == vlm.prompt_ids("What colour is the star?", "red")
    learned = [x for x in ex.labels if x != IGNORE]
    assert learned == vlm.encode_text(" red") + [vlm.ids["end"]]


# -- curriculum ------------------------------------------------------------------------------
def test_curriculum_widens_and_is_a_pure_function_of_the_step():
    d = [5.0, 1.0, 3.0, 2.0, 4.0, 0.0, 6.0, 7.0, 8.0, 9.0]
    c = Curriculum(d, steps=100, start=0.3, ramp=0.5)
    assert c.pool_size(0) == 3 and c.pool_size(50) == 10 and c.pool_size(25) == round(0.65 * 10)
    easy = {5, 1, 3}  # the three smallest difficulties
    assert set(c.indices(0, 50)) <= easy
    assert c.indices(7, 8) == Curriculum(d, steps=100, start=0.3, ramp=0.5).indices(7, 8)
    assert len(set(c.indices(99, 200))) == 10
    sc = generate_scene("train", 0)
    qs = questions(sc)
    assert all(difficulty(sc, q) >= len(sc.objects) for q in qs)
    with pytest.raises(ValueError):
        Curriculum([], 10)


# -- the adapter's tensors ----------------------------------------------------------------------
def test_sequence_logprobs_equal_the_models_own_logits_and_ignore_padding(policy, images):
    ex = [policy.response("What colour is the star?", "red", 0),
          policy.response("How many objects are in the exhibit?", "[CITE:<p_1>] 3", 1)]
    batch = policy.collate(ex, images)
    assert batch["input_ids"].shape[0] == 2 and batch["images"].shape == (2, 3, 48, 48)
    lp = policy.sequence_logprobs(batch)
    assert lp.shape == (2,) and torch.all(lp < 0)
    for r in range(2):  # alone (no padding) == in the padded batch
        alone = policy.sequence_logprobs(policy.collate([ex[r]], images))
        assert torch.allclose(alone, lp[r:r + 1], atol=1e-5)
    # independent check from the VLM's own forward and the answer span it trains on
    vlm = policy.module
    ids = torch.tensor([ex[0].ids])
    logits = vlm(ids, images=images[:1])[0]
    ans = vlm.encode_text(" red") + [vlm.ids["end"]]
    start = len(ex[0].ids) - len(ans)
    want = sum(float(logits[start - 1 + j].detach().log_softmax(-1)[a]) for j, a in enumerate(ans))
    assert abs(float(lp[0].detach()) - want) < 1e-4
    h = policy.hidden(batch)
    assert h.shape == (*batch["input_ids"].shape, policy.hidden_size)


def test_bad_inputs_raise_value_errors(policy, images):
    with pytest.raises(ValueError, match="equal"):
        policy.pair("What colour is the star?", "red [CITE:<v_1>]", "red  [CITE:<v_1>]", 0)
    with pytest.raises(ValueError, match="empty batch"):
        policy.collate([], images)
    with pytest.raises(ValueError, match="not linear layers"):
        apply_lora(policy.language_model, targets=("q_proj", "wq"))
    other = VLMPolicy(_vlm(bpe_vocab=400))
    with pytest.raises(ValueError, match="vocabulary"):
        policy.check_compatible(other)
    policy.check_compatible(VLMPolicy(_vlm(seed=1)))  # same tokenizer: fine


# -- LoRA through peft ------------------------------------------------------------------------
def test_lora_is_peft_on_the_lm_only_and_saves_reloads_merges(policy, images, tmp_path):
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    vlm = policy.module
    base_state = {k: v.clone() for k, v in vlm.lm.state_dict().items()}
    h = policy.add_lora(r=4, alpha=8, targets=("q_proj", "v_proj"))
    assert isinstance(h.peft_model, PeftModel)
    lora_layers = [n for n, m in vlm.named_modules() if isinstance(m, LoraLayer)]
    assert lora_layers and all(n.startswith("lm.") for n in lora_layers)  # never the vision tower
    assert 0 < trainable_fraction(vlm.lm) < 0.2
    batch = policy.collate([policy.response("What colour is the star?", "red", 0)], images)
    # a few steps on one example: the adapter moves the output, the encoder does not train
    opt = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-2)
    enc_before = [p.clone() for p in vlm.encoder.parameters()]
    proj_before = [p.clone() for p in vlm.projector.parameters()]
    for _ in range(3):
        logits, labels = policy.logits(batch)
        loss = sft_loss(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(enc_before, vlm.encoder.parameters()))
    assert not any(torch.equal(a, b) for a, b in zip(proj_before, vlm.projector.parameters()))
    vlm.eval()
    with torch.no_grad():
        tuned = policy.sequence_logprobs(batch)
    h.save(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    # reload into a fresh copy of the same base model
    fresh = VLMPolicy(_vlm())
    fresh.module.lm.load_state_dict(base_state)
    fresh.module.projector.load_state_dict(vlm.projector.state_dict())  # the projector trained beside the adapter
    h2 = load_lora(fresh.language_model, tmp_path / "adapter")
    with torch.no_grad():
        assert torch.allclose(fresh.sequence_logprobs(batch), tuned, atol=1e-5)
    merged = h2.merge()
    assert merged is fresh.module.lm and not any(isinstance(m, LoraLayer) for m in fresh.module.modules())
    with torch.no_grad():
        assert torch.allclose(fresh.sequence_logprobs(batch), tuned, atol=1e-4)
        assert not torch.allclose(fresh.sequence_logprobs(batch), VLMPolicy(_vlm()).sequence_logprobs(batch), atol=1e-3)


# -- parameter groups, freezing and the loop ------------------------------------------------------
def test_param_groups_and_stage0_freezing(policy):
    vlm = policy.module
    names = freeze_all_but(vlm, ["projector"])
    assert names and all(n.startswith("projector.") for n in names)
    with pytest.raises(ValueError, match="no submodule"):
        freeze_all_but(vlm, ["resampler"])
    for p in vlm.parameters():
        p.requires_grad_(True)
    groups = param_groups(vlm, {"lm": 1e-4, "projector": 1e-3, "encoder": 0.0})
    assert [g["name"] for g in groups] == ["lm", "projector"] and groups[1]["lr"] == 1e-3
    assert not any(p.requires_grad for p in vlm.encoder.parameters())
    with pytest.raises(ValueError, match="under none"):
        param_groups(vlm, {"lm": 1e-4})  # the projector would silently not train


def test_vlm_lrs_covers_top_level_parameters_such_as_learned_cell_embeddings():
    vlm = _vlm(cell_embed="learned")
    lrs = vlm_lrs(vlm, 1e-3)
    assert lrs["cell_embed"] == 1e-3 and lrs["encoder"] == 0.0 and lrs["lm"] == 1e-3
    with pytest.raises(ValueError, match="under none"):
        param_groups(vlm, {"lm": 1e-3, "projector": 1e-3, "encoder": 0.0})  # cell_embed would not train
    groups = {g["name"]: g for g in param_groups(vlm, lrs)}
    assert groups["cell_embed"]["params"] == [vlm.cell_embed] and "encoder" not in groups
    assert freeze_all_but(vlm, ["cell_embed"]) == ["cell_embed"]


def test_fit_groups_trains_resumes_and_uses_each_lr(policy, images, tmp_path):
    vlm = policy.module
    ex = [policy.response("What colour is the star?", "red", 0), policy.response("Is there a blue cube?", "no", 1)]
    batch = policy.collate(ex, images)

    def loss_fn(model, b, step):
        logits, labels = policy.logits(b)
        return sft_loss(logits, labels)

    cfg = LoopConfig(steps=4, lr=1e-3, progress=False, log_every=1)
    groups = param_groups(vlm, {"lm": 1e-3, "projector": 1e-2, "encoder": 0.0})
    enc = [p.clone() for p in vlm.encoder.parameters()]
    lm_w = vlm.lm.model.layers[0].mlp.up_proj.weight
    proj_w = next(p for p in vlm.projector.parameters() if p.ndim == 2)
    lm0, proj0 = lm_w.detach().clone(), proj_w.detach().clone()
    hist = fit_groups(vlm, loss_fn, lambda s: batch, cfg, groups, ckpt_dir=tmp_path / "ck")
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert all(torch.equal(a, b) for a, b in zip(enc, vlm.encoder.parameters()))
    # Adam moves each weight by about lr per step: the projector (lr 1e-2) moves ~10x more than the LM (1e-3)
    d_lm = float((lm_w.detach() - lm0).abs().max())
    d_proj = float((proj_w.detach() - proj0).abs().max())
    assert d_proj > 4 * d_lm > 0
    # resuming a finished run does nothing and keeps the history
    hist2 = fit_groups(vlm, loss_fn, lambda s: batch, cfg, param_groups(vlm, {"lm": 1e-3, "projector": 1e-2,
                                                                           "encoder": 0.0}), ckpt_dir=tmp_path / "ck")
    assert hist2 == hist


# -- reward model ------------------------------------------------------------------------------
def test_reward_model_scores_at_the_end_and_learns_a_pair(images):
    policy = VLMPolicy(_vlm())
    rm = RewardModel(policy)
    c, r = policy.pair("What colour is the star?", "red [CITE:<v_4>]", "blue [CITE:<v_4>]", 0)
    bc, br = policy.collate([c], images), policy.collate([r], images)
    s = rm(bc)
    assert s.shape == (1,)
    opt = torch.optim.Adam(rm.parameters(), lr=3e-3)
    for _ in range(15):
        loss = reward_loss(rm(bc), rm(br))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(rm(bc)) > float(rm(br))


def test_dpo_on_the_vlm_moves_toward_the_chosen_answer(images):
    policy = VLMPolicy(_vlm())
    ref = freeze(_vlm())
    refp = VLMPolicy(ref)
    policy.check_compatible(refp)
    c, r = policy.pair("What colour is the star?", "red [CITE:<v_4>]", "red", 0)
    batch = policy.collate([c, r], images)
    with torch.no_grad():
        ref_lp = refp.sequence_logprobs(batch)
    opt = torch.optim.Adam([p for p in policy.module.parameters()], lr=3e-3)
    policy.module.train()
    for i in range(6):
        lp = policy.sequence_logprobs(batch)
        loss = dpo_loss(lp[:1], lp[1:], ref_lp[:1], ref_lp[1:], beta=0.5)
        if i == 0:
            assert abs(float(loss.detach()) - 0.693147) < 1e-4  # policy == reference at the start
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        lp = policy.sequence_logprobs(batch)
    assert float((lp[0] - ref_lp[0]) - (lp[1] - ref_lp[1])) > 0


def test_policy_follows_the_guides_layout_and_cite_first_answers(images):
    """A question-first, cite-first model (the recipe of VLMConfig.tiny): examples are its own prompt_ids."""
    from vlmbook.fusion.model import RECIPE
    from vlmbook.train.stages import prompt_cache_ttft

    vlm = _vlm(**RECIPE)
    p = VLMPolicy(vlm)
    q = "What colour is the star?"
    ex = p.response(q, "[CITE:<p_3><p_4>] red", 0)
    assert ex.ids == vlm.prompt_ids(q, "red", [3, 4])
    assert ex.ids.index(vlm.ids["image"]) > ex.ids.index(vlm.encode_text(q)[0])  # question before image
    learned = [x for x in ex.labels if x != IGNORE]
    assert learned == vlm.answer_ids("red", [3, 4])
    # a citation written after the answer is the same answer
    assert p.response(q, "red [CITE:<p_3>] [CITE:<p_4>]", 0).ids == ex.ids
    # the decoded text of what the model would write round-trips to the same example
    assert p.response(q, vlm.decode_answer(vlm.answer_ids("red", [3, 4])), 0).ids == ex.ids
    # the adapter's labels line up with the model's own answer_logprobs (which, like generate, leave
    # out the padding rows of the vocabulary; the adapter's log-probs are over every logit)
    batch = p.collate([ex], images)
    ids = batch["input_ids"]
    targets = torch.zeros_like(ids, dtype=torch.bool)
    n = len(learned)
    targets[0, len(ex.ids) - n - 1:len(ex.ids) - 1] = True
    ref = vlm.answer_logprobs(ids, targets, images=images[:1])
    with torch.no_grad():
        logits, labels = p.logits(batch)
        logits = logits.float().clone()
        logits[..., len(vlm.tokenizer):] = float("-inf")
        assert torch.allclose(sequence_logprobs(logits, labels), ref, atol=1e-5)
        assert float(p.sequence_logprobs(batch)) <= float(ref) + 1e-5
    out = p.sample(images[:2], [q, "Is there a blue cube?"], max_new_tokens=3, do_sample=False)
    assert out == [vlm.ask(images[i], s, max_new_tokens=3) for i, s in enumerate([q, "Is there a blue cube?"])]
    t = prompt_cache_ttft(p, images[0], q, repeats=1)
    # question-first: the image tokens' keys and values depend on the question; the encoder's features do not
    assert t["ttft_ms"] > 0 and t["ttft_cached_ms"] > 0 and t["cache"] == "image-features"


def test_reward_model_logprob_prior_adds_the_weighted_answer_logprob(images):
    """score = head(h_end) + a · log π(y|x) with a learned a (= 1 at start); training moves a."""
    policy = VLMPolicy(_vlm())
    plain = RewardModel(policy)
    prior = RewardModel(policy, logprob_prior=True)
    prior.head.load_state_dict(plain.head.state_dict())
    c, r = policy.pair("What colour is the star?", "red [CITE:<v_4>]", "blue [CITE:<v_4>]", 0)
    b = policy.collate([c, r], images)
    with torch.no_grad():
        want = plain(b) + policy.sequence_logprobs(b)
        assert torch.allclose(prior(b), want, atol=1e-5)
    assert plain.logprob_weight is None and float(prior.logprob_weight.detach()) == 1.0
    opt = torch.optim.Adam([prior.logprob_weight], lr=1e-2)
    loss = reward_loss(prior(policy.collate([c], images)), prior(policy.collate([r], images)))
    loss.backward()
    opt.step()
    assert float(prior.logprob_weight.detach()) != 1.0
