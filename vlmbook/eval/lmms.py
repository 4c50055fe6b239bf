"""lmms-eval integration: the museum task's hooks and a model wrapper around vlmbook's guide (Chapter 7 §7.6).

Nothing here imports ``lmms_eval`` until lmms-eval itself asks for the model: the package entry
point ``lmms_eval.models: vlmbook = vlmbook.eval.lmms:manifests`` registers the name
``vlmbook``, and ``VLMBookLMM`` is built on first access. Use::

    pip install 'vlmbook[lmms]'
    python -c "from vlmbook.eval import export_museum; export_museum('museum_task')"
    lmms-eval --model vlmbook --model_args pretrained=vlm-tiny --include_path museum_task --tasks vlmbook_museum

Status, checked on 2026-11-29 with lmms-eval 0.7.3: it *installs* beside the locked environment
(``uv pip install --dry-run -r <every locked pin> lmms-eval`` resolves without changing a pin), but
its evaluator imports ``filelock._api``, which filelock 4 removed, and the lock pins filelock
4.3.1: ``lmms-eval`` then stops with ``ModuleNotFoundError: No module named 'filelock._api'``.
With ``pip install 'filelock<4'`` (3.32.7 satisfies every other locked package) it runs; on the
first 10 test exhibits (69 questions) it reported exact_match 0.536 for ``vlm-tiny``, the same
as ``vlmbook.eval.evaluate_model`` on the same questions.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from .adapter import EvalBatch, load_model, parse_output, predict


# -- task hooks (referenced by the generated task YAML) ---------------------------------
def doc_to_visual(doc: dict) -> list:
    """The exhibit image of a dataset row, as a one-element list of RGB PIL images."""
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The question, as the guide was trained to read it (no extra instruction)."""
    return doc["question"]


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """Exact match of the answer (citations removed) and citation precision against the row's patches."""
    answer, cited = parse_output(results[0])
    truth = set(doc.get("support_patches") or [])
    cited_set = set(cited)
    precision = len(cited_set & truth) / len(cited_set) if cited_set else 1.0
    return {"exact_match": float(answer == doc["answer"]), "citation_precision": precision}


# -- the model --------------------------------------------------------------------------
def pil_to_tensor(image: Any, size: int) -> torch.Tensor:
    """A PIL image -> (3, size, size) float tensor in [0, 1] (resized if needed)."""
    im = image.convert("RGB")
    if im.size != (size, size):
        im = im.resize((size, size))
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)


def manifests():
    """The lmms-eval model manifest for ``--model vlmbook`` (entry point ``lmms_eval.models``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id="vlmbook", simple_class_path="vlmbook.eval.lmms.VLMBookLMM")]


@functools.lru_cache(maxsize=1)
def _model_class():
    from lmms_eval.api.model import lmms

    class VLMBookLMM(lmms):
        """lmms-eval ``simple`` model: vlmbook's museum guide answering one question per request."""

        def __init__(self, pretrained: str = "vlm-tiny", device: str = "cpu", max_new_tokens: int = 24,
                     batch_size: int = 1, **kwargs) -> None:
            super().__init__()
            self.model = load_model(pretrained, device)
            self.max_new_tokens = int(max_new_tokens)
            self.batch_size_per_gpu = 1

        def generate_until(self, requests) -> list[str]:
            out = []
            size = int(self.model.config.image_size)
            for req in requests:
                context, gen_kwargs, to_visual, doc_id, task, split = req.args
                image = to_visual(self.task_dict[task][split][doc_id])[0]
                n = int(gen_kwargs.get("max_new_tokens", self.max_new_tokens))
                text = predict(self.model, EvalBatch(pil_to_tensor(image, size), [context]), max_new_tokens=n,
                               timing=False)[0].output
                out.append(text)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            return out

        def loglikelihood(self, requests):
            raise NotImplementedError("the vlmbook guide is scored by generation (output_type: generate_until)")

        def generate_until_multi_round(self, requests):
            raise NotImplementedError("the vlmbook guide answers one question per image prefix")

    return VLMBookLMM


def __getattr__(name: str):
    if name == "VLMBookLMM":
        return _model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
