"""PPO for language models: value head, KL-shaped rewards, GAE, clipped objective, adaptive KL (Chapter 6 §6.3).

The recipe of Ziegler et al. (2019) and Stiennon et al. (2020): the reward model scores a whole
answer; each generated token pays ``β · KL`` to the reference model; GAE turns per-token rewards
into advantages; the policy follows the clipped surrogate of Schulman et al. (2017); ``β`` adapts
so that the measured KL tracks a target. The group-relative variant (Shao et al., 2024, GRPO)
drops the value head and compares several answers to the same question with each other.
All functions take (B, T) tensors over *generated* tokens with a 0/1 ``mask`` for padding.
"""
from __future__ import annotations

import torch
from torch import nn

from .losses import _check_batch as _check


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is set (scalar)."""
    m = mask.to(x.dtype)
    n = m.sum()
    if float(n) == 0:
        raise ValueError("masked_mean: the mask selects nothing")
    return (x * m).sum() / n


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(B, T) -> zero-mean, unit-variance over masked positions (advantage normalisation)."""
    mu = masked_mean(x, mask)
    var = masked_mean((x - mu) ** 2, mask)
    return (x - mu) * torch.rsqrt(var + eps) * mask


class ValueHead(nn.Module):
    """(B, T, D) hidden states -> (B, T) value estimates: one linear layer on the LM's last hidden state. §6.3."""

    def __init__(self, hidden: int):
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.proj = nn.Linear(hidden, 1)
        nn.init.zeros_(self.proj.weight)  # start by predicting 0: no value before any return was seen
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden.float()).squeeze(-1)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """(B, T) log-probs of the sampled tokens under policy and reference -> (B, T) KL estimate. §6.3.

    ``k1`` = log π − log π_ref (unbiased, can be negative); ``k3`` = (r − 1) − log r with
    r = π_ref/π (unbiased, never negative; Schulman 2020); ``mse`` = ½(log π − log π_ref)²; ``abs``.
    """
    _check("kl_penalty", logp, ref_logp)
    d = logp.float() - ref_logp.float()
    if kind == "k1":
        return d
    if kind == "abs":
        return d.abs()
    if kind == "mse":
        return 0.5 * d ** 2
    if kind == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"kind must be one of 'k1', 'k3', 'mse', 'abs', got {kind!r}")


def shaped_rewards(score: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                   kl_coef: float, kind: str = "k1") -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) sequence scores + (B, T) log-probs -> ``(rewards, kl)`` (B, T): −β·KL per token, score on the last. §6.3."""
    _check("shaped_rewards", logp, ref_logp, mask)
    if score.shape != logp.shape[:1]:
        raise ValueError(f"score must be (B,) = {tuple(logp.shape[:1])}, got {tuple(score.shape)}")
    m = mask.bool()
    if not bool(m.any(1).all()):
        raise ValueError("shaped_rewards: every sequence needs at least one generated token")
    kl = kl_penalty(logp, ref_logp, kind) * m
    rewards = -kl_coef * kl
    last = m.long().cumsum(1).argmax(1)  # index of the last generated token of each row
    rewards[torch.arange(len(score)), last] += score.float()
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) per-token rewards and values -> ``(advantages, returns)`` (B, T). §6.3, Schulman et al. (2016).

    ``A_t = δ_t + γλ A_{t+1}``, ``δ_t = r_t + γ V_{t+1} − V_t``, with ``V`` and ``A`` zero after the
    last generated token (the episode ends there). Returns are ``A + V`` (the value target).
    """
    _check("gae", rewards, values, mask)
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}")
    m = mask.to(torch.float32)
    r, v = rewards.float() * m, values.float().detach() * m
    B, T = r.shape
    adv = torch.zeros_like(r)
    next_a = torch.zeros(B)
    next_v = torch.zeros(B)
    for t in reversed(range(T)):
        delta = r[:, t] + gamma * next_v - v[:, t]
        a = (delta + gamma * lam * next_a) * m[:, t]
        adv[:, t] = a
        # a padded position passes nothing back: the episode already ended before it
        next_a = torch.where(m[:, t] > 0, a, torch.zeros_like(a))
        next_v = torch.where(m[:, t] > 0, v[:, t], torch.zeros_like(a))
    return adv, (adv + v) * m


