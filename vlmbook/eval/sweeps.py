"""Sweeps across the book's systems: accuracy against latency for every route and compressor (Chapter 7 §7.4).

Accuracy comes from the committed ablation records (Chapter 5, several seeds each); latency is
measured live on a model of the same configuration, since time to first token depends on the
architecture and the sequence, not on the trained weights. The Pareto front keeps the
configurations that no other one beats on both axes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch


def pareto_front(latency: Sequence[float], accuracy: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower latency, higher accuracy),
    sorted by latency. A point with equal latency and accuracy to another is kept once (the first). §7.4."""
    if len(latency) != len(accuracy):
        raise ValueError(f"latency has {len(latency)} points but accuracy has {len(accuracy)}")
    if any(x != x for x in [*latency, *accuracy]):
        raise ValueError("latency and accuracy must not hold NaN")
    order = sorted(range(len(latency)), key=lambda i: (latency[i], -accuracy[i], i))
    front, best = [], float("-inf")
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return front


@torch.no_grad()
def accuracy_latency(records: Sequence[dict], repeats: int = 5, question: str = "What colour is the star?") -> list[dict]:
    """One row per (source, route, variant) of the ablation: accuracy over seeds, image tokens, and the
    time to first token (ms) and decoding speed (tokens/s) of that configuration, measured on one
    thread on a 64-px exhibit, plus ``pareto`` (on the front or not). §7.4."""
    from ..bench.vlm import from_images, summarise
    from ..fusion.ablation import variant_config

    # the ablation's own grouping (source/route/variant/steps) and statistics over seeds
    groups = []
    for key, g in from_images(summarise(records)).items():
        source, route, variant, _ = key.split("/")
        acc = g["all"]
        groups.append((variant_config(variant, route, source),
                       {"source": source, "route": route, "variant": variant, "seeds": len(g["seeds"]),
                        "accuracy": acc["mean"], "accuracy_min": acc["min"], "accuracy_max": acc["max"]}))
    return with_front(_timed(groups, repeats, question))


def _timed(groups: Sequence[tuple], repeats: int, question: str) -> list[dict]:
    """``[(VLMConfig, row)]`` -> the rows with the configuration's compressor, image tokens, and time to
    first token and tokens/s measured on one thread (configurations that differ only in how they were
    trained share one model and one timing)."""
    from ..bench.vlm import latency
    from ..data.museum import Museum
    from ..device import num_threads
    from ..fusion.model import VisionLanguageModel

    rows, timed = [], {}
    with num_threads(1):
        for cfg, row in groups:
            arch = repr(sorted(cfg.to_dict().items()))
            if arch not in timed:
                vlm = VisionLanguageModel(cfg).eval()
                image = Museum("test", size=cfg.image_size).tensors(0, 1)[0]
                timed[arch] = latency(vlm, image, question, repeats=repeats)
            # a token-sweep row names its compressor (the discrete route's is its tokenizer, "vq")
            rows.append({**row, "compressor": row.get("compressor", cfg.compressor), "image_tokens": cfg.image_tokens,
                         **timed[arch],
                         "threads": 1})
    return rows


def with_front(rows: Sequence[dict]) -> list[dict]:
    """The rows (``ttft_ms``, ``accuracy``) with ``pareto`` set by :func:`pareto_front` over all of them. §7.4."""
    front = set(pareto_front([r["ttft_ms"] for r in rows], [r["accuracy"] for r in rows]))
    return [{**r, "pareto": i in front} for i, r in enumerate(rows)]


# ---------------------------------------------------------------------------------------
# The guide against image tokens M: one warm-up and one language model per (route, compressor, M)
# ---------------------------------------------------------------------------------------
#: The committed token sweep of the guide (``python -m vlmbook.fusion.ablation ... --tokens M --joint``).
TOKEN_RECORD = "vlm_tokens.jsonl"
#: The warm-ups of the token sweep read out on their own (``python -m vlmbook.fusion.ablation --readout
#: perceiver:3e-3 --tokens M --joint``): one record per M.
TOKEN_READOUT = "vlm_tokens_readout.jsonl"


def sweep_line(record: dict) -> tuple[str, str]:
    """(route, compressor) of a token-sweep record; the discrete route's compressor is its tokenizer, ``"vq"``. §7.4."""
    return record["route"], "vq" if record["route"] == "discrete" else record["compressor"]


