"""One training loop for the whole book: seeded, progress bar, bf16 on CUDA, checkpoint/resume.

Batches come from ``batch_fn(step)`` so that data is a pure function of the step number: a run
that resumes from a checkpoint sees exactly the batches it would have seen (Chapter 6 §6.1).

A checkpoint is ONE file, ``trainer.safetensors``: model weights, every optimiser's tensors and
the random-number states as tensors, and the step, history, optimiser scalars and a digest of
the tensors in its metadata. It is written to a temporary file, flushed to disk, renamed over
the old one and the folder flushed, so a kill at any instant leaves either the old or the new
checkpoint, never a mixture of two steps.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from .config import Config
from .device import autocast, get_device, seed_everything

CKPT_NAME = "trainer.safetensors"
CKPT_FORMAT = "vlmbook-trainer/2"


@dataclasses.dataclass
class LoopConfig(Config):
    """Optimiser and schedule settings shared by every trainer.

    ``accum`` micro-batches (``batch_fn(step * accum + i)``) are averaged into one optimiser step;
    ``eval_every`` calls the ``eval_fn`` given to :func:`fit` every that many steps (0: only at the
    end); ``ckpt_every`` 0 means one checkpoint per tenth of the run when a directory is given.
    """

    steps: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta2: float = 0.999
    warmup: int = 0
    grad_clip: float = 1.0
    log_every: int = 10
    ckpt_every: int = 0
    seed: int = 0
    progress: bool = True
    accum: int = 1
    eval_every: int = 0

    def validate(self) -> None:
        super().validate()
        self.check_positive("steps", "lr", "log_every", "accum")
        if not 0.0 < self.beta2 < 1.0:
            self._fail("beta2", f"must lie in (0, 1), got {self.beta2}")
        self.check_non_negative("weight_decay", "warmup", "grad_clip", "ckpt_every", "seed", "eval_every")

    @classmethod
    def tiny(cls) -> "LoopConfig":
        return cls(steps=200)

    @classmethod
    def base(cls) -> "LoopConfig":
        return cls(steps=5000, warmup=200)


LossFn = Callable[[torch.nn.Module, Any, int], "torch.Tensor | tuple[torch.Tensor, dict[str, float]]"]
EvalFn = Callable[[torch.nn.Module, int], dict[str, float]]


@dataclasses.dataclass
class Stage:
    """One optimiser and the loss that drives it (GAN generator/discriminator, policy/value). §6.1.

    ``params`` are parameters or torch param-group dicts (each may set its own ``lr``,
    ``weight_decay``); ``lr``/``weight_decay`` default to the loop config's. The stage steps on
    steps ``start, start + every, …``. Its metrics are logged with the prefix ``name/``.
    """

    name: str
    loss_fn: LossFn
    params: Iterable[Any]
    lr: float | None = None
    weight_decay: float | None = None
    every: int = 1
    start: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "." in self.name:
            raise ValueError(f"Stage.name must be a non-empty string without '.', got {self.name!r}")
        for field in ("every", "start"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if field == "every" else 0):
                raise ValueError(f"Stage.{field} must be an int >= {1 if field == 'every' else 0}, got {v!r}")
        if not callable(self.loss_fn):
            raise TypeError(f"Stage.loss_fn must be callable, got {type(self.loss_fn).__name__}")


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


def default_ckpt_every(steps: int) -> int:
    """Checkpoint interval when the config leaves it at 0: ten checkpoints per run."""
    return max(1, math.ceil(steps / 10))


def _param_groups(stage: Stage, cfg: LoopConfig) -> list[dict[str, Any]]:
    items = list(stage.params)
    groups = items if items and all(isinstance(g, dict) for g in items) else [{"params": items}]
    out = []
    for g in groups:
        ps = [p for p in g["params"] if p.requires_grad]
        if ps:
            out.append({**g, "params": ps})
    if not out:
        raise ValueError(f"fit() got no trainable parameters (stage {stage.name!r})")
    return out


def _make_optimiser(stage: Stage, cfg: LoopConfig) -> torch.optim.Optimizer:
    lr = cfg.lr if stage.lr is None else stage.lr
    wd = cfg.weight_decay if stage.weight_decay is None else stage.weight_decay
    groups = _param_groups(stage, cfg)
    if len(groups) == 1 and set(groups[0]) == {"params"}:
        return torch.optim.AdamW(groups[0]["params"], lr=lr, weight_decay=wd, betas=(0.9, cfg.beta2))
    return torch.optim.AdamW(groups, lr=lr, weight_decay=wd, betas=(0.9, cfg.beta2))


def fit(
    model: torch.nn.Module,
    loss_fn: LossFn | Sequence[Stage],
    batch_fn: Callable[[int], Any],
    cfg: LoopConfig,
    ckpt_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    params: Iterable[Any] | None = None,
    desc: str = "train",
    eval_fn: EvalFn | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` for ``cfg.steps`` steps; returns the logged history (list of dicts). §6.1.

    ``loss_fn(model, batch, step)`` returns a loss or ``(loss, metrics)``; or pass a list of
    :class:`Stage` (one optimiser each, stepped in order on the same batch). ``params`` may be
    parameters or torch param-group dicts. With ``cfg.accum > 1`` each step averages the
    gradients of batches ``batch_fn(step * accum + i)``. ``eval_fn(model, step)`` runs in eval
    mode without gradients every ``cfg.eval_every`` steps and at the end; its results are logged
    as ``eval/<name>`` in that step's history row. With ``ckpt_dir`` the loop checkpoints every
    ``cfg.ckpt_every`` steps (default: each tenth) and at the end, and resumes from it exactly.
    """
    if not isinstance(cfg, LoopConfig):
        raise TypeError(f"fit() needs a LoopConfig as cfg, got {type(cfg).__name__}")
    device = get_device(device)
    seed_everything(cfg.seed)
    model.to(device)
    if callable(loss_fn):
        stages = [Stage("main", loss_fn, params if params is not None else model.parameters())]
        prefix = False
    else:
        stages = list(loss_fn)
        if not stages or not all(isinstance(s, Stage) for s in stages):
            raise TypeError("fit() needs loss_fn to be a callable or a non-empty list of Stage")
        if params is not None:
            raise ValueError("fit(): pass parameters inside each Stage, not as params=, when using stages")
        if len({s.name for s in stages}) != len(stages):
            raise ValueError(f"fit(): stage names must differ, got {[s.name for s in stages]}")
        prefix = True
    opts = [_make_optimiser(s, cfg) for s in stages]
    for opt in opts:
        for g in opt.param_groups:
            g.setdefault("initial_lr", g["lr"])
    all_params = [p for opt in opts for g in opt.param_groups for p in g["params"]]
    ckpt_every = cfg.ckpt_every or default_ckpt_every(cfg.steps)
    eval_every = cfg.eval_every
    start, history = 0, []
    if ckpt_dir is not None and (Path(ckpt_dir) / CKPT_NAME).is_file():
        start, history = load_checkpoint(ckpt_dir, model, opts, total_steps=cfg.steps)
    show = cfg.progress and os.environ.get("VLMBOOK_PROGRESS", "1") != "0"
    bar = tqdm(range(start, cfg.steps), desc=desc, disable=not show, file=sys.stderr,
               mininterval=2.0, initial=start, total=cfg.steps, leave=False)
    model.train()
    for step in bar:
        micro = [to_device(batch_fn(step * cfg.accum + i), device) for i in range(cfg.accum)] \
            if cfg.accum > 1 else [to_device(batch_fn(step), device)]
        row: dict[str, float] = {}
        for stage, opt in zip(stages, opts):
            if step < stage.start or (step - stage.start) % stage.every:
                continue
            loss, metrics = _stage_step(model, stage, opt, micro, step, cfg, desc, device,
                                        all_params if prefix else None)
            p = f"{stage.name}/" if prefix else ""
            row.update({f"{p}loss": loss, **{f"{p}{k}": float(v) for k, v in metrics.items()}})
        done = step + 1
        evaluated = eval_fn is not None and ((eval_every and done % eval_every == 0) or done == cfg.steps)
        if step % cfg.log_every == 0 or step == cfg.steps - 1 or evaluated:
            if evaluated:
                row.update(_run_eval(eval_fn, model, done))
            history.append({"step": step, **row})
            if "loss" in row:
                bar.set_postfix(loss=f"{row['loss']:.4f}")
        if ckpt_dir is not None and (done % ckpt_every == 0 or done == cfg.steps):
            save_checkpoint(ckpt_dir, model, opts, done, history, total_steps=cfg.steps)
    bar.close()
    model.eval()
    return history


