"""Tests for the shared pieces: config, device, hub, loop, plot, bench, cli, nb."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from vlmbook import hub
from vlmbook.config import Config
from vlmbook.device import autocast, describe_machine, get_device, num_threads, seed_everything
from vlmbook.loop import LoopConfig, cosine_schedule, fit, load_checkpoint, to_device


@dataclasses.dataclass
class ToyConfig(Config):
    width: int = 4
    rate: float = 0.5
    kind: str = "a"
    dims: tuple = (1, 2)

    def validate(self) -> None:
        super().validate()
        self.check_positive("width")
        self.check_range("rate", 0.0, 1.0)
        self.check_choice("kind", ("a", "b"))

    @classmethod
    def tiny(cls) -> "ToyConfig":
        return cls()

    @classmethod
    def base(cls) -> "ToyConfig":
        return cls(width=64)


class Toy(torch.nn.Module, hub.PretrainedMixin):
    config_class = ToyConfig

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.inp = torch.nn.Linear(config.width, config.width)
        self.out = torch.nn.Linear(config.width, 1)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        return self.out(torch.tanh(self.inp(x)))


def build_toy(seed: int) -> Toy:
    torch.manual_seed(seed)
    return Toy(ToyConfig.tiny())


# -- config ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [({"width": 0}, "width"), ({"rate": 2.0}, "rate"),
                                           ({"kind": "z"}, "kind"), ({"width": 1.5}, "width")])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"ToyConfig.{field}"):
        ToyConfig(**kwargs)


def test_config_type_checks_work_with_string_annotations():
    # LoopConfig's module uses `from __future__ import annotations`, so its field types are strings.
    with pytest.raises(ValueError, match="LoopConfig.steps must be an int"):
        LoopConfig(steps=2.5)
    with pytest.raises(ValueError, match="LoopConfig.lr must be a number"):
        LoopConfig(lr="fast")
    with pytest.raises(ValueError, match="LoopConfig.progress must be True or False"):
        LoopConfig(progress=1)


def test_config_presets_and_json(tmp_path):
    assert ToyConfig.presets() == ["tiny", "base"]
    assert ToyConfig.preset("base").width == 64
    assert ToyConfig.preset("tiny", rate=0.1).rate == 0.1
    with pytest.raises(ValueError, match="no preset"):
        ToyConfig.preset("huge")
    with pytest.raises(ValueError, match="no preset"):
        ToyConfig.preset("validate")
    cfg = ToyConfig(width=8, dims=(3, 4))
    cfg.save_json(tmp_path / "c.json")
    assert ToyConfig.load_json(tmp_path / "c.json") == cfg
    with pytest.raises(ValueError, match="no field"):
        ToyConfig.from_dict({"width": 2, "colour": 1})
    with pytest.raises(ValueError, match="width"):
        cfg.replace(width=-1)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ToyConfig.load_json(tmp_path / "bad.json")


def test_loop_config_validation():
    with pytest.raises(ValueError, match="LoopConfig.steps"):
        LoopConfig(steps=0)
    with pytest.raises(ValueError, match="LoopConfig.warmup"):
        LoopConfig(warmup=-1)
    with pytest.raises(ValueError, match="LoopConfig.beta2"):
        LoopConfig(beta2=1.0)


def test_fit_passes_beta2_to_adamw():
    """One AdamW step by hand with the same betas equals fit's first step (warm-up 0, cosine at 1)."""
    cfg = LoopConfig(steps=1, lr=1e-2, beta2=0.95, progress=False, grad_clip=0.0)
    m, ref = build_toy(0), build_toy(0)
    fit(m, _loss, _batch, cfg)
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0)
    out = _loss(ref, _batch(0), 0)
    (out[0] if isinstance(out, tuple) else out).backward()
    opt.step()
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(m.parameters(), ref.parameters()))


