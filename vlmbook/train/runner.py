"""A training loop with per-group learning rates, following ``vlmbook.loop.fit``'s conventions (Chapter 6 §6.2).

``loop.fit`` builds one AdamW over one learning rate; instruction tuning wants the projector,
the adapters and the language model at different rates. Until ``fit`` takes parameter groups,
this loop does the same job the same way: seeded, batches a pure function of the step, tqdm,
cosine schedule, gradient clipping, checkpoint/resume through ``loop.save_checkpoint``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from ..hub import _dedupe_shared, _is_tied
from ..device import autocast, get_device, seed_everything
from ..loop import CKPT_NAME, LoopConfig, LossFn, cosine_schedule, load_checkpoint, save_checkpoint, to_device


class _Untied:
    """The model as ``loop``'s checkpoint functions see it: tied weights (LM head = embeddings) stored once.

    safetensors refuses two names for one tensor, so ``loop.save_checkpoint`` fails on a model with
    tied embeddings such as the VLM's Llama; this view drops the duplicate names on save and checks,
    on load, that every name it lacks is tied to one it has.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return _dedupe_shared(self.model.state_dict())

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not _is_tied(self.model, k, state)]
        if missing or unexpected:
            raise ValueError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")


def fit_groups(model: torch.nn.Module, loss_fn: LossFn, batch_fn: Callable[[int], Any], cfg: LoopConfig,
               groups: list[dict], ckpt_dir: str | os.PathLike | None = None, device: str | torch.device | None = None,
               desc: str = "train") -> list[dict[str, float]]:
    """``loop.fit`` with optimizer parameter ``groups`` (each with its own ``lr``); returns the history. §6.2."""
    cfg.validate()
    device = get_device(device)
    seed_everything(cfg.seed)
    model.to(device)
    groups = [{k: v for k, v in g.items() if k != "name"} for g in groups]
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError("fit_groups() got no trainable parameters")
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = 0, []
    # the checkpoint file is loop's (one atomic trainer.safetensors; was trainer.json + weights)
    if ckpt_dir is not None and (Path(ckpt_dir) / CKPT_NAME).is_file():
        start, history = load_checkpoint(ckpt_dir, _Untied(model), opt, total_steps=cfg.steps)  # type: ignore[arg-type]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_schedule(s, cfg.steps, cfg.warmup),
                                              last_epoch=start - 1)
    show = cfg.progress and os.environ.get("VLMBOOK_PROGRESS", "1") != "0"
    bar = tqdm(range(start, cfg.steps), desc=desc, disable=not show, file=sys.stderr, mininterval=2.0,
               initial=start, total=cfg.steps, leave=False)
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
            save_checkpoint(ckpt_dir, _Untied(model), opt, done, history,  # type: ignore[arg-type]
                            total_steps=cfg.steps)
    bar.close()
    model.eval()
    return history
