"""Benchmark ``vq`` (Chapter 2 / Chapter 7): codebook usage of plain VQ vs EMA + restart,
reconstruction PSNR against tokens per image, and the forward+backward speed of our VQ layer
against ``vector_quantize_pytorch.VectorQuantize`` with matched settings.

Headline: ``vq: <ratio> x vs vector-quantize-pytorch`` where ratio = their time / our time for one
training forward+backward (above 1 means ours is faster).

Everything runs on one thread (two threads on a busy 2-core machine are many times slower: in
quick runs at load 2-3 our timed step took about 20 ms on one thread but 230-370 ms on two, and
the ratio read 0.99-1.06 instead of about 2.5). ``--quick`` trains no
tokenizer for the PSNR-against-tokens table: it re-reads that table from the committed full record
(``bench/results/vq.json``, labelled as such) and re-scores the committed ``vq-tokenizer-tiny``
artifact live against its recorded metrics. The speed ratio and the usage experiment are measured live.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..device import num_threads
from ..util import median_seconds_pair
from . import BenchResult


#: The committed full record, which ``--quick`` reads instead of retraining three tokenizers.
RECORD = Path(__file__).resolve().parents[2] / "bench" / "results" / "vq.json"


def speed(batch: int = 16, tokens: int = 256, dim: int = 64, codebook_size: int = 512, reps: int = 20,
          threads: int = 1) -> dict:
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

    with num_threads(threads):
        t_ours, t_theirs = median_seconds_pair(step_ours, step_theirs, reps, warmup=3)
    return {"shape": [batch, tokens, dim], "codebook_size": codebook_size, "ours_ms": round(t_ours * 1e3, 3),
            "vector_quantize_pytorch_ms": round(t_theirs * 1e3, 3), "ratio": round(t_theirs / t_ours, 3),
            "threads": threads}


def usage(steps: int, threads: int = 1) -> dict:
    """Usage and perplexity on 256 held-out exhibits: plain VQ vs EMA + k-means init + restart."""
    from ..vq import collapse_experiment

    res = collapse_experiment(steps=steps, batch_size=16, seed=0, threads=threads)
    return {label: metrics for label, (_, metrics) in res.items()}


def recorded_psnr_vs_tokens(path: str | Path = RECORD) -> dict:
    """The full run's PSNR-against-tokens table, read from its committed record and labelled with its date."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p} not found: run python -m vlmbook.bench vq (the full benchmark) first")
    rec = json.loads(p.read_text())
    if rec.get("quick") or "psnr_vs_tokens" not in rec.get("table", {}):
        raise ValueError(f"{p} is not a full vq record with a psnr_vs_tokens table")
    return {"source": f"committed full record {p.name} of {rec.get('date', '?')} (not re-trained by --quick)",
            **rec["table"]["psnr_vs_tokens"]}


def artifact_check() -> dict:
    """Re-score the committed ``vq-tokenizer-tiny`` on its 256 val exhibits, beside its recorded metrics."""
    from ..hub import REPO_ARTIFACTS
    from ..vq import evaluate_tokenizer, load_tiny_tokenizer
    from ..vq.tokenizer import TINY_ARTIFACT

    with num_threads(1):
        live = evaluate_tokenizer(load_tiny_tokenizer())
    recorded = json.loads((REPO_ARTIFACTS / TINY_ARTIFACT.key / "metrics.json").read_text())
    return {"live": live, "recorded": {k: recorded[k] for k in live},
            "psnr_diff_db": round(live["psnr"] - recorded["psnr"], 3)}


def psnr_vs_tokens(steps: int) -> dict:
    """Train 64-px tokenizers with 4×4, 8×8 and 16×16 code grids (K = 256) for ``steps`` steps each."""
    from ..vq import TokenizerConfig, TokenizerTrainConfig, VQTokenizer, eval_images, evaluate_tokenizer, train_tokenizer

    images = eval_images(256, 64)
    out = {}
    for down in (4, 3, 2):
        torch.manual_seed(0)
        model = VQTokenizer(TokenizerConfig(downsample=down))
        with num_threads(1):
            train_tokenizer(model, TokenizerTrainConfig(steps=steps, batch_size=32), progress=False)
        m = evaluate_tokenizer(model, images)
        out[f"{m['tokens_per_image']} tokens"] = m
    return out


def run(quick: bool = False) -> BenchResult:
    """The three measurements on one thread; the headline is the speed ratio (quick: PSNR table re-read)."""
    if quick:
        table = {"speed": speed(reps=10), "usage": usage(120),
                 "psnr_vs_tokens": recorded_psnr_vs_tokens(), "vq_tokenizer_tiny": artifact_check()}
    else:
        table = {"speed": speed(reps=30), "usage": usage(400), "psnr_vs_tokens": psnr_vs_tokens(600)}
    fixed = table["usage"]["EMA + restart"]["usage"]
    table["targets"] = {"ema_restart_usage_ge_95pct": fixed >= 0.95}
    return BenchResult("vq", table["speed"]["ratio"], "x vs vector-quantize-pytorch", table, fmt="{:.2f}")
