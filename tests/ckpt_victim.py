"""A tiny training run for the crash tests: ``python tests/ckpt_victim.py CKPT_DIR OUT_FILE``.

``python tests/ckpt_victim.py --serve`` imports torch once and then, for each line
``CKPT_DIR OUT_FILE ENV_JSON`` on stdin, forks a fresh process that runs the training with those
environment variables, prints ``pid N`` when it starts and ``exit CODE`` (negative: killed by that
signal) when it ends. Forking a warm process keeps each run at about a second of CPU instead of
the ten that importing torch and its optimisers costs.

Dropout draws from torch's generator and the loss adds NumPy and Python noise, so a resumed run
only matches an uninterrupted one if every random state comes back with the weights.
"""
import random
import sys

import numpy as np
import torch
from safetensors.torch import save_file

torch.set_num_threads(1)

from vlmbook.loop import LoopConfig, Stage, fit  # noqa: E402


def batch(step: int):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(8, 4, generator=g)
    return x, x.sum(1, keepdim=True).sin()


def main_loss(model, b, step):
    x, y = b
    noise = float(np.random.rand()) * 1e-3 + random.random() * 1e-3
    return ((model(x) - y) ** 2).mean() + noise


def head_loss(model, b, step):
    x, y = b
    return (model[2](model[1](model[0](x))) - y).abs().mean()


def main(ckpt: str, out: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Dropout(0.2), torch.nn.Linear(32, 1))
    stages = [Stage("body", main_loss, model[0].parameters()),
              Stage("head", head_loss, [{"params": model[2].parameters(), "lr": 3e-3}], every=2)]
    cfg = LoopConfig(steps=40, lr=1e-2, warmup=5, log_every=7, ckpt_every=2, accum=2, eval_every=10,
                     progress=False)
    hist = fit(model, stages, batch, cfg, ckpt_dir=ckpt if ckpt != "-" else None,
               eval_fn=lambda m, s: {"w": float(m[0].weight.sum())})
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, out, metadata={"history": repr(hist)})


def serve() -> None:
    import json
    import os
    import traceback

    torch.optim.AdamW(torch.nn.Linear(1, 1).parameters())  # pay torch's lazy imports once, before forking
    for line in sys.stdin:
        ckpt, out, env = line.rstrip("\n").split("\t")
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.environ.update(json.loads(env))
                main(ckpt, out)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        main(sys.argv[1], sys.argv[2])
