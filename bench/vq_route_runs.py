"""The discrete route on Chapter 2's tokenizer, beside its comparisons (one thread each, seed 0, 3,000 steps).

Appends one JSON line per run to ``bench/results/vlm_discrete_vq.jsonl``::

    OMP_NUM_THREADS=1 python bench/vq_route_runs.py vq patch oracle_codes oracle_continuous

* ``vq`` — ``run_cell("recipe", route="discrete", source="vq")``: Chapter 2's ``vq-tokenizer-cell``;
* ``patch`` — the same with the k-means ``PatchQuantizer`` (72-px exhibits);
* ``oracle_codes`` — the discrete route fed perfect codes, one per cell: ``1 + (colour, shape, size)``
  of its object (0 = empty), i.e. a flawless tokenizer; what is left is the language model's job;
* ``oracle_continuous`` — the continuous route on perfect one-hot cell features (the recipe's reference).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

OUT = Path(__file__).resolve().parent / "results" / "vlm_discrete_vq.jsonl"


class OracleCodes(nn.Module):
    """(B, 3, 48, 48) museum exhibits -> (B, 3, 3) perfect cell codes, looked up by the image's bytes."""

    codebook_size, grid = 256, 3

    def __init__(self, splits: dict[str, int], size: int = 48):
        super().__init__()
        from vlmbook.data import Museum
        from vlmbook.fusion.data import patch_labels

        self.table = {}
        for split, n in splits.items():
            images, lab = Museum(split, size, length=n).tensors(0, n), patch_labels(split, n, 3)
            codes = torch.where(lab[..., 0] > 0, 1 + (lab[..., 0] - 1) * 24 + (lab[..., 1] - 1) * 3 + (lab[..., 2] - 1), 0)
            for x, c in zip(images, codes):
                self.table[self.key(x)] = c.view(3, 3)

    @staticmethod
    def key(x: torch.Tensor) -> str:
        return hashlib.sha1(x.numpy().tobytes()).hexdigest()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.table[self.key(x)] for x in images])


def run(kind: str) -> dict:
    from vlmbook.fusion import ablation
    import vlmbook.fusion.model as model

    t = time.time()
    if kind == "oracle_continuous":
        rec = ablation.run_cell("recipe", seed=0, steps=3000, source="oracle", route="continuous")
    else:
        if kind == "oracle_codes":
            oracle = OracleCodes({"train": 2000, "test": 200})
            model.build_quantizer = lambda c: oracle
        rec = ablation.run_cell("recipe", seed=0, steps=3000, source="patch" if kind == "patch" else "vq",
                                route="discrete", eval_every=500)
    rec["run"] = kind
    rec["wall_seconds"] = round(time.time() - t, 1)
    return rec


if __name__ == "__main__":
    for kind in sys.argv[1:]:
        rec = run(kind)
        with OUT.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(kind, json.dumps(rec["accuracy"]), flush=True)
