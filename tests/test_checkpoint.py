"""Checkpoints survive SIGKILL at any instant, and loop.fit's stages, accumulation and eval hook resume exactly."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vlmbook.loop import CKPT_NAME, LoopConfig, Stage, default_ckpt_every, fit, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
VICTIM = ROOT / "tests" / "ckpt_victim.py"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMBOOK_CKPT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", VLMBOOK_THREADS="1", VLMBOOK_PROGRESS="0",
               PYTHONPATH=str(ROOT), **extra)
    return env


class Victim:
    """A warm process that forks one training run per request (see tests/ckpt_victim.py)."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, str(VICTIM), "--serve"], env=_env(), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def start(self, ckpt: Path | str, out: Path, **env: str) -> int:
        self.proc.stdin.write(f"{ckpt}\t{out}\t{json.dumps(env)}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line.startswith("pid "), line
        return int(line.split()[1])

    def wait(self) -> int:
        line = self.proc.stdout.readline()
        assert line.startswith("exit "), line
        return int(line.split()[1])

    def run(self, ckpt: Path | str, out: Path, **env: str) -> int:
        self.start(ckpt, out, **env)
        return self.wait()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _same(a: Path, b: Path) -> bool:
    ta, tb = load_file(str(a)), load_file(str(b))
    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        same_history = fa.metadata() == fb.metadata()
    return same_history and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.fixture(scope="module")
def victim():
    v = Victim()
    yield v
    v.close()


@pytest.fixture(scope="module")
def reference(victim, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "straight.safetensors"
    assert victim.run("-", out) == 0
    return out


def test_sigkill_between_checkpoint_writes_resumes_bit_exactly(tmp_path, victim, reference):
    # Each point is a gap between two writes: temp file written, flushed, renamed over the old one.
    for i, (point, n) in enumerate([("written", 1), ("written", 9), ("synced", 4), ("renamed", 6), ("renamed", 19)]):
        ckpt, out = tmp_path / f"ck{i}", tmp_path / f"out{i}.safetensors"
        assert victim.run(ckpt, out, VLMBOOK_CKPT_KILL=f"{point}:{n}") == -signal.SIGKILL, (point, n)
        assert not out.exists()
        assert victim.run(ckpt, out) == 0
        assert _same(out, reference), f"resume after a kill at {point} #{n} diverged"


def test_sigkill_at_random_instants_resumes_bit_exactly(tmp_path, victim, reference):
    # Kills from outside at random moments; the sleep hook widens the gaps between writes so
    # that many of them land mid-checkpoint.
    rng = random.Random(12)
    ckpt, out = tmp_path / "ck", tmp_path / "out.safetensors"
    codes = []
    for _ in range(8):
        pid = victim.start(ckpt, out, VLMBOOK_CKPT_SLEEP="0.01")
        time.sleep(rng.uniform(0.02, 0.3))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        codes.append(victim.wait())
        if codes[-1] == 0:
            break
    assert codes.count(-signal.SIGKILL) >= 3, codes
    if codes[-1] != 0:
        assert victim.run(ckpt, out) == 0
    assert _same(out, reference)


# -- in-process checks of the checkpoint format -------------------------------------------
def _batch(step: int):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(16, 4, generator=g)
    return x, x.sum(1, keepdim=True).sin()


def _loss(model, batch, step):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _toy(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def test_checkpoint_is_one_file_and_checked_on_load(tmp_path):
    cfg = LoopConfig(steps=6, lr=1e-2, progress=False)
    fit(_toy(), _loss, _batch, cfg, ckpt_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CKPT_NAME]
    with safe_open(str(tmp_path / CKPT_NAME), "pt") as f:
        meta = f.metadata()
    assert meta["step"] == "6" and meta["total_steps"] == "6" and len(json.loads(meta["history"])) >= 1
    # a checkpoint beyond this run is refused, not silently trained on
    with pytest.raises(ValueError, match="beyond this run's 4 steps"):
        fit(_toy(), _loss, _batch, LoopConfig(steps=4, progress=False), ckpt_dir=tmp_path)
    # flipped bytes inside a tensor are caught by the digest
    raw = bytearray((tmp_path / CKPT_NAME).read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / CKPT_NAME).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="digest"):
        load_checkpoint(tmp_path, _toy())
    (tmp_path / CKPT_NAME).write_bytes(bytes(raw[:100]))
    with pytest.raises(ValueError, match="unreadable"):
        load_checkpoint(tmp_path, _toy())
    # a file without our metadata (e.g. the old two-file format's weights) is refused
    save_file({"model.0.weight": torch.zeros(8, 4)}, str(tmp_path / CKPT_NAME))
    with pytest.raises(ValueError, match="'format'"):
        load_checkpoint(tmp_path, _toy())
    # a checkpoint of another model names the mismatch
    save_checkpoint(tmp_path, torch.nn.Linear(4, 2), None, 1, [])
    with pytest.raises(ValueError, match="does not match the model"):
        load_checkpoint(tmp_path, _toy())


def test_trainers_checkpoint_during_the_run_by_default(tmp_path):
    assert default_ckpt_every(20) == 2 and default_ckpt_every(5) == 1 and default_ckpt_every(5000) == 500

    def crash(model, batch, step):
        if step == 15:
            raise KeyboardInterrupt
        return _loss(model, batch, step)

    with pytest.raises(KeyboardInterrupt):
        fit(_toy(), crash, _batch, LoopConfig(steps=20, progress=False), ckpt_dir=tmp_path)
    assert load_checkpoint(tmp_path, _toy())[0] == 14


def test_train_codec_checkpoints_mid_run(tmp_path, monkeypatch):
    from vlmbook.codec import models

    saved = []
    import vlmbook.loop as loop

    real = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda *a, **k: saved.append(a[3]) or real(*a, **k))
    spec = models.TrainSpec(steps=4, batch=1, crop=64, lr=1e-3)
    torch.manual_seed(0)
    models.train_codec(models.HyperpriorCodec(models.CodecConfig.tiny()), 0.01, spec, ckpt_dir=str(tmp_path))
    assert saved == [1, 2, 3, 4]  # ten a run, at most one a step: every step of a 4-step run


# -- loop.fit: stages, accumulation, evaluation -----------------------------------------------
def test_accumulation_equals_one_big_batch():
    def batch(step):
        return _batch(step)

    def big(step):
        a, b = _batch(2 * step), _batch(2 * step + 1)
        return torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])

    m1, m2 = _toy(), _toy()
    fit(m1, _loss, batch, LoopConfig(steps=5, lr=1e-2, accum=2, progress=False))
    fit(m2, _loss, big, LoopConfig(steps=5, lr=1e-2, progress=False))
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_two_optimisers_gan_style_and_eval_hook(tmp_path):
    # A generator and a discriminator, each with its own optimiser, trained on the same batches.
    class GAN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.g, self.d = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)

    def g_loss(m, b, s):
        return -m.d(m.g(b[0])).mean()

    def d_loss(m, b, s):
        return torch.relu(1 - m.d(b[0])).mean() + torch.relu(1 + m.d(m.g(b[0]).detach())).mean()

    def run(ckpt=None, crash_at=None):
        torch.manual_seed(0)
        m = GAN()
        d0 = m.d.weight.detach().clone()

        def dl(mm, b, s):
            if s == crash_at:
                raise KeyboardInterrupt
            return d_loss(mm, b, s)

        stages = [Stage("gen", g_loss, m.g.parameters()), Stage("disc", dl, m.d.parameters(), lr=5e-3, start=2)]
        h = fit(m, stages, _batch, LoopConfig(steps=8, lr=1e-2, log_every=1, eval_every=4, ckpt_every=3,
                                              progress=False),
                ckpt_dir=ckpt, eval_fn=lambda mm, s: {"d_norm": float(mm.d.weight.norm()), "train": mm.training})
        return m, h, d0

    m, h, d0 = run()
    assert [r["step"] for r in h] == list(range(8))
    assert "disc/loss" not in h[1] and "disc/loss" in h[2] and "gen/loss" in h[0]
    assert [r["step"] for r in h if "eval/d_norm" in r] == [3, 7] and h[3]["eval/train"] == 0.0
    # the generator's loss never moved the discriminator: only its own optimiser did
    torch.manual_seed(0)
    only_gen = GAN()
    fit(only_gen, [Stage("gen", g_loss, only_gen.g.parameters())], _batch,
        LoopConfig(steps=8, lr=1e-2, progress=False))
    assert torch.equal(only_gen.d.weight, d0) and not torch.equal(m.d.weight, d0)
    # interrupted at step 5 (checkpoint at 3), resumed: identical weights and history
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, crash_at=5)
    m2, h2, _ = run(tmp_path)
    assert h2 == h and all(torch.equal(a, b) for a, b in zip(m.parameters(), m2.parameters()))