def ppo_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    clip: float = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
    """(B, T) -> clipped surrogate ``E[max(−A·ρ, −A·clip(ρ, 1±ε))]`` and stats. §6.3, Schulman et al. (2017)."""
    _check("ppo_policy_loss", logp, old_logp, advantages, mask)
    if clip <= 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    ratio = torch.exp(logp.float() - old_logp.float().detach())
    a = advantages.detach()
    pg = torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip, 1 + clip))
    loss = masked_mean(pg, mask)
    with torch.no_grad():
        clipfrac = masked_mean(((ratio - 1).abs() > clip).float(), mask)
        approx_kl = masked_mean(0.5 * (logp - old_logp) ** 2, mask)
    return loss, {"clipfrac": float(clipfrac), "approx_kl": float(approx_kl)}


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   clip: float = 0.2) -> torch.Tensor:
    """(B, T) -> clipped value loss ``½ E[max((V − R)², (V_clip − R)²)]``. §6.3."""
    _check("ppo_value_loss", values, old_values, returns, mask)
    v_clip = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (v_clip - returns) ** 2), mask)


class AdaptiveKLController:
    """β that tracks a target KL: ``β ← β (1 + clip(KL/target − 1, ±0.2) · n/horizon)``. Ziegler et al. (2019) §2.2."""

    def __init__(self, init_kl_coef: float = 0.1, target: float = 6.0, horizon: int = 10_000):
        if init_kl_coef < 0 or target <= 0 or horizon < 1:
            raise ValueError(f"need init_kl_coef >= 0, target > 0, horizon >= 1; got {init_kl_coef}, {target}, {horizon}")
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Adjust β after ``n_steps`` samples whose mean KL was ``current_kl``; returns the new β."""
        err = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + err * n_steps / self.horizon
        return self.value


class FixedKLController:
    """A constant β (the ablation for :class:`AdaptiveKLController`)."""

    def __init__(self, kl_coef: float = 0.1):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


def citation_precision_of(cited, truth) -> float:
    """Cited patches vs supporting patches -> precision; citing nothing scores 1 only when nothing needed citing. §6.3.

    (Chapter 5's audit metric gives 1 to an empty citation; as a *reward* that would pay the guide
    to stop citing, so here an empty citation of a provable answer scores 0.)
    """
    c, t = set(int(k) for k in cited), set(int(k) for k in truth)
    if not c:
        return 1.0 if not t else 0.0
    return len(c & t) / len(c)


def shaped_score(correct: bool, cited, truth, precision_weight: float = 0.5) -> float:
    """One answer's sequence reward: 1 if the answer is right, plus ``w ×`` citation precision. §6.3."""
    if precision_weight < 0:
        raise ValueError(f"precision_weight must be >= 0, got {precision_weight}")
    return float(bool(correct)) + precision_weight * citation_precision_of(cited, truth)


def group_relative_advantages(rewards: torch.Tensor, eps: float = 1e-4, scale: bool = True) -> torch.Tensor:
    """(N, G) rewards of G answers to each of N prompts -> (N, G) advantages ``(r − mean_g) / std_g``. §6.3, GRPO."""
    if rewards.ndim != 2 or rewards.numel() == 0:
        raise ValueError(f"rewards must be a non-empty (N, G) tensor, got shape {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise ValueError("group-relative advantages need G >= 2 answers per prompt")
    r = rewards.float()
    a = r - r.mean(1, keepdim=True)
    return a / (r.std(1, keepdim=True) + eps) if scale else a
