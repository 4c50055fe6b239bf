"""Stage 2's reward model: a scalar head on the VLM's last hidden state (Chapter 6 §6.3)."""
from __future__ import annotations

import torch
from torch import nn

from .losses import IGNORE
from .policy import VLMPolicy


def last_labelled(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) labels -> (B,) index of each row's last learned token (the answer's ``<|end|>``)."""
    keep = labels != IGNORE
    if not bool(keep.any(1).all()):
        raise ValueError("every sequence needs at least one labelled token to be scored")
    return keep.long().cumsum(1).argmax(1)


class RewardModel(nn.Module):
    """A VLM plus ``nn.Linear(D, 1)``: batch -> (B,) scores read at the end of each answer. §6.3.

    Trained with :func:`vlmbook.train.losses.reward_loss` on (chosen, rejected) pairs. With
    ``logprob_prior`` the score also adds ``a · log π(y | x)``, the body's own summed log-probability
    of the answer, with a learned weight ``a`` (starting at 1): the reward starts from the guide's
    judgement of the answer, and the head learns what that judgement misses.
    """

    def __init__(self, policy: VLMPolicy, logprob_prior: bool = False):
        super().__init__()
        self.policy = policy
        self.body = policy.module  # registered, so .parameters() covers the VLM too
        self.head = nn.Linear(policy.hidden_size, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (policy.hidden_size + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)
        self.logprob_weight = nn.Parameter(torch.ones(())) if logprob_prior else None

    def forward(self, batch: dict) -> torch.Tensor:
        h = self.policy.hidden(batch)
        idx = last_labelled(batch["labels"]).to(h.device)
        score = self.head(h[torch.arange(h.shape[0], device=h.device), idx].float()).squeeze(-1)
        if self.logprob_weight is not None:
            score = score + self.logprob_weight * self.policy.sequence_logprobs(batch).float()
        return score
