"""Distillation into a half-size student with Chapter 5's recipe (Chapter 6 §6.4).

Halving the depth of a two-layer guide leaves one layer, and one layer cannot do the guide's
two-step lookup (image tokens read the question, then the answer reads the image tokens), so
the student keeps the depth and narrows the width until its language model has at most half
the teacher's parameters. It trains with Chapter 5's recipe (curriculum, learning-rate schedule,
frozen image side shared with the teacher) on ``alpha``·T²·KL(teacher‖student) + (1−alpha)·CE at
the answer positions, plus the MSE between its last hidden states and the teacher's (projected to
its width) at every position — the term that carries the teacher's look-up, not only its answers.

One record per seed, appended as a JSON line::

    python -m vlmbook.train.student 0 --out bench/results/student.jsonl
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..fusion.model import VisionLanguageModel, VLMConfig
from .losses import distill_loss


def half_width_config(cfg: VLMConfig) -> VLMConfig:
    """``cfg`` with the widest language model of the same depth and heads that has at most half its
    parameters: width ≤ hidden/√2, a multiple of 2·heads (even head size for RoPE), MLP 3×. §6.4."""
    step = 2 * cfg.heads
    hidden = int(cfg.hidden / math.sqrt(2)) // step * step
    if hidden < step:
        raise ValueError(f"hidden={cfg.hidden} with {cfg.heads} heads is too narrow to halve")
    ratio = cfg.intermediate / cfg.hidden
    return cfg.replace(hidden=hidden, intermediate=int(round(ratio * hidden)))


def lm_parameters(vlm: VisionLanguageModel) -> int:
    """Parameters of the language model (embeddings and head included)."""
    return sum(p.numel() for p in vlm.lm.parameters())


def hidden_projection(student_width: int, teacher_width: int, seed: int = 0) -> torch.Tensor:
    """(teacher_width, student_width) fixed matrix with orthonormal columns: the teacher's hidden states,
    projected to the student's width, are what the student's are pulled towards. §6.4."""
    if student_width > teacher_width:
        raise ValueError(f"the student ({student_width}) must not be wider than the teacher ({teacher_width})")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(teacher_width, student_width, generator=g))
    return q


def kd_loss(teacher: VisionLanguageModel, temperature: float = 2.0, alpha: float = 0.5,
            hidden_weight: float = 0.0, projection: torch.Tensor | None = None) -> Callable:
    """A ``train_route`` loss: ``alpha``·T²·KL(teacher‖student) + (1−alpha)·CE at the answer positions,
    plus ``hidden_weight`` × the MSE between the student's last hidden states and the teacher's
    projected by ``projection`` (teacher width × student width) at every non-padding position. §6.4."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if hidden_weight < 0 or (hidden_weight and projection is None):
        raise ValueError(f"hidden_weight must be >= 0 and needs a projection, got {hidden_weight}")
    teacher.eval().requires_grad_(False)

    def states(m: VisionLanguageModel, batch: dict) -> torch.Tensor:
        embeds, media, lm_ids = m.embed(batch["input_ids"], batch.get("images"), batch.get("codes"),
                                        batch.get("features"), batch.get("compressed"))
        return m._run_lm(embeds, media, lm_ids, None)[0]

    def loss(model: VisionLanguageModel, batch: dict, step: int = 0):
        h = states(model, batch)
        with torch.no_grad():
            t_h = states(teacher.to(h.device), batch)
        pos = batch["targets"]
        logits, t_logits = model.text.head(h[pos]).float(), teacher.text.head(t_h[pos]).float()
        kd = distill_loss(logits, t_logits, temperature)
        ce = F.cross_entropy(logits, batch["labels"])
        out = alpha * kd + (1 - alpha) * ce
        stats = {"kd": float(kd.detach()), "ce": float(ce.detach())}
        if hidden_weight:
            keep = batch["input_ids"] != model.ids["pad"]
            mse = F.mse_loss(h[keep].float(), t_h[keep].float() @ projection.to(h.device))
            out = out + hidden_weight * mse
            stats["hidden_mse"] = float(mse.detach())
        return out, stats

    return loss


def distill_student(teacher: VisionLanguageModel, demo=None, student_config: VLMConfig | None = None,
                    temperature: float = 2.0, alpha: float = 0.5, train=None, eval_data=None,
                    device: str | None = None, hidden_weight: float = 1.0) -> tuple[VisionLanguageModel, list[dict]]:
    """Train a half-width student of ``teacher`` (or ``student_config``) with Chapter 5's recipe and
    the distillation loss; the image side is the teacher's, frozen. Returns ``(student, history)``. §6.4."""
    from ..fusion.train import DemoConfig, train_route

    if teacher.config.image_side != "clip":
        raise ValueError(f"distill_student shares a clip image side; the teacher has image_side={teacher.config.image_side!r}")
    cfg = student_config or half_width_config(teacher.config)
    demo = demo or DemoConfig.tiny().replace(curriculum=1000)
    if not demo.freeze_encoder:
        raise ValueError("distill_student shares the teacher's image side: it needs demo.freeze_encoder")
    probe = VisionLanguageModel(cfg.replace(route=teacher.config.route))
    if probe.tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        raise ValueError("the student's tokenizer differs from the teacher's: their logits are not comparable")
    encoder = (copy.deepcopy(teacher.encoder), copy.deepcopy(teacher.compressor))
    proj = hidden_projection(cfg.hidden, teacher.config.hidden, demo.seed) if hidden_weight else None
    return train_route(teacher.config.route, cfg, demo, train=train, device=device, encoder=encoder,
                       eval_data=eval_data, loss=kd_loss(teacher, temperature, alpha, hidden_weight, proj))


