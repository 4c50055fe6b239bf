"""Benchmark ``vq`` (Chapter 2 / Chapter 7): codebook usage of plain VQ vs EMA + restart,
reconstruction PSNR against tokens per image, and the forward+backward speed of our VQ layer
against ``vector_quantize_pytorch.VectorQuantize`` with matched settings.

Headline: ``vq: <ratio> x vs vector-quantize-pytorch`` where ratio = their time / our time for one
training forward+backward (above 1 means ours is faster).
"""
from __future__ import annotations


import torch

from ..device import num_threads
from ..util import median_seconds_pair
from . import BenchResult


def speed(batch: int = 16, tokens: int = 256, dim: int = 64, codebook_size: int = 512, reps: int = 20) -> dict:
    """Median seconds of one training forward+backward, ours vs vector-quantize-pytorch (EMA, no
    k-means, no dead-code restart, no rotation trick, commitment weight 0.25, decay 0.99).

    Both find the nearest codeword and update the codebook by EMA; ours uses squared distances,
    ``bincount``/``index_add`` for the EMA statistics, while vector-quantize-pytorch (this version)
    computes square-rooted distances and a dense one-hot matrix for its EMA update."""
    from vector_quantize_pytorch import VectorQuantize

    from ..vq import QuantizerConfig, VectorQuantizer

    torch.manual_seed(0)
    ours = VectorQuantizer(QuantizerConfig(dim=dim, codebook_size=codebook_size, beta=0.25, ema=True, decay=0.99,
                                           kmeans_init=False, restart_threshold=0.0)).train()
    theirs = VectorQuantize(dim=dim, codebook_size=codebook_size, decay=0.99, commitment_weight=0.25,
                            kmeans_init=False, threshold_ema_dead_code=0, rotation_trick=False).train()
    x = torch.randn(batch, tokens, dim)

    def step_ours():
        xi = x.clone().requires_grad_(True)
        out = ours(xi)
        (out.quantized.square().mean() + out.loss).backward()

    def step_theirs():
        xi = x.clone().requires_grad_(True)
        q, _, loss = theirs(xi)
        (q.square().mean() + loss.sum()).backward()

    with num_threads(2):
        t_ours, t_theirs = median_seconds_pair(step_ours, step_theirs, reps, warmup=3)
    return {"shape": [batch, tokens, dim], "codebook_size": codebook_size, "ours_ms": round(t_ours * 1e3, 3),
            "vector_quantize_pytorch_ms": round(t_theirs * 1e3, 3), "ratio": round(t_theirs / t_ours, 3)}


def usage(steps: int) -> dict:
    """Usage and perplexity on 256 held-out exhibits: plain VQ vs EMA + k-means init + restart."""
    from ..vq import collapse_experiment

    res = collapse_experiment(steps=steps, batch_size=16, seed=0)
    return {label: metrics for label, (_, metrics) in res.items()}


def psnr_vs_tokens(steps: int) -> dict:
    """Train 64-px tokenizers with 4×4, 8×8 and 16×16 code grids (K = 256) for ``steps`` steps each."""
    from ..vq import TokenizerConfig, TokenizerTrainConfig, VQTokenizer, eval_images, evaluate_tokenizer, train_tokenizer

    images = eval_images(256, 64)
    out = {}
    for down in (4, 3, 2):
        torch.manual_seed(0)
        model = VQTokenizer(TokenizerConfig(downsample=down))
        with num_threads(2):
            train_tokenizer(model, TokenizerTrainConfig(steps=steps, batch_size=32), progress=False)
        m = evaluate_tokenizer(model, images)
        out[f"{m['tokens_per_image']} tokens"] = m
    return out


def run(quick: bool = False) -> BenchResult:
    """The three measurements; the headline is the speed ratio."""
    table = {
        "speed": speed(reps=10 if quick else 30),
        "usage": usage(120 if quick else 400),
        "psnr_vs_tokens": psnr_vs_tokens(60 if quick else 600),
    }
    fixed = table["usage"]["EMA + restart"]["usage"]
    table["targets"] = {"ema_restart_usage_ge_95pct": fixed >= 0.95}
    return BenchResult("vq", table["speed"]["ratio"], "x vs vector-quantize-pytorch", table, fmt="{:.2f}")