def _stage_step(model: torch.nn.Module, stage: Stage, opt: torch.optim.Optimizer, micro: list[Any], step: int,
                cfg: LoopConfig, desc: str, device: torch.device, zero_all: list[torch.nn.Parameter] | None
                ) -> tuple[float, dict[str, float]]:
    params = [p for g in opt.param_groups for p in g["params"]]
    # Another stage's loss may have left gradients on these parameters: clear them all first.
    if zero_all is not None:
        for p in zero_all:
            p.grad = None
    opt.zero_grad(set_to_none=True)
    total, metrics = 0.0, {}
    for batch in micro:
        with autocast(device):
            out = stage.loss_fn(model, batch, step)
        loss, m = (out if isinstance(out, tuple) else (out, {}))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss became {loss.item()} at step {step}")
        (loss / len(micro) if len(micro) > 1 else loss).backward()
        total += float(loss.detach()) / len(micro)
        for k, v in m.items():
            metrics[k] = metrics.get(k, 0.0) + float(v) / len(micro)
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    for g in opt.param_groups:
        # The same product torch's LambdaLR forms, so old runs' numbers are unchanged.
        g["lr"] = g["initial_lr"] * cosine_schedule(step, cfg.steps, cfg.warmup)
    opt.step()
    return total, metrics