def token_rows(records: Sequence[dict]) -> list[dict]:
    """The guide's token sweep: one row per (route, compressor, M, warm-up read-out) with held-out
    accuracy (%, mean/min/max over seeds), citation precision and recall, sorted by route, compressor
    and M. The discrete route's compressor is Chapter 2's tokenizer (``"vq"``: source ``vq``, its code
    grid is M); the other routes read Chapter 4's encoder (source ``clip``). Records of mixed variants
    or other sources raise ``ValueError``. §7.4."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    need = ("route", "compressor", "image_tokens", "variant", "steps", "seed", "accuracy")
    for r in records:
        missing = [k for k in need if k not in r] + ([] if "all" in r.get("accuracy", {}) else ["accuracy.all"])
        if missing:
            raise ValueError(f"a token-sweep record lacks {missing}")
        want = "vq" if r["route"] == "discrete" else "clip"
        if r.get("source") != want:
            raise ValueError(f"the token sweep reads Chapter 4's encoder (source 'clip') on the continuous and gated "
                             f"routes and Chapter 2's tokenizers (source 'vq') on the discrete route; a "
                             f"{r['route']!r} record has source {r.get('source')!r}")
        key = (*sweep_line(r), int(r["image_tokens"]), bool(r.get("encoder_joint", False)),
               r["variant"], r["steps"])
        groups.setdefault(key, []).append(r)
    if len({k[4:] for k in groups}) > 1:
        raise ValueError(f"a token sweep holds one variant and step count, got {sorted({k[4:] for k in groups})}")
    rows = []
    for (route, comp, M, joint, variant, steps), rs in sorted(groups.items()):
        acc = [r["accuracy"]["all"] for r in rs]
        row = {"source": "vq" if route == "discrete" else "clip", "route": route, "variant": variant, "compressor": comp,
               "image_tokens": M,
               "joint": joint, "steps": steps, "seeds": len(rs), "accuracy": round(statistics.mean(acc), 2),
               "accuracy_min": min(acc), "accuracy_max": max(acc)}
        for m in ("single", "relational", "cite_precision", "cite_recall"):
            vals = [r["accuracy"][m] for r in rs if m in r["accuracy"]]
            row[m] = round(statistics.mean(vals), 2) if vals else None
        rows.append(row)
    if not rows:
        raise ValueError("the token sweep holds no records")
    return rows


@torch.no_grad()
def token_latency(rows: Sequence[dict], repeats: int = 5, question: str = "What colour is the star?") -> list[dict]:
    """:func:`token_rows` with each configuration's time to first token and tokens/s (one thread) and
    ``pareto`` over them: the front of route × compressor × M. §7.4."""
    from ..fusion.ablation import variant_config

    groups = [(variant_config(r["variant"], r["route"], r.get("source", "clip"), tokens=r["image_tokens"],
                              compressor="" if r["route"] == "discrete" else r["compressor"]), dict(r)) for r in rows]
    return with_front(_timed(groups, repeats, question))


def guide_budget(rows: Sequence[dict], context: int = 512, text_len: int = 96, tolerance: float = 1.0
                 ) -> dict[str, dict]:
    """Per ``route/compressor`` of :func:`token_rows`: Chapter 4's Q(M) fit to the guide's accuracy (%)
    and the budget M* of :func:`token_budget` (``tolerance`` in points). §7.4."""
    out: dict[str, dict] = {}
    for route in dict.fromkeys(r["route"] for r in rows):
        pts = [{"kind": r["compressor"], "M": r["image_tokens"], "accuracy": r["accuracy"] / 100}
               for r in rows if r["route"] == route]
        try:
            fitted = token_budget(pts, context, text_len, tolerance / 100)
        except ValueError:  # fewer than three budgets for every compressor of this route
            continue
        for comp, b in fitted.items():
            out[f"{route}/{comp}"] = b
    if not out:
        raise ValueError("no route and compressor has three or more budgets to fit")
    return out


# ---------------------------------------------------------------------------------------
# Tokenizer reconstruction and codebook usage against tokens per image (Chapter 2's tokenizers)
# ---------------------------------------------------------------------------------------
#: Stride-2 stages of the swept 64-px tokenizers: 4, 3, 2 stages -> 4×4, 8×8, 16×16 codes per image.
TOKENIZER_DOWNSAMPLES = (4, 3, 2)
#: MS-SSIM's Gaussian window on 64-px images. Five scales halve the image four times and
#: ``pytorch_msssim`` needs a side > (window - 1) * 16, so 3 is the largest window a 64-px (or
#: 48-px) image allows; the standard 11-px window needs sides > 160 px.
MS_SSIM_WINDOW = 3


@torch.no_grad()
def tokenizer_metrics(model, images: torch.Tensor, batch: int = 64) -> dict[str, float]:
    """(S, 3, H, W) images in [0, 1] -> PSNR (dB), MS-SSIM (five scales, 3-px window), codebook usage,
    perplexity and tokens per image of a VQ tokenizer's reconstructions. §7.4."""
    from pytorch_msssim import ms_ssim

    from ..vq import evaluate_tokenizer

    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (S, 3, H, W), got {tuple(images.shape)}")
    out = evaluate_tokenizer(model, images, batch=batch)  # PSNR, usage, perplexity over all images at once
    model.eval()
    recs = torch.cat([model.reconstruct(images[i:i + batch]) for i in range(0, len(images), batch)])
    score = ms_ssim(recs.clamp(0, 1).double(), images.double(), data_range=1.0, win_size=MS_SSIM_WINDOW,
                    size_average=False)  # (S,) one score per image, averaged below
    return {**out, "ms_ssim": round(float(score.mean()), 4), "codebook_size": int(model.codebook_size)}


