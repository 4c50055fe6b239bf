"""Chapter 3: the hyperprior's real compress/decompress, the .vlmb format, fuzzing and the CLI."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from vlmbook.codec import BitstreamError, CodecConfig, HyperpriorCodec, pad_to
from vlmbook.codec import fileformat as ff
from vlmbook.codec.exact import exact_forward
from vlmbook.codec.metrics import to_tensor


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = HyperpriorCodec(CodecConfig.tiny())
    m.update()
    return m.eval()


def _img(h=37, w=53, c=3, seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, c))
    return np.clip(base + rng.normal(0, 20, (h, w, c)), 0, 255).astype(np.uint8)


def test_config_validation():
    with pytest.raises(ValueError, match="model"):
        CodecConfig(model="vae")
    with pytest.raises(ValueError, match="family"):
        CodecConfig(family="cauchy")
    with pytest.raises(ValueError, match="N"):
        CodecConfig(N=0)


@pytest.mark.parametrize("kind", ["hyperprior", "meanscale"])
def test_compress_decompress_matches_rounded_forward(kind):
    torch.manual_seed(0)
    m = HyperpriorCodec(CodecConfig.tiny().replace(model=kind)).eval()
    m.update()
    x = pad_to(to_tensor(_img(64, 64)))
    streams, zs = m.compress(x)
    assert zs == (1, 1) and all(isinstance(s, bytes) for s in streams)
    rec = m.decompress(streams, zs)
    with torch.no_grad():
        out = m(x, mode="round")
    # z and y decode exactly; the transforms run in fixed point (§3.7), so the reconstruction is the
    # fixed-point synthesis of the rounded fixed-point analysis, and close to the float forward.
    assert rec.shape == x.shape
    if kind == "hyperprior":  # scales do not change y_hat
        y_hat = torch.round(exact_forward(m.g_a, x))
        assert torch.equal(rec, exact_forward(m.g_s, y_hat).clamp(0, 1))
        assert (y_hat != out["y_hat"]).float().mean() < 0.01  # only latents on a rounding boundary move
        assert float((rec - out["x_hat"].clamp(0, 1)).abs().mean()) < 1e-3
    bits = sum(len(s) for s in streams) * 8
    est = float(sum((-torch.log2(v)).sum() for v in out["likelihoods"].values()))
    assert bits < 1.2 * est + 8 * 200  # real file ~ estimated rate (+ stream headers)


def test_forward_shapes_modes_and_errors(model):
    x = torch.rand(2, 3, 64, 128)
    for mode in ("noise", "round", "ste"):
        out = model(x, mode)
        assert out["x_hat"].shape == x.shape and out["y"].shape == (2, model.config.M, 4, 8)
        assert out["likelihoods"]["z"].shape == (2, model.config.N, 1, 2)
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, 60, 64))
    with pytest.raises(ValueError):
        model(x, "floor")


def test_save_pretrained_round_trip_keeps_tables(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    m2 = HyperpriorCodec.from_pretrained(tmp_path / "m")
    t1, t2 = model.gaussian_conditional.tables(), m2.gaussian_conditional.tables()
    assert np.array_equal(t1.cdf, t2.cdf)
    assert np.array_equal(model.entropy_bottleneck.tables().cdf, m2.entropy_bottleneck.tables().cdf)


@pytest.mark.parametrize("shape,mode", [((37, 53, 3), "RGB"), ((20, 9, 1), "L"), ((65, 64, 4), "RGBA"),
                                        ((1, 1, 2), "LA")])
def test_file_round_trip_any_size_and_mode(model, shape, mode):
    a = _img(shape[0], shape[1], shape[2])
    data = ff.encode_image(a, quality=2, model=model)
    info = ff.parse_header(data)
    assert (info["height"], info["width"], info["mode"], info["quality"]) == (shape[0], shape[1], mode, 2)
    out = ff.decode_image(data, model=model)
    assert out.shape == a.shape and out.dtype == np.uint8
    if shape[2] in (2, 4):
        assert np.array_equal(out[..., -1], a[..., -1])  # alpha is lossless


def test_pillow_modes_converted(model):
    p = Image.fromarray(_img(16, 16)).convert("P")
    assert ff.image_to_array(p)[1] == "RGB"
    i16 = Image.fromarray((np.arange(256, dtype=np.uint16).reshape(16, 16) * 256))
    a, mode = ff.image_to_array(i16)
    assert mode == "L" and a.dtype == np.uint8 and a.max() == 254  # 65280 * 255 / 65535
    with pytest.raises(ValueError):
        ff.encode_image(_img(), quality=9, model=model)
    with pytest.raises(ValueError):
        ff.image_to_array(np.zeros((4, 4, 5), np.uint8))


def test_header_caps_checked_before_allocating(model):
    data = bytearray(ff.encode_image(_img(8, 8), quality=1, model=model))
    struct.pack_into("<II", data, 8, 100_000, 100_000)  # absurd size, CRC not fixed
    with pytest.raises(BitstreamError, match="caps"):
        ff.parse_header(bytes(data))


def _fix_crc(b: bytearray) -> bytes:
    ns = b[16]
    off = 17 + 4 * ns
    if len(b) >= off + 4:
        struct.pack_into("<I", b, off, zlib.crc32(bytes(b[off + 4:]), zlib.crc32(bytes(b[:off]))) & 0xFFFFFFFF)
    return bytes(b)


def test_fuzz_2000_mutated_files(model):
    """Mutated, truncated, extended and random files: decode succeeds or raises BitstreamError.

    Half of the mutations also recompute the CRC, so the entropy decoders themselves are attacked.
    """
    good = ff.encode_image(_img(24, 40), quality=3, model=model)
    rng = np.random.default_rng(0)
    outcomes = {"ok": 0, "error": 0}
    for trial in range(2000):
        b = bytearray(good)
        kind = trial % 5
        if kind == 0:
            b = b[: int(rng.integers(0, len(b)))]
        elif kind == 1:
            b = bytearray(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
            if trial % 2:
                b[:4] = ff.MAGIC
        else:
            for _ in range(int(rng.integers(1, 6))):
                b[int(rng.integers(len(b)))] = int(rng.integers(256))
            if kind == 3:
                b += rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
            if kind >= 3:
                b = bytearray(_fix_crc(b))
        try:
            out = ff.decode_image(bytes(b), model=model)
            assert out.dtype == np.uint8 and out.ndim == 3
            outcomes["ok"] += 1
        except BitstreamError:
            outcomes["error"] += 1
    assert sum(outcomes.values()) == 2000
    assert outcomes["error"] >= 1800, outcomes


def test_cli_compress_decompress(tmp_path, model, monkeypatch):
    from vlmbook import cli

    monkeypatch.setattr(ff, "_default_model", lambda q: model)
    src = tmp_path / "in.png"
    Image.fromarray(_img(30, 45, 4), "RGBA").save(src)
    assert cli.main(["compress", str(src), str(tmp_path / "a.vlmb"), "--quality", "1"]) == 0
    assert cli.main(["decompress", str(tmp_path / "a.vlmb"), str(tmp_path / "out.png")]) == 0
    out = Image.open(tmp_path / "out.png")
    assert out.size == (45, 30) and out.mode == "RGBA"
    (tmp_path / "bad.vlmb").write_bytes(b"VLMB" + b"\0" * 30)
    assert cli.main(["decompress", str(tmp_path / "bad.vlmb"), str(tmp_path / "x.png")]) == 2
    assert cli.main(["compress", str(tmp_path / "missing.png"), str(tmp_path / "y.vlmb")]) == 2


def test_training_is_deterministic_and_takes_a_folder():
    from vlmbook.codec.models import TrainSpec, train_codec
    from vlmbook.hub import state_digest

    digests = []
    for _ in range(2):
        torch.manual_seed(0)
        m = HyperpriorCodec(CodecConfig.tiny())
        hist = train_codec(m, 0.01, TrainSpec(steps=2, batch=1, crop=64))
        digests.append(state_digest(m))
    assert digests[0] == digests[1] and set(hist[-1]) >= {"bpp", "psnr", "aux"}
    folder = torch.rand(2, 3, 80, 96)
    hist = train_codec(HyperpriorCodec(CodecConfig.tiny()), 0.01, TrainSpec(steps=1, batch=2, crop=64), images=folder)
    assert len(hist) == 1
    with pytest.raises(ValueError, match="crop"):
        TrainSpec(crop=100)


def test_float_mismatch_demo(model):
    from vlmbook.codec.models import float_decode_mismatch

    r = float_decode_mismatch(model, to_tensor(_img(64, 64)), rel_noise=0.0)
    assert r["indexes_changed"] == 0 and r["wrong_symbols"] == 0 and not r["decode_raised"]
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        m.h_s[-2].bias.fill_(2.0)  # an untrained model predicts tiny scales; move them into the table
    r = float_decode_mismatch(m, to_tensor(_img(64, 64)), rel_noise=0.05)
    assert r["indexes_changed"] > 0 and (r["decode_raised"] or r["wrong_symbols"] > 0)
    # the remedy: the integer network, channels summed in another order, picks the same tables
    assert r["reordered_integer_indexes_changed"] == 0 and r["reordered_integer_decode_exact"]
    assert 0 < r["nearest_boundary_relative"] < 1
