"""Run a model over museum questions and write one prediction row per answer (Chapter 7 §7.1)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
import torch

from ..data.museum import QA, QUESTION_TYPES, Museum, Scene, generate_scene, questions, support_patches
from .adapter import EvalBatch, load_model, model_info, peak_memory_mb, predict, versions
from .schema import make_table, write_predictions

#: Left out by default, as in Chapter 5: plaque digits are a few pixels tall at 72 px.
EXCLUDED_TYPES = ("plaque",)


def question_id(split: str, museum_seed: int, scene: int, index: int) -> str:
    """``'test:0:17:3'``: question ``index`` of scene ``scene`` in a museum split. §7.1."""
    return f"{split}:{museum_seed}:{scene}:{index}"


def lookup(qid: str) -> tuple[Scene, QA]:
    """The ground-truth scene and question behind a question id."""
    try:
        split, seed, scene, index = qid.split(":")
        sc = generate_scene(split, int(scene), int(seed))
        return sc, questions(sc)[int(index)]
    except (ValueError, IndexError) as e:
        raise ValueError(f"{qid!r} is not a museum question id (split:seed:scene:index)") from e


def museum_items(split: str, n_scenes: int, start: int = 0, museum_seed: int = 0,
                 exclude: Sequence[str] = EXCLUDED_TYPES) -> list[tuple[int, Scene, list[tuple[int, QA]]]]:
    """``(scene index, scene, [(question index, QA)])`` for ``n_scenes`` exhibits of a split."""
    if n_scenes < 1:
        raise ValueError(f"n_scenes must be >= 1, got {n_scenes}")
    bad = set(exclude) - set(QUESTION_TYPES)
    if bad:
        raise ValueError(f"unknown question types {sorted(bad)}")
    out = []
    for i in range(start, start + n_scenes):
        sc = generate_scene(split, i, museum_seed)
        out.append((i, sc, [(k, qa) for k, qa in enumerate(questions(sc)) if qa.qtype not in exclude]))
    return out


def score_citations(cited: Sequence[int], scene: Scene, qa: QA, grid: int) -> tuple[float, float]:
    """(precision, recall) of cited patches against the museum's support; out-of-grid cites count as wrong."""
    truth = set(support_patches(scene, qa, grid))
    c = set(int(k) for k in cited)
    hit = len(c & truth)
    return (hit / len(c) if c else 1.0), (hit / len(truth) if truth else 1.0)


def _row(run_id: str, model: str, info: dict, split: str, qid: str, qa: QA, output: str, answer: str,
         cited: Sequence[int], prec_rec: tuple[float, float] | tuple[None, None], timings: Sequence[Any],
         common: dict) -> dict[str, Any]:
    return {
        "run_id": run_id, "model": model, "config_hash": info["config_hash"], "route": info["route"],
        "compressor": info["compressor"], "image_tokens": info["image_tokens"], "seed": info["seed"],
        "split": split, "question_id": qid, "qtype": qa.qtype, "question": qa.question, "reference": qa.answer,
        "output": output, "answer": answer, "correct": answer == qa.answer, "cited_patches": [int(k) for k in cited],
        "citation_precision": prec_rec[0], "citation_recall": prec_rec[1],
        "encode_ms": timings[0], "ttft_ms": timings[1], "tokens_per_s": timings[2], **common,
    }


def evaluate_model(model: Any, split: str = "test", n_scenes: int = 200, start: int = 0, museum_seed: int = 0,
                   run_id: str | None = None, name: str = "model", timing: bool = True,
                   exclude: Sequence[str] = EXCLUDED_TYPES,
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> pa.Table:
    """Ask ``model`` every question of ``n_scenes`` exhibits; one validated prediction row each. §7.1.

    ``transform`` maps each (3, H, W) exhibit before the model sees it (for example a lossy
    codec round trip, :func:`jpeg_round_trip`), so that two runs ask the same questions."""
    info = model_info(model)
    run_id = run_id or f"{name}-{info['config_hash'][:8]}-s{info['seed']}-{split}"
    museum = Museum(split, size=info["image_size"], seed=museum_seed, length=start + n_scenes)
    model.eval()
    rows, threads = [], torch.get_num_threads()
    for i, scene, qas in museum_items(split, n_scenes, start, museum_seed, exclude):
        if not qas:
            continue
        image = museum.tensors(i, 1)[0]
        if transform is not None:
            image = transform(image)
            if image.shape != (3, info["image_size"], info["image_size"]):
                raise ValueError(f"transform changed the image shape to {tuple(image.shape)}")
        preds = predict(model, EvalBatch(image, [qa.question for _, qa in qas]), timing=timing)
        for (k, qa), p in zip(qas, preds):
            rows.append(_row(run_id, name, info, split, question_id(split, museum_seed, i, k), qa, p.output, p.answer,
                             p.cited, score_citations(p.cited, scene, qa, info["grid"]),
                             (p.encode_ms, p.ttft_ms, p.tokens_per_s), {}))
    common = {"peak_mem_mb": peak_memory_mb(info["device"]), "versions": json.dumps(versions(), sort_keys=True),
              "device": info["device"], "threads": threads}
    for r in rows:
        r.update(common)
    return make_table(rows)


def jpeg_round_trip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> the same image after JPEG at ``quality`` (1–95), via Pillow. §7.2."""
    import io

    import numpy as np
    from PIL import Image

    if not 1 <= int(quality) <= 95:
        raise ValueError(f"quality must lie in [1, 95], got {quality}")
    arr = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return torch.from_numpy(out.copy()).permute(2, 0, 1).float().div_(255.0)


def majority_predictions(split: str = "test", n_scenes: int = 200, train_scenes: int = 2000, museum_seed: int = 0,
                         exclude: Sequence[str] = EXCLUDED_TYPES) -> pa.Table:
    """Rows of the image-blind baseline: each type's most common training answer, no citations. §7.2."""
    counts: dict[str, Counter] = {}
    for _, _, qas in museum_items("train", train_scenes, exclude=exclude):
        for _, qa in qas:
            counts.setdefault(qa.qtype, Counter())[qa.answer] += 1
    best = {t: c.most_common(1)[0][0] for t, c in counts.items()}
    info = {"config_hash": f"majority-{train_scenes}", "route": "baseline", "compressor": "none", "image_tokens": 0,
            "seed": 0, "grid": 3}
    common = {"peak_mem_mb": None, "versions": json.dumps(versions(), sort_keys=True), "device": "none", "threads": 1}
    rows = []
    for i, scene, qas in museum_items(split, n_scenes, 0, museum_seed, exclude):
        for k, qa in qas:
            a = best.get(qa.qtype, "")
            rows.append(_row(f"majority-{split}", "majority", info, split, question_id(split, museum_seed, i, k), qa,
                             a, a, [], score_citations([], scene, qa, 3), (None, None, None), common))
    return make_table(rows)


def evaluate_to_file(source: str | Path, out: str | Path, split: str = "test", n_scenes: int = 200,
                     timing: bool = True, run_id: str | None = None) -> pa.Table:
    """Load a model folder (or artifact name), evaluate it, write ``out`` (.parquet/.csv). §7.1."""
    model = load_model(source)
    name = Path(str(source)).name
    table = evaluate_model(model, split, n_scenes, run_id=run_id, name=name, timing=timing)
    write_predictions(table, out)
    return table
