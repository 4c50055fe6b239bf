"""Fuzzing every reader of untrusted input (bounded): mutated image files, configs, weights,
training checkpoints and RGBA .vlmb files either load or raise the documented error type."""
from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlmbook.codec import BitstreamError, CodecConfig, HyperpriorCodec
from vlmbook.codec import fileformat as ff
from vlmbook.data import load_image
from vlmbook.loop import CKPT_NAME, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CODEC = ROOT / "vlmbook" / "artifacts" / "codec-q3-v2"


def _mutate(raw: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(raw)
    kind = int(rng.integers(4))
    if kind == 0:
        return bytes(b[: int(rng.integers(0, len(b)))])
    for _ in range(int(rng.integers(1, 8))):
        b[int(rng.integers(len(b)))] = int(rng.integers(256))
    if kind == 2:
        b += rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    if kind == 3:  # a plausible header with a huge size: the cap must stop it before decoding
        b[16:24] = struct.pack(">II", int(rng.integers(1, 2**31)), int(rng.integers(1, 2**31)))
    return bytes(b)


def test_fuzz_image_files(tmp_path):
    rng = np.random.default_rng(0)
    seeds = []
    for fmt, arr in [("PNG", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)),
                     ("PNG", (rng.integers(0, 65535, (24, 32))).astype(np.uint16)),
                     ("JPEG", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)),
                     ("PNG", rng.integers(0, 255, (24, 32, 4), dtype=np.uint8))]:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt)
        seeds.append(buf.getvalue())
    counts = {"ok": 0, "error": 0}
    p = tmp_path / "f.png"
    for trial in range(400):
        p.write_bytes(_mutate(seeds[trial % len(seeds)], rng))
        try:
            a = load_image(p, max_pixels=1 << 20)
            assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
            counts["ok"] += 1
        except ValueError:
            counts["error"] += 1
    assert counts["error"] >= 100, counts


def _random_json_value(rng: np.random.Generator):
    choices = [lambda: int(rng.integers(-5, 5)), lambda: 10 ** int(rng.integers(3, 15)), lambda: float("nan"),
               lambda: float(rng.normal()), lambda: "x" * int(rng.integers(0, 4)), lambda: None, lambda: [1, 2],
               lambda: {"a": 1}, lambda: True, lambda: -1.5]
    return choices[int(rng.integers(len(choices)))]()


def test_fuzz_saved_model_configs_and_weights(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "m"
    shutil.copytree(CODEC, d)
    good_cfg = (d / "config.json").read_text()
    good_w = (d / "model.safetensors").read_bytes()
    outcomes = {"ok": 0, "error": 0}
    for trial in range(120):
        meta = json.loads(good_cfg)
        if trial % 2 == 0:
            field = ["N", "M", "model", "family", "lmbda"][int(rng.integers(5))]
            meta["config"][field] = _random_json_value(rng)
            if trial % 6 == 0:
                meta["config"].pop(["N", "M", "lmbda"][int(rng.integers(3))])
            (d / "config.json").write_text(json.dumps(meta))
            (d / "model.safetensors").write_bytes(good_w)
        else:
            (d / "config.json").write_text(good_cfg)
            (d / "model.safetensors").write_bytes(_mutate(good_w, rng) if trial % 4 == 1 else
                                                  _flip_tensor_bytes(good_w, rng))
        try:
            HyperpriorCodec.from_pretrained(d)
            outcomes["ok"] += 1
        except ValueError:
            outcomes["error"] += 1
    assert outcomes["error"] >= 60, outcomes


def _flip_tensor_bytes(raw: bytes, rng: np.random.Generator) -> bytes:
    # keep the header valid, change data: NaNs, corrupt tables and odd values must be caught at load
    (n,) = struct.unpack_from("<Q", raw, 0)
    b = bytearray(raw)
    start = 8 + n
    for _ in range(int(rng.integers(1, 20))):
        i = int(rng.integers(start, len(b) - 4))
        b[i:i + 4] = struct.pack("<f", [float("nan"), float("inf"), 1e30, -7.0][int(rng.integers(4))])
    return bytes(b)


def test_fuzz_training_checkpoints(tmp_path):
    rng = np.random.default_rng(2)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path, model, opt, 3, [{"step": 2, "loss": 1.0}], total_steps=10)
    good = (tmp_path / CKPT_NAME).read_bytes()
    errors = 0
    for _ in range(150):
        (tmp_path / CKPT_NAME).write_bytes(_mutate(good, rng))
        try:
            load_checkpoint(tmp_path, torch.nn.Linear(3, 2), torch.optim.AdamW(torch.nn.Linear(3, 2).parameters()),
                            total_steps=10)
        except ValueError:
            errors += 1
    assert errors >= 140  # a flipped bit anywhere is caught by the digest or the parser


def test_fuzz_rgba_files_with_valid_crc():
    torch.manual_seed(0)
    model = HyperpriorCodec(CodecConfig.tiny())
    model.update()
    img = np.random.default_rng(3).integers(0, 255, (20, 28, 4), dtype=np.uint8)
    good = ff.encode_image(img, quality=2, model=model.eval())
    rng = np.random.default_rng(4)
    counts = {"ok": 0, "error": 0}
    for _ in range(300):
        b = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
        if rng.random() < 0.3:
            b += rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        off = ff._HEAD.size + 4 * b[16] if len(b) > 16 else 0
        if 0 < off <= len(b) - 4:
            b[off:off + 4] = struct.pack("<I", zlib.crc32(bytes(b[off + 4:]), zlib.crc32(bytes(b[:off]))) & 0xFFFFFFFF)
        try:
            out = ff.decode_image(bytes(b), model=model)
            assert out.dtype == np.uint8 and out.shape[2] in (1, 2, 3, 4)
            counts["ok"] += 1
        except BitstreamError:
            counts["error"] += 1
    assert counts["error"] >= 200, counts
