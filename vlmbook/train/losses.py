"""Sequence log-probabilities and the preference and distillation losses (Chapter 6 §6.3–6.4).

Everything here takes plain tensors — per-token logits, per-sequence log-probabilities,
scalar rewards — so that the losses do not depend on how a model produces them; the one place
that knows the model is :mod:`vlmbook.train.policy`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # the label that takes a position out of the loss (PyTorch's and Hugging Face's convention)


def _check_batch(name: str, *xs: torch.Tensor) -> None:
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) != 1:
        raise ValueError(f"{name}: inputs must share one shape, got {[tuple(x.shape) for x in xs]}")
    if xs[0].numel() == 0:
        raise ValueError(f"{name}: empty batch")


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits and aligned (B, T) labels -> (B, T) log p(label); 0 where label == -100. §6.3.

    ``logits[:, t]`` must already be the prediction for ``labels[:, t]`` (shift before calling).
    """
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"need logits (B, T, V) and labels (B, T), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("token_logprobs: empty batch")
    keep = labels != IGNORE
    safe = labels.masked_fill(~keep, 0)
    if bool((safe < 0).any()) or bool((safe >= logits.shape[-1]).any()):
        raise ValueError(f"labels must lie in [0, {logits.shape[-1]}) or be {IGNORE}")
    lp = torch.gather(logits.float().log_softmax(-1), -1, safe[..., None]).squeeze(-1)
    return lp * keep


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor, average: bool = False) -> torch.Tensor:
    """(B, T, V), (B, T) -> (B,) summed (or per-token averaged) log-probability of each labelled span. §6.3."""
    lp = token_logprobs(logits, labels)
    if not average:
        return lp.sum(-1)
    return lp.sum(-1) / (labels != IGNORE).sum(-1).clamp(min=1)


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, normaliser: float | torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, V), (B, T) -> scalar next-token NLL over labelled positions. §6.2.

    By default the mean over labelled tokens; ``normaliser`` replaces the token count, so that
    data-parallel workers can divide by the *global* count (see :mod:`vlmbook.train.distributed`).
    """
    lp = token_logprobs(logits, labels)
    n = (labels != IGNORE).sum() if normaliser is None else normaliser
    if normaliser is None and int(n) == 0:
        raise ValueError("sft_loss: no labelled tokens in the batch (every label is -100)")
    return -lp.sum() / n


def reward_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    """(B,), (B,) scalar rewards -> Bradley–Terry loss ``-log σ(r_c - r_r - margin)``, mean. §6.3.

    Bradley & Terry (1952); the reward-model loss of Ouyang et al. (2022).
    """
    _check_batch("reward_loss", r_chosen, r_rejected)
    d = r_chosen.float() - r_rejected.float()
    if margin is not None:
        d = d - margin
    return -F.logsigmoid(d).mean()


def pairwise_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """(B,), (B,) -> fraction of pairs whose chosen reward is strictly higher. §6.3."""
    _check_batch("pairwise_accuracy", r_chosen, r_rejected)
    return float((r_chosen > r_rejected).float().mean())


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1, label_smoothing: float = 0.0) -> torch.Tensor:
    """Four (B,) sequence log-probs -> DPO sigmoid loss (mean). §6.3, Rafailov et al. (2023).

    ``-log σ(β[(log π_c - log π_ref,c) - (log π_r - log π_ref,r)])``; ``label_smoothing`` ε mixes
    in the flipped preference (conservative DPO).
    """
    _check_batch("dpo_loss", policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing}")
    z = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return (-(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)).mean()


def dpo_rewards(policy: torch.Tensor, ref: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """(B,), (B,) -> DPO's implicit reward ``β (log π - log π_ref)`` (B,). §6.3."""
    return beta * (policy - ref).detach()


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """(..., V) student and teacher logits -> T² · KL(p_T^teacher ‖ p_T^student), mean over positions. §6.4.

    Hinton, Vinyals & Dean (2015): softened by ``temperature`` T; the T² keeps gradient size
    independent of T. ``mask`` (...) selects the positions that count.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)} (another vocabulary?)")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    s = (student_logits.float() / temperature).log_softmax(-1)
    t = (teacher_logits.float() / temperature).log_softmax(-1)
    kl = (t.exp() * (t - s)).sum(-1)
    if mask is not None:
        if mask.shape != kl.shape:
            raise ValueError(f"mask must have shape {tuple(kl.shape)}, got {tuple(mask.shape)}")
        kl = kl[mask.bool()]
    if kl.numel() == 0:
        raise ValueError("distill_loss: no positions selected")
    return kl.mean() * temperature ** 2


def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
               proj: torch.nn.Module | None = None) -> torch.Tensor:
    """(..., Ds), (..., Dt) hidden states -> MSE after an optional projection Ds -> Dt. §6.4 (FitNets-style)."""
    s = proj(student_hidden) if proj is not None else student_hidden
    if s.shape != teacher_hidden.shape:
        raise ValueError(f"hidden states differ in shape: {tuple(s.shape)} vs {tuple(teacher_hidden.shape)}; "
                         "pass proj to map the student's width to the teacher's")
    return F.mse_loss(s.float(), teacher_hidden.float().detach())
