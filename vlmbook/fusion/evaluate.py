"""Scoring the guide: exact match by question type, citation precision/recall, baselines (Chapter 5 §5.7–5.8).

:func:`evaluate` decodes greedily, as a visitor would receive the answer, and compares the answer
text (citations removed) with the museum's; citations are scored against the patches that prove
the answer. :func:`teacher_forced_accuracy` is the cheap check used while training: greedy
decoding returns the reference exactly iff the arg-max at every reference position is right.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import torch

from ..data.museum import QUESTION_TYPES, RELATIONAL_TYPES, SINGLE_OBJECT_TYPES
from .data import Batcher, QAData
from .grounding import parse_citations, set_scores


def accuracy_by_type(correct: torch.Tensor, types: list[str]) -> dict[str, float]:
    """Accuracy (%) overall, per question type, and for single-object and relational groups. §5.7."""
    out = {"all": _pct(correct)}
    groups = [(t, (t,)) for t in QUESTION_TYPES] + [("single", SINGLE_OBJECT_TYPES), ("relational", RELATIONAL_TYPES)]
    for name, group in groups:
        sel = torch.tensor([x in group for x in types])
        if sel.any():
            out[name] = _pct(correct[sel])
    return out


def _pct(x: torch.Tensor) -> float:
    return round(100.0 * float(x.float().mean()), 2)


@torch.no_grad()
def teacher_forced_accuracy(vlm, data: QAData, batch_size: int = 256) -> dict[str, float]:
    """Exact match (%) of the whole answer (citation included) by teacher forcing, by type. §5.7."""
    vlm.eval()
    b = Batcher(vlm, data, batch_size)
    correct = torch.zeros(len(data), dtype=torch.bool)
    dev = vlm.device
    for s in range(0, len(data), batch_size):
        idx = list(range(s, min(s + batch_size, len(data))))
        batch = b.collate(idx)
        side = {k: batch[k].to(dev) for k in ("images", "codes", "features") if k in batch}
        logits = vlm(batch["input_ids"].to(dev), positions=batch["targets"].to(dev), **side)
        ok = logits.argmax(-1).cpu() == batch["labels"]
        rows = torch.arange(len(idx))[:, None].expand_as(batch["targets"])[batch["targets"]]
        correct[s:s + len(idx)] = ~torch.zeros(len(idx), dtype=torch.bool).index_put_((rows,), ~ok, accumulate=True)
    return accuracy_by_type(correct, [it[3] for it in data.items])


@torch.no_grad()
def generate_answers(vlm, data: QAData, batch_size: int = 256) -> list[str]:
    """Greedy answer text for every item of ``data`` (questions of equal length decoded together)."""
    vlm.eval()
    b = Batcher(vlm, data, batch_size)
    groups: dict[int, list[int]] = defaultdict(list)
    qids = [vlm.encode_text(q) + [vlm.ids["assistant"]] for _, q, _, _ in data.items]
    for n, q in enumerate(qids):
        groups[len(q)].append(n)
    new = 4 + vlm.config.cells + 4 if vlm.config.cite else 8
    out: list[str] = [""] * len(data)
    dev = vlm.device
    for members in groups.values():
        for s in range(0, len(members), batch_size):
            idx = members[s:s + batch_size]
            img = torch.tensor([data.items[n][0] for n in idx])
            side = {}
            if b.data.codes is not None:
                side["codes"] = b.data.codes[img].to(dev)
            elif b.data.features is not None:
                side["features"] = b.data.features[img].to(dev)
            ims = None if side else b.data.images[img].to(dev)
            ans = vlm.generate(ims, torch.tensor([qids[n] for n in idx]), max_new_tokens=new, **side)
            for n, row in zip(idx, ans.tolist()):
                out[n] = vlm.decode_answer(row)
    return out


def score_answers(answers: list[str], data: QAData) -> dict[str, Any]:
    """Exact match (%) by type of answer texts (citations removed), and mean citation precision and
    recall (%) against ``data.patches`` where the data has them. §5.7–5.8."""
    if len(answers) != len(data):
        raise ValueError(f"{len(answers)} answers for {len(data)} items")
    correct, prec, rec = [], [], []
    for n, text in enumerate(answers):
        ans, cited = parse_citations(text)
        correct.append(ans == data.items[n][2])
        if data.patches is not None:
            sc = set_scores(cited, data.patches[n])
            prec.append(sc["precision"])
            rec.append(sc["recall"])
    out: dict[str, Any] = accuracy_by_type(torch.tensor(correct), [it[3] for it in data.items])
    if prec:
        out["cite_precision"] = round(100 * sum(prec) / len(prec), 2)
        out["cite_recall"] = round(100 * sum(rec) / len(rec), 2)
    return out


def evaluate(vlm, data: QAData, batch_size: int = 256) -> dict[str, Any]:
    """Held-out exact match (%) of greedy answers by type, plus citation precision/recall for a
    citing model. §5.7."""
    out = score_answers(generate_answers(vlm, data, batch_size), data)
    if not vlm.config.cite:
        out.pop("cite_precision", None)
        out.pop("cite_recall", None)
    return out


def majority_baseline(train: QAData, test: QAData) -> dict[str, float]:
    """Accuracy (%) of answering every question with its type's most frequent training answer. §5.7.

    The score a model reaches without looking at the image: a route must beat it to show it reads
    the image at all.
    """
    best = {}
    for t in {it[3] for it in train.items}:
        best[t] = Counter(it[2] for it in train.items if it[3] == t).most_common(1)[0][0]
    correct = torch.tensor([best.get(it[3]) == it[2] for it in test.items])
    return accuracy_by_type(correct, [it[3] for it in test.items])
