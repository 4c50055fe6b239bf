"""Chapter 6: our losses agree with the field's libraries (TRL) and with independent references.

TRL's trainers compute their losses inside ``_compute_loss``/``compute_loss`` methods; we call those
methods themselves — TRL's own code, not a copy — on a stand-in trainer and model that hand them
the same log-probabilities (or rewards) our functions receive.
"""
import collections
import types

import pytest
import torch
import torch.nn.functional as F

from vlmbook.train import IGNORE, dpo_loss, gae, kl_penalty, reward_loss, sequence_logprobs, token_logprobs

trl = pytest.importorskip("trl")


class _Accel:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


def _trainer(**kw):
    base = dict(accelerator=_Accel(), _metrics=collections.defaultdict(lambda: collections.defaultdict(list)),
                _total_train_tokens=0, _tp_size=1, model=types.SimpleNamespace(training=True))
    return types.SimpleNamespace(**{**base, **kw})


def _pairs(B=3, T=6, V=11, seed=0):
    """Logits and label spans for B chosen then B rejected sequences (TRL's [chosen; rejected] batch)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(V, (2 * B, T), generator=g)
    completion = torch.zeros(2 * B, T, dtype=torch.long)
    for r in range(2 * B):
        completion[r, 2 + r % 2:T - (r % 3 == 0)] = 1  # prompts of 2–3 tokens, some right padding
    logits = torch.randn(2 * B, T, V, generator=g)
    labels = ids.masked_fill(completion == 0, IGNORE)
    return ids, completion, logits, labels


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_loss_equals_trl(beta):
    """TRL 1.x's ``sigmoid`` loss has no label smoothing (older TRL applied cDPO's ε there); our ε > 0
    is checked against its formula in test_train_losses."""
    from trl import DPOTrainer

    ids, completion, logits, labels = _pairs()
    per_token = token_logprobs(logits[:, :-1], labels[:, 1:])  # (2B, T-1), 0 off the completion
    g = torch.Generator().manual_seed(1)
    ref = -5 * torch.rand(ids.shape[0], generator=g)
    B = ids.shape[0] // 2

    def model(**kw):
        return types.SimpleNamespace(log_probs=per_token, entropy=torch.zeros_like(per_token),
                                     mean_logits=torch.zeros_like(per_token),
                                     is_top1=torch.zeros_like(per_token, dtype=torch.bool))

    t = _trainer(beta=beta, label_smoothing=0.0, loss_types=["sigmoid"], loss_weights=[1.0],
                 f_divergence_type="reverse_kl", ld_alpha=None, aux_loss_enabled=False, use_weighting=False,
                 precompute_ref_logps=True, ref_model=None, args=types.SimpleNamespace())
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": completion,
              "ref_chosen_logps": ref[:B], "ref_rejected_logps": ref[B:]}
    theirs = DPOTrainer._compute_loss(t, model, inputs, False)
    lp = sequence_logprobs(logits[:, :-1], labels[:, 1:])
    ours = dpo_loss(lp[:B], lp[B:], ref[:B], ref[B:], beta=beta)
    assert torch.allclose(ours, theirs, atol=1e-6), (float(ours), float(theirs))
    assert t._metrics["train"]["rewards/accuracies"]  # TRL really ran its loss path


@pytest.mark.parametrize("with_margin", [False, True])
def test_reward_loss_equals_trl(with_margin):
    from trl import RewardTrainer

    g = torch.Generator().manual_seed(2)
    scores = torch.randn(8, 1, generator=g)
    margin = torch.rand(4, generator=g)

    def model(**kw):
        return types.SimpleNamespace(logits=scores)

    t = _trainer(args=types.SimpleNamespace(center_rewards_coefficient=None))
    inputs = {"input_ids": torch.zeros(8, 3, dtype=torch.long), "attention_mask": torch.ones(8, 3, dtype=torch.long)}
    if with_margin:
        inputs["margin"] = margin
    theirs = RewardTrainer.compute_loss(t, model, inputs)
    ours = reward_loss(scores[:4, 0], scores[4:, 0], margin if with_margin else None)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_gae_equals_the_classic_backward_recursion_and_the_discount_matrix():
    """Two independent references on a small case: the PPO-era ``lastgaelam`` loop and a matrix form."""
    g = torch.Generator().manual_seed(3)
    T, gamma, lam = 6, 0.97, 0.9
    r, v = torch.randn(1, T, generator=g), torch.randn(1, T, generator=g)
    adv, ret = gae(r, v, torch.ones(1, T), gamma, lam)
    # (1) the loop of OpenAI baselines / TRL's former PPOTrainer
    last, ref = 0.0, [0.0] * T
    for t in reversed(range(T)):
        nv = float(v[0, t + 1]) if t < T - 1 else 0.0
        delta = float(r[0, t]) + gamma * nv - float(v[0, t])
        last = delta + gamma * lam * last
        ref[t] = last
    assert torch.allclose(adv[0], torch.tensor(ref), atol=1e-6)
    # (2) A = U δ with U[t, s] = (γλ)^(s−t) for s ≥ t
    vn = torch.cat([v[0, 1:], torch.zeros(1)])
    delta = r[0] + gamma * vn - v[0]
    idx = torch.arange(T)
    U = torch.where(idx[None] >= idx[:, None], (gamma * lam) ** (idx[None] - idx[:, None]).float(), torch.zeros(T, T))
    assert torch.allclose(adv[0], U @ delta, atol=1e-6)
    assert torch.allclose(ret, adv + v)


def test_kl_penalty_equals_its_definitions_on_a_small_case():
    """k1 and k3 against the published estimators (Schulman, 'Approximating KL divergence', 2020; TRL's GRPO k3)."""
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.125]]))
    ref = torch.log(torch.tensor([[0.25, 0.25, 0.5]]))
    k1 = kl_penalty(logp, ref, "k1")
    assert torch.allclose(k1, torch.tensor([[0.693147, 0.0, -1.386294]]), atol=1e-6)
    k3 = kl_penalty(logp, ref, "k3")
    assert torch.allclose(k3, torch.exp(ref - logp) - (ref - logp) - 1, atol=1e-7)  # TRL GRPOTrainer's per_token_kl
    assert torch.allclose(k3, torch.tensor([[0.5 - 1 + 0.693147, 0.0, 4 - 1 - 1.386294]]), atol=1e-6)
    # exact KL of two categorical distributions = E_p[k1] = E_p[k3]
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.5, 0.3])
    exact = float((p * (p / q).log()).sum())
    lp, lq = p.log()[None], q.log()[None]
    assert abs(float((p * kl_penalty(lp, lq, "k1")[0]).sum()) - exact) < 1e-6
    assert abs(float((p * kl_penalty(lp, lq, "k3")[0]).sum()) - exact) < 1e-6
    assert abs(exact - float(F.kl_div(q.log(), p, reduction="sum"))) < 1e-6
