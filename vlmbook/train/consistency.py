"""Self-consistency: sample K answers, vote (Chapter 6 §6.4, Wang et al., 2023).

Answers are compared after ``normalise`` (by default: the text before the first citation,
lower-cased, whitespace collapsed), so that ``'[CITE:<p_3>] red'`` and ``'Red'`` vote together.
With ``weights`` (e.g. a reward model's scores) each vote counts its weight.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from ..fusion.grounding import parse_citations

ANSWER_MARK = "[ANSWER]"


def normalise_answer(text: str) -> str:
    """The comparable part of an answer: after ``[ANSWER]`` if present, citations removed, lower case."""
    if not isinstance(text, str):
        raise ValueError(f"an answer must be a string, got {type(text).__name__}")
    if ANSWER_MARK in text:
        text = text.split(ANSWER_MARK, 1)[1]
    return " ".join(parse_citations(text)[0].lower().split())


def majority_vote(answers: Sequence[str], weights: Sequence[float] | None = None,
                  normalise: Callable[[str], str] = normalise_answer) -> tuple[str, float]:
    """K answers (and optional weights) -> ``(winning answer, its share of the vote)``. §6.4.

    Ties go to the answer seen first, so the vote is deterministic. The winner is returned in its
    first original form (citations kept).
    """
    if len(answers) == 0:
        raise ValueError("majority_vote needs at least one answer")
    if weights is None:
        weights = [1.0] * len(answers)
    if len(weights) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError("weights must be finite and >= 0")
    tally: dict[str, float] = {}
    first: dict[str, str] = {}
    for a, w in zip(answers, weights):
        key = normalise(a)
        tally[key] = tally.get(key, 0.0) + float(w)
        first.setdefault(key, a)
    best = max(tally, key=lambda k: (tally[k], -list(first).index(k)))
    total = sum(tally.values())
    return first[best], (tally[best] / total if total > 0 else 1.0 / len(tally))


def self_consistency(sample: Callable[[int], str], k: int, score: Callable[[str], float] | None = None,
                     normalise: Callable[[str], str] = normalise_answer) -> tuple[str, float]:
    """Draw ``k`` answers with ``sample(i)`` and vote, optionally weighted by ``score(answer)`` >= 0. §6.4."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    answers = [sample(i) for i in range(k)]
    weights = [score(a) for a in answers] if score is not None else None
    return majority_vote(answers, weights, normalise)
