"""Grounding and audit: citations ``[CITE:<p_k>]`` ↔ patch boxes, citation precision, JSON records (Chapter 5 §5.8).

In a citation, ``<p_k>`` names patch ``k`` (row-major) of the image's ``grid × grid`` patch
split, so every cited token maps back to a pixel box that a visitor (or an auditor) can check.
Patch-position tokens ``<p_k>`` are a family of their own: ``<v_k>`` is a codebook word (what a
patch looks like), never a place. One bracket may name several patches: ``[CITE:<p_3><p_4>]``.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import re
from typing import Any, Sequence

from ..data.museum import QA, Scene, patch_box, support_patches

CITATION = re.compile(r"\[CITE:((?:\s*<p_\d+>)*)\s*\]")
_PATCH = re.compile(r"<p_(\d+)>")


def parse_citations(text: str) -> tuple[str, list[int]]:
    """``'[CITE:<p_3><p_4>] red'`` or ``'red [CITE:<p_3>] [CITE:<p_4>]'`` -> ``('red', [3, 4])``. §5.8."""
    if not isinstance(text, str):
        raise ValueError(f"parse_citations needs a string, got {type(text).__name__}")
    patches = [int(k) for group in CITATION.findall(text) for k in _PATCH.findall(group)]
    answer = " ".join(CITATION.sub(" ", text).split())
    return answer, list(dict.fromkeys(patches))


def format_citation(patches: Sequence[int]) -> str:
    """``[3, 4]`` -> ``'[CITE:<p_3><p_4>]'`` (the text of :meth:`VisionLanguageModel.citation_ids`). §5.8."""
    return "[CITE:" + "".join(f"<p_{int(k)}>" for k in patches) + "]"


def set_scores(cited: Sequence[int], truth: Sequence[int]) -> dict[str, float]:
    """Precision and recall of a set of cited patches against the true ones (1 when a side is empty)."""
    c, t = set(int(k) for k in cited), set(int(k) for k in truth)
    hit = len(c & t)
    return {"precision": hit / len(c) if c else 1.0, "recall": hit / len(t) if t else 1.0}


def citation_boxes(patches: Sequence[int], grid: int, size: int) -> list[tuple[int, int, int, int]]:
    """Pixel boxes ``(x0, y0, x1, y1)`` of cited patches in a ``size``-px image split ``grid × grid``."""
    if grid < 1 or size < grid:
        raise ValueError(f"need grid >= 1 and size >= grid, got grid={grid}, size={size}")
    return [patch_box(int(k), grid, size) for k in patches]


def citation_scores(cited: Sequence[int], scene: Scene, qa: QA, grid: int) -> dict[str, float]:
    """Precision and recall of cited patches against the museum's supporting patches. §5.8.

    Precision is 1 when nothing is cited (no false claims); recall is 1 when nothing needed citing.
    """
    if any(not 0 <= int(k) < grid * grid for k in cited):
        raise ValueError(f"cited patches {list(cited)} out of range for a {grid}×{grid} grid")
    return set_scores(cited, support_patches(scene, qa, grid))


def citation_precision(cited: Sequence[int], scene: Scene, qa: QA, grid: int) -> float:
    """Fraction of cited patches that truly support the answer (see :func:`citation_scores`)."""
    return citation_scores(cited, scene, qa, grid)["precision"]


def audit_record(image_id: str, prompt: str, answer: str, answer_tokens: Sequence[int], grid: int, size: int,
                 timestamp: str | None = None) -> dict[str, Any]:
    """A JSON-able record of one answer: image id, tokens, cited patches and boxes, time, prompt hash. §5.8."""
    if not image_id:
        raise ValueError("audit_record needs a non-empty image_id")
    text, patches = parse_citations(answer)
    ts = timestamp or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {
        "image_id": image_id,
        "prompt_sha256": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
        "answer": text,
        "answer_tokens": [int(t) for t in answer_tokens],
        "cited_patches": patches,
        "boxes": [list(b) for b in citation_boxes(patches, grid, size)],
        "grid": grid,
        "timestamp": ts,
    }


def audit_json(record: dict[str, Any]) -> str:
    """The record as canonical JSON (sorted keys), ready to append to an audit log."""
    return json.dumps(record, sort_keys=True)