@torch.no_grad()
def _run_eval(eval_fn: EvalFn, model: torch.nn.Module, step: int) -> dict[str, float]:
    model.eval()
    try:
        res = eval_fn(model, step)
    finally:
        model.train()
    if not isinstance(res, dict):
        raise TypeError(f"eval_fn must return a dict of numbers, got {type(res).__name__}")
    return {f"eval/{k}": float(v) for k, v in res.items()}


# ---------------------------------------------------------------------------------------
# Checkpoints: one file, written atomically.
# ---------------------------------------------------------------------------------------
def _test_hook(point: str) -> None:
    # Crash tests set VLMBOOK_CKPT_KILL="point:n" to SIGKILL this process the n-th time it
    # reaches `point` (between two writes of a checkpoint), or VLMBOOK_CKPT_SLEEP=seconds to
    # widen those windows for kills from outside. Unset, this costs one dict lookup.
    spec = os.environ.get("VLMBOOK_CKPT_KILL")
    if spec:
        name, _, n = spec.partition(":")
        if name == point:
            count = _HOOK_COUNTS[point] = _HOOK_COUNTS.get(point, 0) + 1
            if count == int(n or 1):
                os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get("VLMBOOK_CKPT_SLEEP")
    if pause:
        import time

        time.sleep(float(pause))


