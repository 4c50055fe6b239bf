"""An error taxonomy computed from the museum's ground truth (Chapter 7 §7.3).

Every wrong answer gets one category, decided by rules a reader can check against the scene:

* ``language`` — the answer is not a valid answer for its question type (a colour question
  answered with a shape, an empty or malformed output with a broken citation);
* ``localisation`` — the guide looked at the wrong place: its citations miss every supporting
  patch (or, for a relation, one of the two objects), it answered with an attribute of *another*
  object in the exhibit, it named the wrong cell (``locate``), it did not find an object that is
  there (``exists`` → "no"), or it named an object outside the comparison;
* ``perception`` — right object, wrong attribute: a colour or shape that no other object in the
  exhibit has, an object seen that is absent (``exists`` → "yes"), a misread plaque;
* ``reasoning`` — right objects, wrong relation or number: ``spatial``, ``count``, and
  ``compare`` answered with the smaller of the two objects.

The rules check in this order (language, then citations, then the type's rule), so a category
never depends on anything but the scene, the question and the output.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa

from ..data.museum import COLOUR_NAMES, LOCATIONS, QA, QUESTION_TYPES, SHAPES, Scene, support_patches

CATEGORIES: tuple[str, ...] = ("perception", "localisation", "reasoning", "language")


def valid_answer(qtype: str, answer: str) -> bool:
    """Whether ``answer`` is a well-formed answer for a question of type ``qtype``. §7.3."""
    if qtype in ("colour",):
        return answer in COLOUR_NAMES
    if qtype == "shape":
        return answer in SHAPES
    if qtype in ("exists", "spatial"):
        return answer in ("yes", "no")
    if qtype == "locate":
        return answer in LOCATIONS
    if qtype == "count":
        return answer.isdigit() and int(answer) <= 9
    if qtype == "compare":
        parts = answer.split(" ")
        return len(parts) == 2 and parts[0] in COLOUR_NAMES and parts[1] in SHAPES
    if qtype == "plaque":
        return answer.isdigit() and 1 <= int(answer) <= 99 and answer == str(int(answer))
    raise ValueError(f"unknown question type {qtype!r}; known: {QUESTION_TYPES}")


def classify_error(scene: Scene, qa: QA, answer: str, cited: Sequence[int] = (), grid: int = 3) -> str | None:
    """The category of a wrong answer (see the module docstring), or ``None`` when it is right. §7.3."""
    if answer == qa.answer:
        return None
    if not valid_answer(qa.qtype, answer):
        return "language"
    cited_set = {int(k) for k in cited}
    if cited_set and _citations_miss(scene, qa, cited_set, grid):
        return "localisation"
    others = [o for i, o in enumerate(scene.objects) if i not in qa.objects]
    t = qa.qtype
    if t == "colour":
        return "localisation" if answer in {o.colour for o in others} else "perception"
    if t == "shape":
        return "localisation" if answer in {o.shape for o in others} else "perception"
    if t == "locate":
        return "localisation"
    if t == "exists":
        return "localisation" if qa.answer == "yes" else "perception"
    if t == "compare":
        named = {scene.objects[i].name for i in qa.objects}
        return "reasoning" if answer in named else "localisation"
    if t == "plaque":
        return "perception"
    return "reasoning"  # count, spatial


def _citations_miss(scene: Scene, qa: QA, cited: set[int], grid: int) -> bool:
    support = set(support_patches(scene, qa, grid))
    if not support:
        return False
    if not cited & support:
        return True
    if len(qa.objects) == 2:  # a relation needs both objects in view
        for i in qa.objects:
            one = set(support_patches(scene, QA(qa.question, qa.answer, qa.qtype, (i,)), grid))
            if one and not cited & one:
                return True
    return False


#: The grid a citation ``<p_k>`` names by default: the museum's 3 × 3 exhibit cells. Not the image
#: tokens M, which Chapter 7's token sweep sets apart from the cells (M = 4 still cites nine cells).
CITATION_GRID = math.isqrt(len(LOCATIONS))


def classify_table(table: pa.Table, grid: int | None = None) -> list[str | None]:
    """A category (or ``None`` for a right answer) for every row of a predictions table; ``grid`` is the
    grid the rows' citations name (default :data:`CITATION_GRID`, the museum's cells). §7.3."""
    from .harness import lookup

    out: list[str | None] = []
    cols = [table.column(c).to_pylist() for c in ("question_id", "answer", "cited_patches", "reference")]
    for qid, answer, cited, ref in zip(*cols):
        scene, qa = lookup(qid)
        if qa.answer != ref:
            raise ValueError(f"row {qid!r}: reference {ref!r} is not the museum's answer {qa.answer!r}")
        out.append(classify_error(scene, qa, answer, cited, grid or CITATION_GRID))
    return out


def error_counts(table: pa.Table, grid: int | None = None) -> dict[str, dict[str, int]]:
    """{question type: {category: number of wrong answers}} (every category present, zeros included). §7.3."""
    cats = classify_table(table, grid)
    counts: dict[str, Counter] = {}
    for t, c in zip(table.column("qtype").to_pylist(), cats):
        counts.setdefault(t, Counter())
        if c is not None:
            counts[t][c] += 1
    order = [t for t in QUESTION_TYPES if t in counts]
    return {t: {c: int(counts[t][c]) for c in CATEGORIES} for t in order}


def answer_confusion(table: pa.Table, qtype: str) -> tuple[list[str], list[str], np.ndarray]:
    """(reference labels, answer labels, counts) of one question type's answers: rows are references. §7.3."""
    qt = table.column("qtype").to_pylist()
    if qtype not in qt:
        raise ValueError(f"no {qtype!r} questions in this table; types: {sorted(set(qt))}")
    pairs = [(r, a) for t, r, a in zip(qt, table.column("reference").to_pylist(), table.column("answer").to_pylist())
             if t == qtype]
    refs = sorted({r for r, _ in pairs}, key=_label_order)
    answers = refs + sorted({a for _, a in pairs} - set(refs), key=_label_order)
    m = np.zeros((len(refs), len(answers)), dtype=np.int64)
    for r, a in pairs:
        m[refs.index(r), answers.index(a)] += 1
    return refs, answers, m


def _label_order(s: str) -> tuple:
    for pool in (LOCATIONS, COLOUR_NAMES, SHAPES):
        if s in pool:
            return (0, pool.index(s), s)
    return (1, int(s), s) if s.isdigit() else (2, 0, s)


def category_shares(counts: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Fraction of all wrong answers in each category (0 when there are none)."""
    total = Counter()
    for row in counts.values():
        total.update(row)
    n = sum(total.values())
    return {c: (total[c] / n if n else 0.0) for c in CATEGORIES}