def test_fit_argument_errors():
    with pytest.raises(TypeError, match="Stage"):
        fit(_toy(), ["nope"], _batch, LoopConfig(steps=1, progress=False))
    with pytest.raises(ValueError, match="names must differ"):
        m = _toy()
        fit(m, [Stage("a", _loss, m[0].parameters()), Stage("a", _loss, m[2].parameters())], _batch,
            LoopConfig(steps=1, progress=False))
    with pytest.raises(ValueError, match="every"):
        Stage("a", _loss, [], every=0)
    with pytest.raises(ValueError, match="accum"):
        LoopConfig(accum=0)
    with pytest.raises(TypeError, match="eval_fn must return a dict"):
        fit(_toy(), _loss, _batch, LoopConfig(steps=1, progress=False), eval_fn=lambda m, s: 1.0)


def test_checkpoint_of_a_model_with_tied_weights(tmp_path):
    # a language model's head often shares the embedding matrix; safetensors refuses shared storage
    from vlmbook.loop import load_checkpoint, save_checkpoint

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(5, 3)
            self.head = torch.nn.Linear(3, 5, bias=False)
            self.head.weight = self.emb.weight

    torch.manual_seed(0)
    m = Tied()
    save_checkpoint(tmp_path, m, None, step=1, history=[{"step": 0, "loss": 0.5}], total_steps=2)
    m2 = Tied()
    load_checkpoint(tmp_path, m2, None, total_steps=2)
    assert torch.equal(m2.emb.weight, m.emb.weight) and m2.head.weight is m2.emb.weight