def tokenizer_sweep(steps: int = 600, downsamples: Sequence[int] = TOKENIZER_DOWNSAMPLES, batch_size: int = 32,
                    seed: int = 0, n_eval: int = 256) -> list[dict]:
    """Train one 64-px tokenizer per code grid (Chapter 2's recipe, K = 256, one thread) and measure
    each with :func:`tokenizer_metrics` on ``n_eval`` val exhibits: one row per grid, fewest tokens first. §7.4."""
    from ..device import num_threads
    from ..vq import TokenizerConfig, TokenizerTrainConfig, VQTokenizer, eval_images, train_tokenizer

    if steps < 1 or n_eval < 1 or not downsamples:
        raise ValueError(f"need steps >= 1, n_eval >= 1 and at least one grid, got {steps}, {n_eval}, {downsamples}")
    images = eval_images(n_eval, 64)
    rows = []
    with num_threads(1):
        for down in downsamples:
            torch.manual_seed(seed)
            model = VQTokenizer(TokenizerConfig(downsample=down))
            train_tokenizer(model, TokenizerTrainConfig(steps=steps, batch_size=batch_size, seed=seed), progress=False)
            rows.append({"downsample": down, "steps": steps, "seed": seed, **tokenizer_metrics(model, images)})
    return sorted(rows, key=lambda r: r["tokens_per_image"])


def _indexed_rows(table, prefix: str, text: Sequence[str] = ()) -> dict[int, dict]:
    """``{i: {metric: value}}`` from the metrics-table rows whose path is ``<prefix>/<i>`` (a list of
    dicts, flattened by :func:`vlmbook.eval.metrics.metrics_table`); metrics in ``text`` are read from
    the text column, the others from the numeric one (missing values are left out)."""
    paths, mets, vals, texts = (table.column(c).to_pylist() for c in ("path", "metric", "value", "text"))
    rows: dict[int, dict] = {}
    for p, m, v, t in zip(paths, mets, vals, texts):
        parts = p.split("/")
        x = t if m in text else v
        if len(parts) == 2 and parts[0] == prefix and parts[1].isdigit() and x is not None:
            rows.setdefault(int(parts[1]), {})[m] = x
    return rows


#: The committed tokenizer sweep, in the long metrics schema (``python -m vlmbook.eval.sweeps tokenizers``).
TOKENIZER_RECORD = "tokenizer_sweep.metrics.csv"


def tokenizer_rows(table) -> list[dict]:
    """The rows of a tokenizer sweep back from its metrics table (:mod:`vlmbook.eval.metrics`), fewest
    tokens first; a table without them raises ``ValueError``. §7.4."""
    rows = _indexed_rows(table, "rows")
    need = {"tokens_per_image", "psnr", "ms_ssim", "usage", "perplexity"}
    if not rows or any(need - r.keys() for r in rows.values()):
        raise ValueError(f"no tokenizer sweep rows with {sorted(need)} in this metrics table")
    return sorted(rows.values(), key=lambda r: (r["tokens_per_image"], r.get("seed", 0)))


TOKENIZER_METRICS = ("psnr", "ms_ssim", "usage", "perplexity")


