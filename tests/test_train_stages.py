"""Chapter 6: stage drivers on a small VLM (a few steps each): evaluation, SFT, stage 0, reward, DPO, voting, int8."""
import copy

import pytest
import torch

from vlmbook.fusion import VisionLanguageModel, VLMConfig
from vlmbook.fusion.grounding import format_citation
from vlmbook.train.policy import VLMPolicy
from vlmbook.train.stages import (align_projector, answer_all, evaluate, exhibits, int8_language_model,
                                  kl_to_reference, preference_data, prompt_cache_ttft, reward_accuracy, score_answers,
                                  self_consistency_accuracy, sft_examples, train_dpo, train_reward_model, train_sft)

SMALL = dict(hidden=32, intermediate=64, enc_channels=8, layers=2, corpus_scenes=200, codebook_size=32, image_size=48,
             grid=3, quant_sub=4)


def _policy(seed=0):
    torch.manual_seed(seed)
    return VLMPolicy(VisionLanguageModel(VLMConfig(route="continuous", seed=seed, **SMALL)).eval())


@pytest.fixture(scope="module")
def ex():
    return exhibits("train", 3, 48)


def test_exhibits_and_scoring(ex):
    assert ex.images.shape == (3, 3, 48, 48) and len(ex.scenes) == 3
    assert all(qa.qtype != "plaque" for _, qa in ex.items)
    from vlmbook.data import support_patches

    perfect = [f"{format_citation(support_patches(ex.scenes[i], qa, 3))} {qa.answer}" for i, qa in ex.items]
    s = score_answers(perfect, ex, 3)
    assert s["all"]["accuracy"] == 100.0 and s["all"]["citation_precision"] == 100.0
    bare = score_answers([qa.answer for _, qa in ex.items], ex, 3)
    assert bare["all"]["accuracy"] == 100.0 and bare["all"]["citation_precision"] < 100.0 and bare["all"]["cites"] == 0


def test_sft_examples_with_citation_noise(ex):
    p = _policy()
    clean = sft_examples(p, ex, citation_noise=0.0)
    noisy = sft_examples(p, ex, citation_noise=1.0, seed=1)
    assert len(clean) == len(noisy) == len(ex.items)
    assert sum(a.ids != b.ids for a, b in zip(clean, noisy)) > len(clean) // 3


def test_stage_drivers_run_and_learn(ex):
    p = _policy()
    hist = train_sft(p, sft_examples(p, ex), ex.images, steps=6, batch_size=8)
    assert hist[-1]["loss"] < hist[0]["loss"]
    answers = answer_all(p, ex, max_new_tokens=4)
    assert len(answers) == len(ex.items)
    assert set(evaluate(p, ex, max_new_tokens=4)["all"]) == {"accuracy", "citation_precision", "cites", "n"}
    pairs = preference_data(p, ex)
    assert {k for _, _, k in pairs} == {"wrong_answer", "missing_citation", "wrong_citation"}
    rm, rh = train_reward_model(VLMPolicy(copy.deepcopy(p.module)), pairs, ex.images, steps=6, batch_size=8)
    acc = reward_accuracy(rm, pairs, ex.images)
    assert 0 <= acc["all"] <= 100 and "wrong_answer" in acc
    rm2, _ = train_reward_model(VLMPolicy(copy.deepcopy(p.module)), pairs, ex.images, steps=2, batch_size=4,
                                logprob_prior=True)
    assert rm2.logprob_weight.requires_grad and float(rm2.logprob_weight.detach()) != 1.0
    ref = VLMPolicy(copy.deepcopy(p.module))
    dh = train_dpo(p, ref, pairs, ex.images, steps=4, batch_size=4, beta=0.5)
    assert abs(dh[0]["loss"] - 0.693147) < 1e-3  # first step: policy == reference
    kl = kl_to_reference(p, ref, [c for c, _, _ in pairs[:8]], ex.images)
    assert kl > 0
    sc = self_consistency_accuracy(p, exhibits("train", 1, 48), ks=(1, 3))
    assert set(sc) == {1, 3}


def test_dpo_nll_term_adds_the_chosen_answers_token_nll(ex):
    """At step 0 (policy == reference) DPO's loss is log 2; the RPO term adds the chosen tokens' mean NLL."""
    from vlmbook.train.stages import _pair_batch
    from vlmbook.util import step_generator

    p = _policy()
    pairs = preference_data(p, ex)
    idx = torch.randint(len(pairs), (4,), generator=step_generator(0, 0)).tolist()
    with torch.no_grad():
        tok, mask = p.token_logprobs(_pair_batch(p, pairs, idx, ex.images))
    nll = float(-(tok[:4] * mask[:4]).sum() / mask[:4].sum())
    h = train_dpo(VLMPolicy(copy.deepcopy(p.module)), VLMPolicy(copy.deepcopy(p.module)), pairs, ex.images, steps=1,
                  batch_size=4, beta=0.5, nll_weight=2.0)
    assert h[0]["loss"] == pytest.approx(0.693147 + 2.0 * nll, abs=1e-3)
    with pytest.raises(ValueError, match="nll_weight"):
        train_dpo(p, VLMPolicy(copy.deepcopy(p.module)), pairs, ex.images, steps=1, nll_weight=-1.0)


