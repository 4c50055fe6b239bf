"""Chapter 6: losses and algorithms on plain tensors (reward, DPO, PPO pieces, GRPO, voting, distillation, int8)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlmbook.train import (IGNORE, AdaptiveKLController, FixedKLController, Int8Linear, ValueHead,
                           citation_precision_of, dequantize, distill_loss, dpo_loss, dpo_rewards, gae,
                           group_relative_advantages, hidden_mse, kl_penalty, linear_bytes, majority_vote, model_bytes,
                           normalise_answer, pairwise_accuracy, ppo_policy_loss, ppo_value_loss, quantize_linear_layers,
                           quantize_per_channel, reward_loss, self_consistency, sequence_logprobs, sft_loss,
                           shaped_rewards, shaped_score, token_logprobs, whiten)


def _logits(B=2, T=5, V=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, V, generator=g), torch.randint(V, (B, T), generator=g)


# -- sequence log-probs --------------------------------------------------------------------
def test_token_and_sequence_logprobs_match_cross_entropy():
    logits, labels = _logits()
    labels[0, :2] = IGNORE
    lp = token_logprobs(logits, labels)
    assert lp.shape == (2, 5) and lp.dtype == torch.float32
    assert torch.all(lp[0, :2] == 0)
    ce = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), reduction="none", ignore_index=IGNORE)
    assert torch.allclose(sequence_logprobs(logits, labels), -ce.view(2, 5).sum(1), atol=1e-6)
    assert torch.allclose(sequence_logprobs(logits, labels, average=True)[0], -ce.view(2, 5)[0, 2:].mean(), atol=1e-6)
    assert torch.allclose(sft_loss(logits, labels), F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1),
                                                                   ignore_index=IGNORE), atol=1e-6)
    assert round(float(sequence_logprobs(logits, labels)[1]), 4) == round(float(-ce.view(2, 5)[1].sum()), 4)


def test_logprob_inputs_checked():
    logits, labels = _logits()
    with pytest.raises(ValueError, match="labels"):
        token_logprobs(logits, labels[:, :3])
    with pytest.raises(ValueError, match="empty"):
        token_logprobs(logits[:0], labels[:0])
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        token_logprobs(logits, labels + 7)
    with pytest.raises(ValueError, match="no labelled"):
        sft_loss(logits, torch.full_like(labels, IGNORE))


# -- reward model and DPO ---------------------------------------------------------------------
def test_reward_loss_formula_gradient_and_accuracy():
    rc, rr = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0])
    want = -(math.log(1 / (1 + math.exp(-2))) + math.log(0.5) + math.log(1 / (1 + math.exp(2)))) / 3
    assert abs(float(reward_loss(rc, rr)) - want) < 1e-6
    assert abs(float(reward_loss(rc, rr, margin=torch.tensor([2.0, 0.0, -2.0]))) - math.log(2)) < 1e-6
    rc.requires_grad_(True)
    reward_loss(rc, rr).backward()
    assert torch.all(rc.grad < 0)  # raising the chosen reward always lowers the loss
    assert pairwise_accuracy(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])) == 0.5
    # invariant to a shift of all rewards: only differences matter
    assert torch.allclose(reward_loss(rc + 5, rr + 5), reward_loss(rc, rr))


def test_dpo_loss_formula_and_properties():
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-3.5, -3.0])
    beta = 0.5
    z = beta * ((pc - rc) - (pr - rr))
    assert torch.allclose(dpo_loss(pc, pr, rc, rr, beta), -F.logsigmoid(z).mean())
    # by hand: z = (0.5, -1.0); (log(1 + e^-0.5) + log(1 + e^1)) / 2 = 0.893669
    assert abs(float(dpo_loss(pc, pr, rc, rr, beta)) - 0.893669) < 1e-5
    # policy == reference: loss log 2 whatever the data
    assert abs(float(dpo_loss(pc, pr, pc, pr, 0.1)) - math.log(2)) < 1e-6
    # conservative DPO with eps mixes the flipped label
    eps = 0.1
    want = (-(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)).mean()
    assert torch.allclose(dpo_loss(pc, pr, rc, rr, beta, eps), want)
    assert torch.allclose(dpo_rewards(pc, rc, beta), beta * (pc - rc))
    for bad in (dict(beta=0.0), dict(label_smoothing=0.5)):
        with pytest.raises(ValueError):
            dpo_loss(pc, pr, rc, rr, **bad)


def test_preference_losses_reject_empty_and_mismatched_batches():
    e = torch.zeros(0)
    with pytest.raises(ValueError, match="empty"):
        reward_loss(e, e)
    with pytest.raises(ValueError, match="empty"):
        dpo_loss(e, e, e, e)
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2))


# -- PPO pieces -----------------------------------------------------------------------------
def _gae_reference(r, v, gamma, lam):
    """Textbook GAE for one unpadded episode, written as the explicit sum Σ (γλ)^l δ_{t+l}."""
    T = len(r)
    vv = list(v) + [0.0]
    deltas = [r[t] + gamma * vv[t + 1] - vv[t] for t in range(T)]
    return [sum((gamma * lam) ** l * deltas[t + l] for l in range(T - t)) for t in range(T)]


def test_gae_equals_explicit_sum_and_respects_padding():
    r = torch.tensor([[0.1, -0.2, 1.0, 0.0], [0.5, 0.3, 0.0, 0.0]])
    v = torch.tensor([[0.2, 0.1, 0.4, 9.0], [0.0, 0.6, 9.0, 9.0]])
    m = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    adv, ret = gae(r, v, m, gamma=0.9, lam=0.8)
    assert adv.shape == (2, 4)
    assert torch.allclose(adv[0, :3], torch.tensor(_gae_reference([0.1, -0.2, 1.0], [0.2, 0.1, 0.4], 0.9, 0.8)))
    assert torch.allclose(adv[1, :2], torch.tensor(_gae_reference([0.5, 0.3], [0.0, 0.6], 0.9, 0.8)))
    assert torch.all(adv[m == 0] == 0) and torch.all(ret[m == 0] == 0)
    assert torch.allclose(ret, (adv + v) * m)
    # lam = 1, gamma = 1: advantage = return-to-go minus value (Monte Carlo)
    a1, _ = gae(r, v, m, 1.0, 1.0)
    assert torch.allclose(a1[0, :3], torch.tensor([0.9, 0.8, 1.0]) - v[0, :3])
    with pytest.raises(ValueError):
        gae(r, v, m, gamma=1.5)


def test_kl_penalty_estimators():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(50, generator=g).softmax(0)
    q = torch.randn(50, generator=g).softmax(0)
    exact = float((p * (p.log() - q.log())).sum())
    x = torch.multinomial(p, 200_000, replacement=True, generator=g)
    lp, lq = p.log()[x], q.log()[x]
    for kind in ("k1", "k3"):  # both unbiased: the Monte Carlo mean approaches KL(p||q)
        assert abs(float(kl_penalty(lp, lq, kind).mean()) - exact) < 0.02
    assert torch.all(kl_penalty(lp, lq, "k3") >= 0)
    assert torch.allclose(kl_penalty(lp, lq, "mse"), 0.5 * (lp - lq) ** 2)
    assert torch.allclose(kl_penalty(lp, lq, "abs"), (lp - lq).abs())
    with pytest.raises(ValueError, match="kind"):
        kl_penalty(lp, lq, "k2")


def test_shaped_rewards_put_score_on_last_token():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -0.2, -9.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0], [-0.1, -0.7, -1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rew, kl = shaped_rewards(torch.tensor([1.0, 2.0]), logp, ref, mask, kl_coef=0.2)
    want = torch.tensor([[-0.1, 0.0, -0.1 + 1.0], [0.0, -0.1 + 2.0, 0.0]])
    assert torch.allclose(rew, want, atol=1e-6)
    assert kl[1, 2] == 0
    with pytest.raises(ValueError, match="at least one"):
        shaped_rewards(torch.tensor([1.0]), logp[:1], ref[:1], torch.zeros(1, 3), 0.2)


def test_ppo_losses_clip_and_gradients():
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.8, 0.2]])).requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0]])
    m = torch.ones(1, 2)
    loss, stats = ppo_policy_loss(new, old, adv, m, clip=0.2)
    # ratio 1.6 is clipped to 1.2 (positive advantage), ratio 0.4 is not clipped (max picks -0.4)
    assert abs(float(loss.detach()) - (-(1.2 + 0.4) / 2)) < 1e-6
    assert stats["clipfrac"] == 1.0
    loss.backward()
    assert new.grad[0, 0] == 0 and new.grad[0, 1] != 0  # the clipped token gets no gradient
    v = torch.tensor([[1.0, 0.0]])
    assert abs(float(ppo_value_loss(v, torch.zeros(1, 2), torch.tensor([[0.0, 0.0]]), m, clip=0.2)) - 0.25) < 1e-6
    w = whiten(torch.tensor([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[1, 1, 1, 0]]))
    assert abs(float(w[0, :3].mean())) < 1e-6 and w[0, 3] == 0


def test_value_head_shapes_and_start():
    h = ValueHead(8)
    out = h(torch.randn(2, 3, 8))
    assert out.shape == (2, 3) and torch.all(out == 0)


def test_adaptive_kl_controller_follows_ziegler():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    assert abs(c.update(12.0, 1000) - 0.1 * (1 + 0.2 * 0.1)) < 1e-12  # error clipped at +0.2
    c = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    assert abs(c.update(4.5, 1000) - 0.1 * (1 - 0.25 * 0.1 * 0 - 0.2 * 0.1)) < 1e-12  # -0.25 clipped to -0.2
    c = AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert abs(c.update(6.6, 10) - 0.1 * (1 + 0.1 * 0.1)) < 1e-12
    # a KL above target keeps raising beta, below keeps lowering it
    up, down = AdaptiveKLController(0.1, 1.0, 10), AdaptiveKLController(0.1, 1.0, 10)
    for _ in range(5):
        up.update(2.0, 1), down.update(0.5, 1)
    assert up.value > 0.1 > down.value
    assert FixedKLController(0.3).update(100.0, 10) == 0.3
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=0)


def test_citation_shaped_score():
    assert citation_precision_of([3, 4], [4, 5]) == 0.5
    assert citation_precision_of([], []) == 1.0
    assert citation_precision_of([], [2]) == 0.0  # citing nothing is not free
    assert shaped_score(True, [4], [4, 5], 0.5) == 1.5
    assert shaped_score(False, [1], [4], 0.5) == 0.0


def test_group_relative_advantages():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    a = group_relative_advantages(r)
    assert a.shape == (2, 4)
    assert torch.allclose(a.sum(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(a[0], torch.tensor([1.0, -1.0, -1.0, 1.0]) / (r[0].std() + 1e-4) * 0.5)
    assert torch.all(a[1] == 0)  # a group that agrees teaches nothing
    # invariant to shifting a group's rewards
    assert torch.allclose(group_relative_advantages(r + 3), a)
    with pytest.raises(ValueError, match="G >= 2"):
        group_relative_advantages(torch.ones(3, 1))


# -- self-consistency ------------------------------------------------------------------------
def test_majority_vote_and_weighting():
    votes = ["red [CITE:<p_3>]", "blue", "Red", "blue", " red "]
    ans, share = majority_vote(votes)
    assert ans == "red [CITE:<p_3>]" and share == 0.6
    ans, share = majority_vote(votes, weights=[0.1, 2.0, 0.1, 2.0, 0.1])
    assert ans == "blue" and abs(share - 4.0 / 4.3) < 1e-9
    assert majority_vote(["a", "b"])[0] == "a"  # ties go to the first seen
    assert normalise_answer("[THOUGHT] the red circle [ANSWER] Yes [CITE:<p_1>]") == "yes"
    rng = iter(["no", "yes", "yes"])
    assert self_consistency(lambda i: next(rng), 3)[0] == "yes"
    for bad in ([], ):
        with pytest.raises(ValueError):
            majority_vote(bad)
    with pytest.raises(ValueError, match="weights"):
        majority_vote(["a"], [1.0, 2.0])
    with pytest.raises(ValueError):
        self_consistency(lambda i: "a", 0)


def test_self_consistency_raises_accuracy_of_a_noisy_sampler():
    """A sampler right 60 % of the time, wrong answers spread over 4: voting over 9 beats one draw."""
    g = torch.Generator().manual_seed(0)

    def sampler(i):
        u = float(torch.rand(1, generator=g))
        return "right" if u < 0.6 else f"wrong{int(u * 10) % 4}"

    one = sum(sampler(0) == "right" for _ in range(300)) / 300
    nine = sum(self_consistency(sampler, 9)[0] == "right" for _ in range(300)) / 300
    assert nine > one + 0.2


# -- distillation ------------------------------------------------------------------------------
def test_distill_loss_temperature_scaling_and_gradient():
    s, _ = _logits(seed=1)
    t, _ = _logits(seed=2)
    T = 3.0
    want = F.kl_div((s / T).log_softmax(-1).reshape(-1, 7), (t / T).log_softmax(-1).reshape(-1, 7),
                    log_target=True, reduction="batchmean") * T * T
    assert torch.allclose(distill_loss(s, t, T), want, atol=1e-6)
    assert float(distill_loss(t, t, T)) < 1e-7
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 1] = True
    assert torch.allclose(distill_loss(s, t, T, mask), distill_loss(s[0, 1], t[0, 1], T))
    # the T² factor keeps the gradient's size roughly constant as T grows (Hinton et al. §2)
    grads = []
    for T in (4.0, 8.0):
        x = (s * 0.1).clone().requires_grad_(True)
        distill_loss(x, t * 0.1, T).backward()
        grads.append(float(x.grad.norm()))
    assert 0.8 < grads[0] / grads[1] < 1.25
    with pytest.raises(ValueError, match="vocabulary"):
        distill_loss(s, t[..., :6])
    proj = nn.Linear(4, 6)
    assert hidden_mse(torch.randn(2, 3, 4), torch.randn(2, 3, 6), proj).ndim == 0
    with pytest.raises(ValueError, match="proj"):
        hidden_mse(torch.randn(2, 3, 4), torch.randn(2, 3, 6))


# -- int8 quantisation ----------------------------------------------------------------------
def test_quantize_per_channel_round_trip_and_golden():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 10, generator=g)
    w[2] *= 100  # one outlier row: per-channel scales keep the other rows precise
    w[4] = 0
    q, s = quantize_per_channel(w)
    assert q.dtype == torch.int8 and s.shape == (6,) and int(q.abs().max()) == 127
    err = (dequantize(q, s) - w).abs()
    assert torch.all(err <= s[:, None] / 2 + 1e-6)  # at most half a step per row
    assert torch.all(dequantize(q, s)[4] == 0)
    assert float(err[0].max()) < 0.02
    with pytest.raises(ValueError):
        quantize_per_channel(torch.randn(3))


def test_int8_model_size_and_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64))
    x = torch.randn(5, 64)
    qm, names = quantize_linear_layers(model)
    assert names == ["0", "2"] and isinstance(qm[0], Int8Linear) and isinstance(model[0], nn.Linear)
    assert torch.allclose(qm(x), model(x), atol=2e-2)
    ratio = linear_bytes(model) / linear_bytes(qm)
    assert ratio > 3.5, ratio
    assert model_bytes(qm) < model_bytes(model)
    qm2, names2 = quantize_linear_layers(model, skip=["2"])
    assert names2 == ["0"]
    with pytest.raises(ValueError, match="do not exist"):
        quantize_linear_layers(model, skip=["fc9"])


def test_int8_skips_a_tied_head():
    emb = nn.Embedding(20, 8)
    head = nn.Linear(8, 20, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head, "mlp": nn.Linear(8, 8)})
    _, names = quantize_linear_layers(model)
    assert names == ["mlp"]


def test_int8_embeddings_share_one_table_with_a_tied_head():
    """quantize_embeddings: a Llama's embedding rows and its tied head read one int8 table."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlmbook.train.quant import Int8Embedding, quantize_embeddings

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, tie_word_embeddings=True)
    lm = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 96, (2, 7))
    w = lm.get_input_embeddings().weight.detach().clone()
    with torch.no_grad():
        ref = lm(ids).logits
    before = model_bytes(lm)
    qlm, names = quantize_linear_layers(lm)
    qlm, emb_names = quantize_embeddings(qlm)
    assert emb_names == ["input_embeddings", "output_embeddings"]
    emb, head = qlm.get_input_embeddings(), qlm.get_output_embeddings()
    assert isinstance(emb, Int8Embedding) and isinstance(head, Int8Linear)
    assert head.weight_int8 is emb.weight_int8 and head.scale is emb.scale
    # each looked-up row is within half a quantisation step of the float row
    rows = emb(ids)
    assert rows.shape == (2, 7, 32) and rows.dtype == torch.float32
    assert torch.all((rows - w[ids]).abs() <= emb.scale[ids, None] / 2 + 1e-7)
    assert emb.weight.shape == (96, 32) and emb.weight.dtype == torch.float32
    with torch.no_grad():
        out = qlm(ids).logits
    assert float((out - ref).abs().max()) < 0.05 * float(ref.abs().max())
    assert before / model_bytes(qlm) > 3.5
    untied = nn.Module()
    untied.get_input_embeddings = lambda: nn.Linear(2, 2)
    with pytest.raises(ValueError, match="nn.Embedding"):
        quantize_embeddings(untied)