def tokenizer_summary(rows: Sequence[dict]) -> list[dict]:
    """One row per tokens-per-image count: the number of seeds and, for PSNR, MS-SSIM, usage and
    perplexity, the mean over seeds and its sample standard deviation (``<metric>_std``). §7.4."""
    from .stats import mean_std

    if not rows:
        raise ValueError("tokenizer_summary needs at least one row")
    out = []
    for t in sorted({r["tokens_per_image"] for r in rows}):
        group = [r for r in rows if r["tokens_per_image"] == t]
        row: dict = {"tokens_per_image": t, "seeds": len(group)}
        for m in TOKENIZER_METRICS:
            row[m], row[f"{m}_std"] = mean_std([r[m] for r in group])
        out.append(row)
    return out


def build_tokenizer_record(out: str | Path, steps: int = 600, seeds: Sequence[int] = (0,)) -> Path:
    """Run :func:`tokenizer_sweep` for each seed and write the rows, with how and where they ran, as a
    metrics file. §7.4."""
    import datetime
    import os
    import time

    from ..bench import torch_threads
    from ..device import describe_machine
    from .metrics import metrics_table, write_metrics

    t0, load = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    rows = sorted((r for seed in seeds for r in tokenizer_sweep(steps, seed=seed)),
                  key=lambda r: (r["tokens_per_image"], r["seed"]))
    record = {"rows": rows, "recipe": {"image_size": 64, "codebook_size": 256, "batch_size": 32, "steps": steps,
                                       "seeds": list(seeds),
                                       "ms_ssim_window": MS_SSIM_WINDOW, "eval": "256 val exhibits"},
              "threads": torch_threads(), "machine": describe_machine(),
              "load_average": {"before": load, "after": [round(x, 2) for x in os.getloadavg()]},
              "seconds": round(time.perf_counter() - t0, 1),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    return write_metrics(metrics_table("tokenizer_sweep", record), out)


# ---------------------------------------------------------------------------------------
# Accuracy against image tokens M, with Chapter 4's Q(M) fit and token-budget chooser
# ---------------------------------------------------------------------------------------
def budget_rows(table) -> list[dict]:
    """The probe's (kind, M, accuracy) rows from the metrics table of a ``resample`` benchmark record
    (``metrics_table("resample", record["table"])``), in record order. §7.4."""
    rows = _indexed_rows(table, "probe", text=("kind",))
    out = [{"kind": r["kind"], "M": int(r["M"]), "accuracy": r["accuracy"]}
           for _, r in sorted(rows.items()) if {"kind", "M", "accuracy"} <= r.keys()]
    if not out:
        raise ValueError("no probe rows (probe/<i>/kind, M, accuracy) in this metrics table")
    return out


def token_budget(rows: Sequence[dict], context: int = 512, text_len: int = 96, tolerance: float = 0.01,
                 n_patches: int = 64) -> dict[str, dict]:
    """Per compressor: Chapter 4's fit Q(M) = a - b / (M + c) to its (M, accuracy) rows and the budget M*
    :func:`vlmbook.resample.choose_budget` picks for ``context`` tokens holding ``text_len`` text tokens,
    among the budgets the compressor can produce from ``n_patches`` patches. Kinds with fewer than three
    budgets and the uncompressed reference (``kind == "all"``) are skipped. §7.4."""
    from ..resample import choose_budget, fit_budget_curve
    from ..resample.budget import valid_budgets

    out: dict[str, dict] = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        pts = sorted((r["M"], r["accuracy"]) for r in rows if r["kind"] == kind)
        if kind == "all" or len(pts) < 3:
            continue
        curve = fit_budget_curve([m for m, _ in pts], [a for _, a in pts])
        allowed = valid_budgets(kind, n_patches, range(1, n_patches + 1))
        out[kind] = {"curve": curve, "budgets": [m for m, _ in pts],
                     "M_star": choose_budget(context, text_len, curve, tolerance, allowed)}
    if not out:
        raise ValueError("no compressor has three or more budgets to fit")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vlmbook.eval.sweeps tokenizers [--steps N] [--seeds 0,1,2] [--out FILE]``: rebuild the record."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m vlmbook.eval.sweeps")
    p.add_argument("sweep", choices=["tokenizers"])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--out", default=f"bench/results/{TOKENIZER_RECORD}")
    a = p.parse_args(argv)
    print(build_tokenizer_record(a.out, a.steps, [int(x) for x in a.seeds.split(",")]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