def test_stage0_trains_only_the_projector(ex):
    p = _policy()
    lm = {k: v.clone() for k, v in p.module.lm.state_dict().items()}
    proj = [x.clone() for x in p.module.projector.parameters()]
    align_projector(p, ex, steps=3, batch_size=4)
    assert all(torch.equal(v, p.module.lm.state_dict()[k]) for k, v in lm.items())
    assert any(not torch.equal(a, b) for a, b in zip(proj, p.module.projector.parameters()))


def test_int8_guide_is_smaller_and_close(ex):
    p = _policy()
    q, sizes = int8_language_model(p)
    assert sizes["quantised_bytes_fp32"] / sizes["quantised_bytes_int8"] > 3.5
    assert sizes["lm_bytes_fp32"] / sizes["lm_bytes_int8"] > 3.5  # embeddings and tied head int8 too
    assert sizes["quantised_embeddings"] == ["input_embeddings", "output_embeddings"]
    assert q.vocab_size == p.vocab_size
    b = p.collate([p.response(qa.question, qa.answer, i) for i, qa in ex.items[:4]], ex.images)
    with torch.no_grad():
        a, _ = p.logits(b)
        c, _ = q.logits(b)
    assert float((a - c).abs().max()) < 0.05 * float(a.abs().max())
    t = prompt_cache_ttft(p, ex.images[0], ex.items[0][1].question, repeats=2)
    assert t["ttft_ms"] > 0 and t["ttft_cached_ms"] > 0 and t["cache"] == "kv-prefix"


def test_question_first_guide_caches_its_image_features(ex):
    torch.manual_seed(0)
    p = VLMPolicy(VisionLanguageModel(VLMConfig(route="continuous", layout="question_first", **SMALL)).eval())
    t = prompt_cache_ttft(p, ex.images[0], ex.items[0][1].question, repeats=2)
    assert t["cache"] == "image-features" and t["ttft_cached_ms"] > 0
    img = ex.images[:2]
    q = torch.tensor([p.encode(ex.items[0][1].question) + [p.module.ids["assistant"]]] * 2)
    with torch.no_grad():
        assert torch.equal(p.module.generate(img, q, max_new_tokens=4),
                           p.module.generate(None, q, max_new_tokens=4, features=p.module.encoder(img)))
    d = VLMPolicy(VisionLanguageModel(VLMConfig(route="discrete", layout="question_first", **SMALL)).eval())
    d.module.quantizer.fit(exhibits("train", 8, 48).images, seed=0)
    assert prompt_cache_ttft(d, ex.images[0], ex.items[0][1].question, repeats=1)["ttft_cached_ms"] is None


