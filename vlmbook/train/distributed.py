"""SFT and DPO steps that run unchanged on one process or many, through ``accelerate`` (Chapter 6 §6.6).

``accelerate`` wraps the model in DistributedDataParallel, which all-reduces (averages) the
gradients of the processes after ``backward``. Averaging is right for a loss that is a mean over
*equal* shares of the batch (DPO: one term per pair). The SFT loss is a mean over *tokens*, and
the shares hold different numbers of answer tokens, so each process divides its token sum by
the global token count / number of processes (all-reduced first): the average of the shares is
then exactly the single-process loss of the whole batch.

Launch on a multi-GPU machine (one process per GPU)::

    accelerate launch --num_processes 8 -m vlmbook.train.distributed --task dpo --steps 100

and on CPUs (gloo), as the tests do::

    accelerate launch --multi_gpu --num_processes 2 -m vlmbook.train.distributed --task sft,dpo --out run/

(``--multi_gpu`` only selects accelerate's torchrun launcher; the script asks for ``Accelerator(cpu=True)``,
which joins the processes over gloo. ``accelerate launch --cpu --num_processes 2`` starts a single process
in accelerate 1.x unless MPI is configured.)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import save_file

from ..data.museum import Museum, preference_pairs, questions
from ..util import step_generator
from .losses import IGNORE, dpo_loss, sft_loss
from .policy import Example, VLMPolicy, freeze


def sft_step(accelerator, model, opt, policy: VLMPolicy, batch: dict) -> float:
    """One SFT step on this process's share of the global batch; returns the global loss. §6.6."""
    logits, labels = policy.logits(batch, model=model)
    n_local = (labels != IGNORE).sum().to(torch.float32)
    n_global = accelerator.reduce(n_local.detach().clone(), reduction="sum")
    if float(n_global) == 0:
        raise ValueError("sft_step: no labelled tokens in the global batch")
    loss = sft_loss(logits, labels, normaliser=n_global / accelerator.num_processes)
    opt.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    opt.step()
    return float(accelerator.reduce(loss.detach().clone(), reduction="mean"))


def dpo_step(accelerator, model, opt, policy: VLMPolicy, batch: dict, ref_logps: torch.Tensor,
             beta: float = 0.1) -> float:
    """One DPO step: ``batch`` holds B chosen then B rejected sequences, ``ref_logps`` (2B,) the reference's. §6.6."""
    lp = policy.sequence_logprobs(batch, model=model)
    if lp.shape != ref_logps.shape or lp.shape[0] % 2:
        raise ValueError(f"need 2B policy and reference log-probs, got {tuple(lp.shape)} and {tuple(ref_logps.shape)}")
    B = lp.shape[0] // 2
    loss = dpo_loss(lp[:B], lp[B:], ref_logps[:B].to(lp.device), ref_logps[B:].to(lp.device), beta)
    opt.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    opt.step()
    return float(accelerator.reduce(loss.detach().clone(), reduction="mean"))


# -- a self-contained demo run: deterministic model, data and global batches ------------------
def _small_vlm(seed: int):
    from ..fusion.model import VisionLanguageModel, VLMConfig

    cfg = VLMConfig(route="continuous", hidden=32, intermediate=64, enc_channels=8, layers=2, corpus_scenes=200,
                    codebook_size=32, image_size=48, grid=3, seed=seed)
    torch.manual_seed(seed)
    return VisionLanguageModel(cfg).eval()


def _data(policy: VLMPolicy, task: str, n_scenes: int, size: int) -> tuple[torch.Tensor, list]:
    m = Museum("train", size=size, length=n_scenes)
    grid = policy.module.config.grid
    items: list = []
    for i in range(n_scenes):
        sc = m.scene(i)
        for qa in questions(sc):
            if task == "sft":
                items.append(policy.response(qa.question, qa.answer, i))
            else:
                for p in preference_pairs(sc, qa, grid):
                    items.append(policy.pair(p.question, p.chosen, p.rejected, i))
    return m.tensors(0, n_scenes), items


def global_batch(items: Sequence, step: int, size: int, seed: int = 0) -> list:
    """The ``size`` items of global step ``step`` (a pure function of the step, as in ``loop.fit``)."""
    g = step_generator(seed, step)
    return [items[i] for i in torch.randint(len(items), (size,), generator=g).tolist()]


def run(task: str = "sft", steps: int = 3, global_batch_size: int = 8, lr: float = 0.05, beta: float = 0.5,
        seed: int = 0, out: str | Path | None = None, small: bool = True, cpu: bool = True) -> dict:
    """Train ``steps`` SGD steps of SFT or DPO on the museum; each process takes its slice of every global batch.

    Run directly for one process, or under ``accelerate launch`` for several: the result is the same
    up to floating-point summation order. Rank 0 writes ``model.safetensors`` and ``run.json`` to ``out``.
    """
    from accelerate import Accelerator

    if task not in ("sft", "dpo"):
        raise ValueError(f"task must be 'sft' or 'dpo', got {task!r}")
    acc = Accelerator(cpu=cpu)
    W, rank = acc.num_processes, acc.process_index
    if global_batch_size % W:
        raise ValueError(f"global batch {global_batch_size} is not divisible by {W} processes")
    if small:
        vlm = _small_vlm(seed)
    else:
        from ..fusion.model import VisionLanguageModel
        from ..hub import load_artifact

        vlm = load_artifact("vlm-tiny", VisionLanguageModel)
    policy = VLMPolicy(vlm)
    ref = VLMPolicy(freeze(_small_vlm(seed))) if (task == "dpo" and small) else None
    if task == "dpo" and ref is None:
        from ..fusion.model import VisionLanguageModel
        from ..hub import load_artifact

        ref = VLMPolicy(freeze(load_artifact("vlm-tiny", VisionLanguageModel)))
    images, items = _data(policy, task, 16, vlm.config.image_size)
    opt = torch.optim.SGD(vlm.parameters(), lr=lr)  # plain SGD: the comparison checks gradients, not Adam's ε
    model, opt = acc.prepare(vlm, opt)
    share = global_batch_size // W
    losses = []
    for step in range(steps):
        mine = global_batch(items, step, global_batch_size, seed)[rank * share:(rank + 1) * share]
        if task == "sft":
            losses.append(sft_step(acc, model, opt, policy, policy.collate(mine, images)))
        else:
            batch = policy.collate([c for c, _ in mine] + [r for _, r in mine], images)
            with torch.no_grad():
                ref_lp = ref.sequence_logprobs(batch)
            losses.append(dpo_step(acc, model, opt, policy, batch, ref_lp, beta))
    acc.wait_for_everyone()
    result = {"task": task, "processes": W, "steps": steps, "global_batch": global_batch_size, "losses": losses}
    if out is not None and acc.is_main_process:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in acc.unwrap_model(model).state_dict().items()
                 if k != "lm.lm_head.weight"}  # tied to the embeddings
        save_file(state, str(out / "model.safetensors"))
        (out / "run.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="SFT/DPO steps on the museum, on one process or under accelerate launch")
    ap.add_argument("--task", default="sft", help="sft, dpo, or both as 'sft,dpo' (one launch, two runs)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--vlm-tiny", action="store_true", help="train the committed vlm-tiny instead of a small fresh VLM")
    a = ap.parse_args(argv)
    tasks = a.task.split(",")
    for task in tasks:
        out = None if a.out is None else (Path(a.out) / task if len(tasks) > 1 else Path(a.out))
        r = run(task, a.steps, a.global_batch, a.lr, seed=a.seed, out=out, small=not a.vlm_tiny)
        print(json.dumps(r))


if __name__ == "__main__":
    main()