# -- device ----------------------------------------------------------------------------
def test_device_helpers():
    assert get_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert get_device().type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA"):
            get_device("cuda")
    with autocast("cpu"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    g = seed_everything(3)
    a = torch.rand(3, generator=g)
    assert torch.equal(a, torch.rand(3, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError):
        seed_everything(-1)
    before = torch.get_num_threads()
    with num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert {"platform", "cpu_count", "torch", "device"} <= set(describe_machine())
    with pytest.raises(ValueError, match="positive int"):
        with num_threads(0):
            pass


def test_default_threads_is_one_unless_the_environment_says(monkeypatch):
    from vlmbook.device import default_threads

    monkeypatch.delenv("VLMBOOK_THREADS", raising=False)
    assert default_threads() == 1
    monkeypatch.setenv("VLMBOOK_THREADS", "3")
    assert default_threads() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("VLMBOOK_THREADS", bad)
        with pytest.raises(ValueError, match="VLMBOOK_THREADS"):
            default_threads()


def test_every_chapter_starts_by_printing_versions_and_device_on_one_thread(capsys, monkeypatch):
    import transformers

    from vlmbook import __version__, nb

    monkeypatch.delenv("VLMBOOK_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        nb.start_chapter(9)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    for line in (f"torch: {torch.__version__}", f"transformers: {transformers.__version__}",
                 f"vlmbook: {__version__}", "peft: ", "compressai: ", "python: ", "torch_threads: 1",
                 "selected device: "):
        assert line in out, line
    # every chapter's first code cell calls it (so each chapter shows what it ran with)
    from pathlib import Path

    for chapter in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.py")):
        code_cells = [c for c in chapter.read_text().split("# %%")[1:] if not c.startswith(" [markdown]")]
        assert "nb.start_chapter(" in code_cells[0], chapter.name


# -- hub -------------------------------------------------------------------------------
def test_save_load_roundtrip_bit_exact(tmp_path):
    m = build_toy(0)
    m.steps += 5
    m.save_pretrained(tmp_path / "toy")
    meta = json.loads((tmp_path / "toy" / "config.json").read_text())
    assert meta["class"].endswith("Toy") and meta["config"]["width"] == 4
    m2 = Toy.from_pretrained(tmp_path / "toy")
    for (k, v), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x = torch.randn(3, 4)
    assert torch.equal(m(x), m2(x))
    assert hub.state_digest(m) == hub.state_digest(m2)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        Toy.from_pretrained(tmp_path / "nothing")
    build_toy(0).save_pretrained(tmp_path / "toy")
    (tmp_path / "toy" / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="safetensors"):
        Toy.from_pretrained(tmp_path / "toy")
    build_toy(0).save_pretrained(tmp_path / "toy2")
    meta = json.loads((tmp_path / "toy2" / "config.json").read_text())
    meta["class"] = "somewhere.Else"
    (tmp_path / "toy2" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not a"):
        Toy.from_pretrained(tmp_path / "toy2")


def test_tied_weights_save_and_load(tmp_path):
    class Tied(torch.nn.Module, hub.PretrainedMixin):
        config_class = ToyConfig

        def __init__(self, config):
            super().__init__()
            self.config = config
            self.emb = torch.nn.Embedding(5, config.width)
            self.head = torch.nn.Linear(config.width, 5, bias=False)
            self.head.weight = self.emb.weight

    import sys

    setattr(sys.modules[__name__], "Tied", Tied)
    Tied.__module__, Tied.__qualname__ = __name__, "Tied"
    m = Tied(ToyConfig())
    m.save_pretrained(tmp_path / "t")
    m2 = Tied.from_pretrained(tmp_path / "t")
    assert torch.equal(m2.head.weight, m.emb.weight) and m2.head.weight is m2.emb.weight


def test_artifacts_build_cache_and_load(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMBOOK_CACHE", str(tmp_path))
    spec = hub.register_artifact(hub.ArtifactSpec("toy-test", "1", "tests.test_core:build_toy", seed=7))
    assert "toy-test" in hub.artifact_specs()
    m = hub.load_artifact("toy-test", Toy)
    assert (tmp_path / spec.key / "model.safetensors").is_file()
    assert json.loads((tmp_path / spec.key / "artifact.json").read_text())["seed"] == 7
    # rebuilding with the same seed reproduces the artifact exactly
    assert hub.state_digest(m) == hub.state_digest(build_toy(7))
    assert hub.state_digest(hub.load_artifact("toy-test", Toy, rebuild=True)) == hub.state_digest(m)
    with pytest.raises(ValueError, match="unknown artifact"):
        hub.load_artifact("nope", Toy)


# -- loop ------------------------------------------------------------------------------
def _batch(step: int):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(16, 4, generator=g)
    return x, x.sum(1, keepdim=True).sin()


def _loss(model, batch, step):
    x, y = batch
    loss = ((model(x) - y) ** 2).mean()
    return loss, {"mse": float(loss.detach())}


def test_fit_learns_and_is_deterministic():
    cfg = LoopConfig(steps=60, lr=1e-2, log_every=20, progress=False)
    m1, m2 = build_toy(0), build_toy(0)
    h1 = fit(m1, _loss, _batch, cfg)
    h2 = fit(m2, _loss, _batch, cfg)
    assert [r["step"] for r in h1] == [0, 20, 40, 59]
    assert h1 == h2 and hub.state_digest(m1) == hub.state_digest(m2)
    assert h1[-1]["loss"] < h1[0]["loss"]
    assert "mse" in h1[0]


def test_interrupted_run_resumes_exactly(tmp_path):
    cfg = LoopConfig(steps=40, lr=1e-2, log_every=5, ckpt_every=10, progress=False)
    straight = build_toy(0)
    fit(straight, _loss, _batch, cfg)

    def crashing_loss(model, batch, step):
        if step == 25:
            raise KeyboardInterrupt
        return _loss(model, batch, step)

    victim = build_toy(0)
    with pytest.raises(KeyboardInterrupt):
        fit(victim, crashing_loss, _batch, cfg, ckpt_dir=tmp_path / "ck")
    step, _ = load_checkpoint(tmp_path / "ck", build_toy(1))
    assert step == 20  # the last completed checkpoint
    resumed = build_toy(1)  # fresh weights: everything must come from the checkpoint
    fit(resumed, _loss, _batch, cfg, ckpt_dir=tmp_path / "ck")
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert not list(tmp_path.glob("ck/*.pt")) and not list(tmp_path.glob("ck/*.pkl"))


def test_fit_rejects_bad_input():
    m = build_toy(0)
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        fit(m, _loss, _batch, LoopConfig(steps=2, progress=False))
    with pytest.raises(FloatingPointError):
        fit(build_toy(0), lambda mo, b, s: mo(b[0]).sum() * float("nan"), _batch, LoopConfig(steps=2, progress=False))


def test_schedule_and_to_device():
    assert cosine_schedule(0, 100, 10) == pytest.approx(0.1)
    assert cosine_schedule(10, 100, 10) == pytest.approx(1.0)
    assert cosine_schedule(100, 100, 10) == pytest.approx(0.1)
    b = to_device({"a": [torch.ones(1)], "b": "text"}, torch.device("cpu"))
    assert b["b"] == "text" and b["a"][0].device.type == "cpu"


# -- plot ------------------------------------------------------------------------------
def test_plot_primitives(tmp_path):
    from vlmbook.plot import figure, heatmap, image_grid, line_plot, show, to_png

    fig = line_plot({"a": ([1, 2, 3], [1, 4, 9]), "b": ([1, 2, 3], [2, 3, 4])}, "x", "y", logy=True)
    assert len(fig.axes[0].lines) == 2
    assert to_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"
    show(fig, tmp_path / "f.png")  # outside IPython: saves, displays nothing
    assert (tmp_path / "f.png").stat().st_size > 1000
    grid = image_grid([np.zeros((8, 8, 3)), torch.ones(3, 8, 8), np.zeros((8, 8), np.uint8)], ["a", "b", "c"], ncols=2)
    assert len(grid.axes) == 4
    assert heatmap(np.eye(3), ["a", "b", "c"], ["x", "y", "z"]).axes
    with pytest.raises(ValueError):
        heatmap(np.zeros(3))
    with pytest.raises(ValueError):
        image_grid([])
    with pytest.raises(ValueError):
        figure(0, 1)


def test_show_emits_only_png_in_ipython(monkeypatch):
    import IPython
    import IPython.display

    from vlmbook.plot import line_plot, show

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append((obj, raw)))
    show(line_plot({"a": ([0, 1], [0, 1])}))
    (obj, raw), = shown
    assert raw and set(obj) == {"image/png"}


# -- bench and cli ---------------------------------------------------------------------
def test_bench_runner_writes_record(tmp_path, capsys):
    from vlmbook.bench import BenchResult, available, run_benchmark

    assert "data" in available()
    res = run_benchmark("data", quick=True, out_dir=tmp_path)
    assert isinstance(res, BenchResult) and res.unit == "samples/s" and res.headline > 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("data: ") and out[-1].endswith(" samples/s")
    rec = json.loads((tmp_path / "data.quick.json").read_text())
    assert rec["machine"]["cpu_count"] and rec["table"]["64px"]["samples_per_s"] == res.headline
    assert rec["options"] == {}
    with pytest.raises(ValueError, match="unknown benchmark"):
        run_benchmark("nope")
    with pytest.raises(ValueError, match="takes no option 'seeds'"):
        run_benchmark("data", quick=True, out_dir=tmp_path, seeds=2)


def test_cli(capsys):
    from vlmbook.cli import main

    assert main(["info"]) == 0
    assert "vlmbook" in capsys.readouterr().out
    assert main(["artifacts", "list"]) == 0
    assert main(["artifacts", "build", "no-such-artifact"]) == 2
    assert "unknown artifact" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench"])


def test_nb_helpers(capsys):
    from vlmbook import nb

    threads = torch.get_num_threads()
    nb.start_chapter(9, quiet=True)
    torch.set_num_threads(threads)
    assert nb.elapsed() >= 0
    nb.report_runtime()
    assert capsys.readouterr().out.startswith("Chapter 9 executed in")