_HOOK_COUNTS: dict[str, int] = {}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms (Windows) cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k]
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    out["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).view(np.int32).copy())
    out["rng.numpy_extra"] = torch.tensor([pos, has_gauss], dtype=torch.int64)
    out["rng.numpy_gauss"] = torch.tensor([gauss], dtype=torch.float64)
    version, state, gauss_py = random.getstate()
    out["rng.python"] = torch.tensor(list(state), dtype=torch.int64)
    out["rng.python_gauss"] = torch.tensor([float("nan") if gauss_py is None else gauss_py], dtype=torch.float64)
    return out


def _set_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    if "rng.numpy" in tensors:
        pos, has_gauss = (int(v) for v in tensors["rng.numpy_extra"])
        keys = tensors["rng.numpy"].numpy().view(np.uint32)
        np.random.set_state(("MT19937", keys, pos, has_gauss, float(tensors["rng.numpy_gauss"][0])))
    if "rng.python" in tensors:
        g = float(tensors["rng.python_gauss"][0])
        random.setstate((3, tuple(int(v) for v in tensors["rng.python"]), None if math.isnan(g) else g))


def _as_list(opt: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None) -> list[torch.optim.Optimizer]:
    if opt is None:
        return []
    return [opt] if isinstance(opt, torch.optim.Optimizer) else list(opt)


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies safetensors can write: tied weights (a head sharing the embedding) get their own storage."""
    out, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        key = (v.untyped_storage().data_ptr(), v.storage_offset())
        out[k] = v.clone() if key in seen or v.untyped_storage().nbytes() != v.numel() * v.element_size() else v
        seen.add(key)
    return out


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    opt: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None,
                    step: int, history: list[dict[str, float]], total_steps: int | None = None) -> Path:
    """Write ``trainer.safetensors`` atomically: weights, optimiser and RNG state + step in its metadata."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = _unshared({f"model.{k}": v for k, v in model.state_dict().items()})
    optim_meta = []
    for j, o in enumerate(_as_list(opt)):
        osd = o.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, st in osd["state"].items():
            for name, val in st.items():
                if isinstance(val, torch.Tensor):
                    tensors[f"opt{j}.{idx}.{name}"] = val.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(idx), {})[name] = val
        optim_meta.append({"param_groups": osd["param_groups"], "scalars": scalars})
    tensors.update(_rng_tensors())
    meta = {"format": CKPT_FORMAT, "step": str(int(step)), "history": json.dumps(history),
            "optimisers": json.dumps(optim_meta), "digest": _digest(tensors)}
    if total_steps is not None:
        meta["total_steps"] = str(int(total_steps))
    tmp = path / (CKPT_NAME + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    _test_hook("written")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    _test_hook("synced")
    os.replace(tmp, path / CKPT_NAME)
    _test_hook("renamed")
    _fsync_dir(path)
    return path / CKPT_NAME


def _read_checkpoint(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types on corrupt files
        raise ValueError(f"checkpoint {file} is unreadable: {e}") from None
    if meta.get("format") != CKPT_FORMAT:
        raise ValueError(f"checkpoint {file}: metadata field 'format' is {meta.get('format')!r}, "
                         f"expected {CKPT_FORMAT!r} (older two-file checkpoints cannot be resumed safely)")
    if meta.get("digest") != _digest(tensors):
        raise ValueError(f"checkpoint {file}: its tensors do not match the 'digest' in its metadata")
    return tensors, meta


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    opt: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
                    total_steps: int | None = None) -> tuple[int, list[dict[str, float]]]:
    """Restore what :func:`save_checkpoint` wrote (checked first); returns ``(step, history)``."""
    file = Path(path) / CKPT_NAME
    if not file.is_file():
        raise ValueError(f"no checkpoint {file}")
    tensors, meta = _read_checkpoint(file)
    try:
        step = int(meta["step"])
        history = json.loads(meta["history"])
        optim_meta = json.loads(meta["optimisers"])
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"checkpoint {file}: malformed metadata ({type(e).__name__}: {e})") from None
    if not isinstance(history, list) or not isinstance(optim_meta, list) or step < 0:
        raise ValueError(f"checkpoint {file}: malformed metadata fields 'step'/'history'/'optimisers'")
    if total_steps is not None and step > total_steps:
        raise ValueError(f"checkpoint {file} is at step {step}, beyond this run's {total_steps} steps")
    if history and int(history[-1].get("step", -1)) >= step:
        raise ValueError(f"checkpoint {file}: history ends at step {history[-1].get('step')} but 'step' is {step}")
    opts = _as_list(opt)
    if opts and len(optim_meta) != len(opts):
        raise ValueError(f"checkpoint {file} holds {len(optim_meta)} optimiser(s), this run has {len(opts)}")
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = model.state_dict()
    if set(model_state) != set(expected):
        missing, extra = sorted(set(expected) - set(model_state)), sorted(set(model_state) - set(expected))
        raise ValueError(f"checkpoint {file} does not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
    bad = [k for k, v in model_state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise ValueError(f"checkpoint {file}: model.{k} has shape {tuple(model_state[k].shape)}, "
                         f"the model needs {tuple(expected[k].shape)}")
    model.load_state_dict(model_state)
    for j, (o, om) in enumerate(zip(opts, optim_meta)):
        state: dict[int, dict[str, Any]] = {}
        pre = f"opt{j}."
        for k, v in tensors.items():
            if k.startswith(pre):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        for idx, d in om["scalars"].items():
            state.setdefault(int(idx), {}).update(d)
        try:
            o.load_state_dict({"state": state, "param_groups": om["param_groups"]})
        except (ValueError, KeyError, RuntimeError) as e:
            raise ValueError(f"checkpoint {file}: optimiser {j} does not match this run: {e}") from None
    _set_rng(tensors)
    return step, list(history)