def run_student(seed: int, steps: int = 3000, alpha: float = 0.5, temperature: float = 2.0,
                return_model: bool = False, hidden_weight: float = 1.0):
    """One seed on one thread: the half-width student of ``vlm-tiny`` distilled (``alpha`` > 0) or
    trained on answers alone (``alpha`` = 0), scored greedily on the 200 test exhibits; returns the
    record (and the student with ``return_model``). §6.4."""
    from ..device import num_threads
    from ..fusion.ablation import CURRICULUM, _data
    from ..fusion.train import DemoConfig
    from ..hub import load_artifact

    teacher = load_artifact("vlm-tiny", VisionLanguageModel).eval()
    cfg = half_width_config(teacher.config)
    demo = DemoConfig.tiny().replace(steps=steps, seed=seed, warmup=min(100, steps // 10), **CURRICULUM)
    with num_threads(1):
        train = _data("train", demo.train_scenes, cfg.image_size, cfg.grid)
        test = _data("test", demo.test_scenes, cfg.image_size, cfg.grid)
        t0 = time.perf_counter()
        student, _ = distill_student(teacher, demo, cfg, temperature, alpha, train=train, eval_data=test, device="cpu",
                                     hidden_weight=hidden_weight)
        secs = time.perf_counter() - t0
    acc = student.training_log[-1]
    t_acc = teacher.training_log[-1] if getattr(teacher, "training_log", None) else None
    rec = {"seed": seed, "steps": steps, "alpha": alpha, "temperature": temperature, "hidden_weight": hidden_weight,
           "threads": 1,
            "student": {"hidden": cfg.hidden, "layers": cfg.layers, "heads": cfg.heads, "intermediate": cfg.intermediate},
            "lm_parameters": lm_parameters(student), "teacher_lm_parameters": lm_parameters(teacher),
            "train_seconds": round(secs, 1), "accuracy": acc,
            "teacher_accuracy": t_acc["all"] if t_acc else None,
            "retention": round(acc["all"] / t_acc["all"], 4) if t_acc else None}
    return (rec, student.eval()) if return_model else rec


def build_student_tiny(seed: int = 0) -> VisionLanguageModel:
    """Artifact ``vlm-student-tiny``: the half-width student of ``vlm-tiny``, distilled for 3,000 steps
    (alpha 0.5, T = 2, hidden-state MSE weight 1) with Chapter 5's recipe on one thread; the same run
    as the seed's record. §6.4."""
    return run_student(seed, return_model=True)[1]


#: ``python -m vlmbook.train.student SEED --out ...``: one record per seed (and alpha)
RECORDS = Path(__file__).resolve().parents[2] / "bench" / "results" / "student.jsonl"


def summarise_students(path: str | Path = RECORDS) -> dict[str, dict]:
    """Per recipe (answers only, logits, logits + hidden states): seeds, mean/min/max accuracy and
    retention, parameter ratio (records of :func:`run_student`)."""
    from ..bench.vlm import load_ablation

    out: dict[str, dict] = {}
    for r in load_ablation(path):
        hw = r.get("hidden_weight", 0.0)
        key = "logits + hidden states" if hw else ("logits" if r["alpha"] > 0 else "answers only")
        out.setdefault(key, {"alpha": r["alpha"], "hidden_weight": hw, "runs": []})["runs"].append(r)
    for row in out.values():
        runs = row.pop("runs")
        acc = [r["accuracy"]["all"] for r in runs]
        ret = [r["retention"] for r in runs]
        row.update(seeds=sorted(r["seed"] for r in runs), steps=runs[0]["steps"],
                   accuracy={"mean": round(sum(acc) / len(acc), 2), "min": min(acc), "max": max(acc)},
                   retention={"mean": round(sum(ret) / len(ret), 4), "min": min(ret), "max": max(ret)},
                   teacher_accuracy=runs[0]["teacher_accuracy"],
                   parameter_ratio=round(runs[0]["lm_parameters"] / runs[0]["teacher_lm_parameters"], 3))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seed", type=int)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--hidden-weight", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    line = json.dumps(run_student(a.seed, a.steps, a.alpha, a.temperature, hidden_weight=a.hidden_weight))
    print(line, flush=True)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        with a.out.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