def test_ppo_and_grpo_steps_update_the_policy_and_track_kl(ex):
    from vlmbook.train import AdaptiveKLController, ValueHead
    from vlmbook.train.stages import grpo_step, ppo_step

    p = _policy()
    ref = VLMPolicy(copy.deepcopy(p.module))
    vh = ValueHead(p.hidden_size)
    opt = torch.optim.Adam(list(p.module.lm.parameters()) + list(vh.parameters()), lr=1e-3)
    ctl = AdaptiveKLController(0.1, target=1.0, horizon=10)
    items = ex.items[:4]
    before = {k: v.clone() for k, v in p.module.lm.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    s = ppo_step(p, ref, vh, opt, ex, items, ctl, g, epochs=2)
    assert {"score", "kl", "beta", "clipfrac"} <= set(s)
    assert abs(s["kl"]) < 1e-4  # policy == reference when the answers were sampled
    assert s["beta"] != 0.1  # the controller moved (KL far below target lowers beta)
    assert any(not torch.equal(v, p.module.lm.state_dict()[k]) for k, v in before.items())
    assert any(float(x.detach().abs().sum()) > 0 for x in vh.parameters())  # the value head learned something
    s2 = ppo_step(p, ref, vh, opt, ex, items, ctl, g, epochs=1)
    assert s2["kl"] != 0
    opt2 = torch.optim.Adam(p.module.lm.parameters(), lr=1e-3)
    s3 = grpo_step(p, ref, opt2, ex, items[:2], g, group=3)
    assert {"score", "kl", "clipfrac"} <= set(s3)


def test_train_ppo_loop_is_seeded_and_leaves_the_reference_alone(ex):
    from vlmbook.train.stages import train_ppo

    runs = []
    for _ in range(2):
        p = _policy()
        ref = VLMPolicy(copy.deepcopy(p.module))
        ref_state = {k: v.clone() for k, v in ref.module.state_dict().items()}
        log = train_ppo(p, ref, ex, steps=2, batch_items=3, lr=1e-3, seed=5, progress=False)
        assert [r["step"] for r in log] == [0, 1] and {"score", "kl", "beta"} <= set(log[0])
        assert all(torch.equal(v, ref.module.state_dict()[k]) for k, v in ref_state.items())
        assert log[1]["kl"] != 0  # the second iteration samples from the updated policy
        runs.append(log)
    assert runs[0] == runs[1]  # seeded: the same questions, samples and updates
    with pytest.raises(ValueError, match="steps"):
        train_ppo(_policy(), _policy(), ex, steps=0)


def test_kv_cache_compression_measures_every_kind(ex):
    from vlmbook.train.stages import kv_cache_compression

    p = _policy()
    out = kv_cache_compression(p, ex, repeats=1)
    assert set(out) == {"fp32", "int8", "fp8", "prompt_tokens"}
    assert out["fp32"]["ratio"] == 1.0 and out["int8"]["ratio"] > 2.5 and out["fp8"]["ratio"] > 3.5
    assert out["int8"]["fp32_bytes"] == out["fp32"]["stored_bytes"]
    assert all(out[k]["answer_ms"] > 0 and 0 <= out[k]["accuracy"] <= 100 for k in ("fp32", "int8", "fp8"))
    assert p.module.text.cache_factory is None


def test_distillation_student_is_half_size_and_approaches_the_teacher(ex):
    from vlmbook.train.stages import distill, half_size_student

    t = _policy()
    s = half_size_student(t)
    n_t = sum(p.numel() for p in t.module.lm.model.layers.parameters())
    n_s = sum(p.numel() for p in s.module.lm.model.layers.parameters())
    assert n_s * 2 == n_t
    examples = sft_examples(t, ex)
    train_sft(t, examples, ex.images, steps=8, batch_size=8, lrs={"lm": 3e-3, "projector": 3e-3, "encoder": 0.0})
    b = s.collate(examples[:8], ex.images)

    def gap():
        with torch.no_grad():
            a, labels = s.logits(b)
            c, _ = t.logits(b)
        from vlmbook.train import distill_loss

        return float(distill_loss(a, c, 2.0, labels != -100))

    g0 = gap()
    hist = distill(s, t, examples[:8], ex.images, steps=8, batch_size=8, lr=1e-3, alpha=1.0)
    assert gap() < g0 and "kd" in hist[0]


def test_half_size_student_starts_from_the_teacher_one_layer_in_two():
    from vlmbook.train.stages import half_size_student

    cfg = VLMConfig(route="continuous", seed=0, **{**SMALL, "layers": 4}).replace(cell_embed="learned")
    t = VLMPolicy(VisionLanguageModel(cfg).eval())
    with torch.no_grad():
        t.module.cell_embed.normal_()
    s = half_size_student(t, seed=1)
    ts, ss = t.module.state_dict(), s.module.state_dict()
    assert len(s.module.lm.model.layers) == 2
    for i in (0, 1):  # student layer i is teacher layer 2i
        for k, v in s.module.lm.model.layers[i].state_dict().items():
            assert torch.equal(v, t.module.lm.model.layers[2 * i].state_dict()[k])
    for k in ss:
        if not k.startswith("lm.model.layers."):
            assert torch.equal(ss[k], ts[k]), k  # image side, embeddings, norm, head
    fresh = half_size_student(t, seed=1, from_teacher=False)
    fs = fresh.module.state_dict()
    assert all(torch.equal(fs[k], ts[k]) for k in fs if not k.startswith("lm."))  # the image side only
    assert not torch.equal(fs["lm.model.embed_tokens.weight"], ts["lm.model.embed_tokens.weight"])


def test_chapter6_figures():
    from vlmbook.plot import to_png
    from vlmbook.plot.train import self_consistency_figure, stages_figure

    fig = stages_figure({"SFT": {"accuracy": 60.0, "citation_precision": 40.0},
                         "DPO": {"accuracy": 59.0, "citation_precision": 70.0}})
    assert to_png(fig)[:4] == b"\x89PNG"
    assert len(fig.axes[0].patches) == 4
    with pytest.raises(ValueError, match="lacks"):
        stages_figure({"SFT": {"accuracy": 1.0}})
    assert to_png(self_consistency_figure({1: 50.0, 5: 55.0, 9: 56.0}))[:4] == b"\x89PNG"
