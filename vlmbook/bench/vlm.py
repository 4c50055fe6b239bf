"""Benchmark ``vlm``: museum-QA accuracy of the three fusion routes (tiny preset), with latency (Chapter 5).

For each route: held-out exact-match accuracy (overall, single-object, relational, per type),
image tokens per question, time to first token and decoding tokens/s. The committed
``vlm-tiny`` artifact (the continuous route trained offline for ``DemoConfig.offline().steps``) is
scored on the same exhibits as a separate row. Last line, from the routes trained in this run:
``vlm: <accuracy> % museum-QA (best route, tiny)``.
"""
from __future__ import annotations

from ..fusion.model import VisionLanguageModel, VLMConfig
from ..fusion.train import DemoConfig, evaluate, latency, museum_qa, run_demo
from ..hub import load_artifact
from . import BenchResult


def run(quick: bool = False) -> BenchResult:
    """Train each route (fewer steps with ``quick``) and measure it on held-out exhibits."""
    cfg = VLMConfig.tiny()
    demo = DemoConfig.tiny()
    if quick:
        demo = demo.replace(steps=max(50, demo.steps // 4), encoder_steps=demo.encoder_steps // 4, test_scenes=100)
    test = museum_qa("test", demo.test_scenes, cfg.image_size)
    res = run_demo(cfg, demo, test=test)
    table = {}
    baseline = res.pop("baseline")["accuracy"]
    encoder_seconds = round(res.pop("encoder_seconds"), 1)
    for route, r in res.items():
        m = r["model"]
        lat = latency(m, test.images[0], test.items[0][1])
        table[route] = {
            "exact_match_pct": r["accuracy"]["all"],
            "accuracy_by_type_pct": {k: v for k, v in r["accuracy"].items() if k != "all"},
            "image_tokens_per_question": cfg.image_tokens,
            "image_tokens_in_lm_sequence": m.image_slots,
            "ttft_ms": round(lat["ttft_ms"], 2),
            "tokens_per_s": round(lat["tokens_per_s"], 1),
            "train_seconds": round(r["seconds"], 1),
            "train_steps": demo.steps,
        }
    guide = load_artifact("vlm-tiny", VisionLanguageModel)
    acc = evaluate(guide, test)
    lat = latency(guide, test.images[0], test.items[0][1])
    table["vlm_tiny_artifact"] = {
        "exact_match_pct": acc["all"], "accuracy_by_type_pct": {k: v for k, v in acc.items() if k != "all"},
        "image_tokens_per_question": guide.config.image_tokens, "ttft_ms": round(lat["ttft_ms"], 2),
        "tokens_per_s": round(lat["tokens_per_s"], 1), "train_steps": DemoConfig.offline().steps,
        "training_log": guide.training_log,
    }
    table["majority_baseline_pct"] = baseline
    table["encoder_warmup_seconds"] = encoder_seconds
    table["excluded_types"] = ["plaque"]
    table["config"] = {"vlm": cfg.to_dict(), "demo": demo.to_dict()}
    best = max(v["exact_match_pct"] for k, v in table.items() if k in res)
    return BenchResult("vlm", best, "% museum-QA (best route, tiny)", table, fmt="{:.1f}")
