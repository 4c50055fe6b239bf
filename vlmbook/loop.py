"""One training loop for the whole book: seeded, progress bar, bf16 on CUDA, checkpoint/resume.

Batches come from ``batch_fn(step)`` so that data is a pure function of the step number: a run
that resumes from a checkpoint sees exactly the batches it would have seen (Chapter 6 §6.1).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .config import Config
from .device import autocast, get_device, seed_everything


@dataclasses.dataclass
class LoopConfig(Config):
    """Optimiser and schedule settings shared by every trainer."""

    steps: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 0
    grad_clip: float = 1.0
    log_every: int = 10
    ckpt_every: int = 0
    seed: int = 0
    progress: bool = True

    def validate(self) -> None:
        super().validate()
        self.check_positive("steps", "lr", "log_every")
        self.check_non_negative("weight_decay", "warmup", "grad_clip", "ckpt_every", "seed")

    @classmethod
    def tiny(cls) -> "LoopConfig":
        return cls(steps=200)

    @classmethod
    def base(cls) -> "LoopConfig":
        return cls(steps=5000, warmup=200)


LossFn = Callable[[torch.nn.Module, Any, int], "torch.Tensor | tuple[torch.Tensor, dict[str, float]]"]


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors inside nested dicts/lists/tuples to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def cosine_schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: linear warm-up then cosine decay to 10 %."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def fit(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batch_fn: Callable[[int], Any],
    cfg: LoopConfig,
    ckpt_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    params: list[torch.nn.Parameter] | None = None,
    desc: str = "train",
) -> list[dict[str, float]]:
    """Train ``model`` for ``cfg.steps`` steps; returns the logged history (list of dicts).

    ``loss_fn(model, batch, step)`` returns a loss or ``(loss, metrics)``. With ``ckpt_dir``
    the loop saves every ``cfg.ckpt_every`` steps and at the end, and resumes from it.
    """
    device = get_device(device)
    seed_everything(cfg.seed)
    model.to(device)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("fit() got no trainable parameters")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = 0, []
    if ckpt_dir is not None and (Path(ckpt_dir) / "trainer.json").is_file():
        start, history = load_checkpoint(ckpt_dir, model, opt)
    # On resume the restored param groups carry `initial_lr`, so the schedule continues at `start`.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_schedule(s, cfg.steps, cfg.warmup),
                                              last_epoch=start - 1)
    show = cfg.progress and os.environ.get("VLMBOOK_PROGRESS", "1") != "0"
    bar = tqdm(range(start, cfg.steps), desc=desc, disable=not show, file=sys.stderr,
               mininterval=2.0, initial=start, total=cfg.steps, leave=False)
    model.train()
    for step in bar:
        batch = to_device(batch_fn(step), device)
        with autocast(device):
            out = loss_fn(model, batch, step)
        loss, metrics = (out if isinstance(out, tuple) else (out, {}))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "loss": float(loss.detach()), **{k: float(v) for k, v in metrics.items()}}
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        done = step + 1
        if ckpt_dir is not None and ((cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps):
            save_checkpoint(ckpt_dir, model, opt, done, history)
    bar.close()
    model.eval()
    return history


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    step: int, history: list[dict[str, float]]) -> None:
    """Model + optimiser state as safetensors, step/history/param-groups as JSON (no pickle)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in osd["state"].items():
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"opt.{idx}.{name}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = val
    tensors["rng.torch"] = torch.get_rng_state()
    tmp = path / "trainer.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, path / "trainer.safetensors")  # atomic: a crash never leaves half a checkpoint
    meta = {"step": step, "history": history, "param_groups": osd["param_groups"], "scalars": scalars}
    (path / "trainer.json.tmp").write_text(json.dumps(meta))
    os.replace(path / "trainer.json.tmp", path / "trainer.json")


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    opt: torch.optim.Optimizer | None = None) -> tuple[int, list[dict[str, float]]]:
    """Restore what :func:`save_checkpoint` wrote; returns ``(step, history)``."""
    path = Path(path)
    try:
        meta = json.loads((path / "trainer.json").read_text())
        tensors = load_file(str(path / "trainer.safetensors"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint in {path} is unreadable: {e}") from None
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_state)
    if opt is not None:
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        for idx, d in meta["scalars"].items():
            state.setdefault(int(idx), {}).update(d)
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"]), list(meta["history"])
