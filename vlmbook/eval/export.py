"""The museum as a Hugging Face ``datasets`` dataset, with an lmms-eval task (Chapter 7 §7.6).

``export_museum(out_dir)`` writes ``out_dir/data/test-00000-of-00001.parquet`` (one row per
question: the exhibit image, question, answer, type, supporting patches) and
``out_dir/vlmbook_museum.yaml`` + ``utils.py``, the task file lmms-eval reads with
``--include_path out_dir --tasks vlmbook_museum``. Needs the ``eval`` extra (``datasets``);
nothing is downloaded.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Sequence

from ..data.museum import Museum, support_patches
from .harness import EXCLUDED_TYPES, museum_items, question_id

TASK_NAME = "vlmbook_museum"


def _require_datasets():
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - the test extra installs it
        raise ImportError("the museum export needs the 'datasets' package: pip install 'vlmbook[eval]'") from e
    if os.environ.get("VLMBOOK_PROGRESS") == "0":  # chapters turn progress bars off (vlmbook.nb)
        datasets.disable_progress_bars()
    return datasets


def museum_records(split: str = "test", n_scenes: int = 200, size: int = 72, grid: int = 3, museum_seed: int = 0,
                   exclude: Sequence[str] = EXCLUDED_TYPES) -> list[dict[str, Any]]:
    """One dict per question: ``question_id``, PNG ``image`` bytes, question, answer, qtype, scene, patches. §7.6."""
    from PIL import Image

    museum = Museum(split, size=size, seed=museum_seed, length=n_scenes)
    out = []
    for i, scene, qas in museum_items(split, n_scenes, 0, museum_seed, exclude):
        if not qas:
            continue
        buf = io.BytesIO()
        Image.fromarray(museum.images(i, 1)[0]).save(buf, format="PNG")
        png = buf.getvalue()
        for k, qa in qas:
            out.append({"question_id": question_id(split, museum_seed, i, k), "image": {"bytes": png, "path": None},
                        "question": qa.question, "answer": qa.answer, "qtype": qa.qtype, "scene": i,
                        "support_patches": support_patches(scene, qa, grid), "grid": grid})
    return out


def museum_dataset(split: str = "test", n_scenes: int = 200, size: int = 72, grid: int = 3, museum_seed: int = 0,
                   exclude: Sequence[str] = EXCLUDED_TYPES):
    """The questions of ``n_scenes`` exhibits as a ``datasets.Dataset`` with an ``Image`` column. §7.6."""
    ds = _require_datasets()
    features = ds.Features({
        "question_id": ds.Value("string"), "image": ds.Image(), "question": ds.Value("string"),
        "answer": ds.Value("string"), "qtype": ds.Value("string"), "scene": ds.Value("int64"),
        "support_patches": ds.Sequence(ds.Value("int32")), "grid": ds.Value("int32"),
    })
    recs = museum_records(split, n_scenes, size, grid, museum_seed, exclude)
    return ds.Dataset.from_list(recs, features=features, split=ds.Split.TEST if split == "test" else split)


TASK_YAML = """\
# lmms-eval task for the vlmbook museum ({n} questions of {scenes} exhibits, split '{split}').
# Written by vlmbook.eval.export_museum; run with
#   lmms-eval --model vlmbook --model_args pretrained=vlm-tiny --include_path {folder} --tasks {task}
task: {task}
dataset_path: parquet
dataset_kwargs:
  data_files:
    {split}: {data}
test_split: {split}
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 24
  temperature: 0
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
  - metric: citation_precision
    aggregation: mean
    higher_is_better: true
metadata:
  - version: 1
"""

UTILS_PY = '''"""lmms-eval hooks for the vlmbook museum task (generated; the logic lives in vlmbook.eval.lmms)."""
from vlmbook.eval.lmms import doc_to_text, doc_to_visual, process_results  # noqa: F401
'''


def export_museum(out_dir: str | Path, split: str = "test", n_scenes: int = 200, size: int = 72, grid: int = 3,
                  museum_seed: int = 0) -> Path:
    """Write the dataset as Parquet and the lmms-eval task beside it; returns the task YAML. §7.6."""
    out = Path(out_dir).resolve()
    data = out / "data" / f"{split}-00000-of-00001.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    dset = museum_dataset(split, n_scenes, size, grid, museum_seed)
    dset.to_parquet(str(data))
    task = out / f"{TASK_NAME}.yaml"
    task.write_text(TASK_YAML.format(n=len(dset), scenes=n_scenes, split=split, folder=out, task=TASK_NAME,
                                     data=data))
    (out / "utils.py").write_text(UTILS_PY)
    return task


def load_museum(folder: str | Path, split: str = "test"):
    """Load an exported museum split back as a ``datasets.Dataset`` (offline)."""
    ds = _require_datasets()
    path = Path(folder) / "data" / f"{split}-00000-of-00001.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"no exported museum split at {path}")
    return ds.load_dataset("parquet", data_files={split: str(path)}, split=split)
