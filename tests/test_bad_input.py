"""Bad input gets a clear ValueError/TypeError naming the problem: images, the CLI, saved models, arguments."""
from __future__ import annotations

import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vlmbook import hub
from vlmbook.cli import main as cli_main
from vlmbook.config import Config
from vlmbook.data import ImageFolder, Museum, load_image, random_crops

ROOT = Path(__file__).resolve().parents[1]
CODEC = ROOT / "vlmbook" / "artifacts" / "codec-q3-v2"


# -- images --------------------------------------------------------------------------------
def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    a = load_image(tmp_path / "g16.png")
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert a[0, 0, 0] == 0 and a[-1, -1, 0] == 255
    expect = np.round(ramp / 257.0).astype(np.uint8)
    assert np.array_equal(a[..., 0], expect) and np.array_equal(a[..., 0], a[..., 2])
    assert (a == 255).mean() < 0.01  # it was 99.6 % before the fix
    assert np.array_equal(load_image(tmp_path / "g16.png", mode="L")[..., 0], expect)


def test_size_cap_is_checked_from_the_header_before_decoding(tmp_path, monkeypatch):
    Image.new("1", (20000, 20000)).save(tmp_path / "huge.png")  # 400 M px in a few KB
    with pytest.raises(ValueError, match="20000x20000 = 400,000,000 pixels, over the limit"):
        load_image(tmp_path / "huge.png")  # was PIL.Image.DecompressionBombError
    Image.new("RGB", (64, 48)).save(tmp_path / "small.png")

    def no_decoding(self):
        raise AssertionError("decoded before the size check")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ValueError, match="64x48 = 3,072 pixels, over the limit of 1,000"):
        load_image(tmp_path / "small.png", max_pixels=1000)


def test_image_folder_skips_oversized_and_broken_files_with_a_warning(tmp_path):
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "a.png")
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        folder = ImageFolder(tmp_path)
    assert [p.name for p in folder.paths] == ["a.png"]
    assert sorted(p.name for p in folder.skipped) == ["bomb.png", "c.jpg"]
    assert sum("over the limit" in str(x.message) for x in w) == 1
    with pytest.raises(TypeError, match="index must be an int"):
        folder[1.5]


def test_load_image_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "nope.png")
    (tmp_path / "t.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(tmp_path / "t.png")
    with pytest.raises(ValueError, match="mode must be"):
        load_image(tmp_path / "t.png", mode="CMYK")


# -- the CLI -------------------------------------------------------------------------------
def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli_main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_cli_user_errors_are_one_line_and_never_destroy_input(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save("rgb.png")
    Image.fromarray(rng.integers(0, 255, (40, 48, 4), dtype=np.uint8), "RGBA").save("rgba.png")
    Path("adir").mkdir()
    original = Path("rgb.png").read_bytes()
    cases = [
        (("compress", "rgb.png", "adir"), "output adir is a directory"),
        (("compress", "adir", "x.vlmb"), "input adir is a directory"),
        (("compress", "rgb.png", "rgb.png"), "is the input file; refusing to overwrite"),
        (("compress", "missing.png", "x.vlmb"), "no such file"),
        (("decompress", "rgb.png", "x.png"), "not a .vlmb file"),
    ]
    for argv, msg in cases:
        code, err = _cli(capsys, *argv)
        assert code == 2 and msg in err and len(err.splitlines()) == 1, (argv, err)
    assert Path("rgb.png").read_bytes() == original
    assert _cli(capsys, "compress", "rgba.png", "a.vlmb")[0] == 0
    for argv, msg in [(("decompress", "a.vlmb", "out.jpg"), ".jpg cannot hold a RGBA image"),
                      (("decompress", "a.vlmb", "out.xyz"), "unknown output extension '.xyz'"),
                      (("decompress", "a.vlmb", "adir"), "output adir is a directory"),
                      (("decompress", "a.vlmb", "a.vlmb"), "is the input file")]:
        code, err = _cli(capsys, *argv)
        assert code == 2 and msg in err and len(err.splitlines()) == 1, (argv, err)
    assert not Path("out.jpg").exists() and not list(tmp_path.glob(".*.tmp"))
    assert _cli(capsys, "decompress", "a.vlmb", "out.png")[0] == 0
    assert np.asarray(Image.open("out.png")).shape == (40, 48, 4)


# -- saved models and configs ---------------------------------------------------------------
@pytest.fixture
def codec_dir(tmp_path) -> Path:
    d = tmp_path / "codec"
    shutil.copytree(CODEC, d)
    return d


def _edit_config(d: Path, fn) -> None:
    p = d / "config.json"
    p.write_text(fn(p.read_text()))


def _load(d: Path):
    from vlmbook.codec.models import HyperpriorCodec

    return HyperpriorCodec.from_pretrained(d)


def _set(**kw):
    def f(text):
        m = json.loads(text)
        m["config"].update(kw)
        return json.dumps(m)
    return f


@pytest.mark.parametrize("edit, message", [
    (lambda s: "[1, 2]", "must hold a JSON object"),                                # was AttributeError
    (lambda s: json.dumps({"class": json.loads(s)["class"]}), "no 'config' field"),  # was KeyError
    (lambda s: "[" * 100_000 + "]" * 100_000, "nested too deeply"),                 # was RecursionError
    (lambda s: "{not json", "not valid JSON"),
    (_set(N=10 ** 6), "more than MAX_PARAMS"),                                     # asked for terabytes
    (_set(N=1536), "has shape"),                                                   # allocated ~2 GB first
    (_set(N="24"), "N must be an int"),
    (_set(lmbda=float("nan")), "lmbda must be finite"),
    (lambda s: (lambda m: (m["config"].pop("M"), json.dumps(m))[1])(json.loads(s)), r"missing field\(s\) \['M'\]"),
    (_set(extra=1), "no field"),
])
def test_malformed_configs_raise_value_error_naming_file_and_field(codec_dir, edit, message):
    _edit_config(codec_dir, edit)
    with pytest.raises(ValueError, match=message) as e:
        _load(codec_dir)
    assert "config.json" in str(e.value) or "model.safetensors" in str(e.value)


def _edit_weights(d: Path, fn) -> None:
    t = load_file(str(d / "model.safetensors"))
    fn(t)
    save_file(t, str(d / "model.safetensors"))


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.__setitem__("g_s.0.weight", t["g_s.0.weight"] * float("nan")), "'g_s.0.weight' holds NaN"),
    (lambda t: t.__setitem__("g_a.0.bias", t["g_a.0.bias"] + float("inf")), "'g_a.0.bias' holds NaN or infinity"),
    (lambda t: t["gaussian_conditional._cdf"].__setitem__((0, 3), 70000), "gaussian_conditional CDF tables are corrupt"),
    (lambda t: t["entropy_bottleneck._cdf_length"].__setitem__(0, 10 ** 6), "entropy_bottleneck CDF tables are corrupt"),
    (lambda t: [t.__setitem__(f"gaussian_conditional.{k}", t[f"gaussian_conditional.{k}"][:5].clone())
                for k in ("_cdf", "_cdf_length", "_offset")], "holds 5 CDF tables, expected"),
    (lambda t: t.__setitem__("g_a.0.weight", t["g_a.0.weight"][:3]), "'g_a.0.weight' has shape"),  # was RuntimeError
    (lambda t: t.__setitem__("h_a.0.weight", t["h_a.0.weight"].double()), "dtype"),
    (lambda t: t.pop("g_s.0.bias"), "missing"),
])
def test_corrupt_weights_are_rejected_at_load(codec_dir, edit, message):
    _edit_weights(codec_dir, edit)
    with pytest.raises(ValueError, match=message) as e:
        _load(codec_dir)
    assert "model.safetensors" in str(e.value)


def test_unreadable_weights_file_is_a_value_error(codec_dir):
    raw = (codec_dir / "model.safetensors").read_bytes()
    (codec_dir / "model.safetensors").write_bytes(raw[: len(raw) // 2])  # was SafetensorError
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        _load(codec_dir)
    (codec_dir / "model.safetensors").write_bytes(raw[:8] + b"{{{{{{{{" + raw[16:])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        _load(codec_dir)
    assert _load_ok()


def _load_ok() -> bool:
    return _load(CODEC).config.N == 24  # the committed artifact still loads


def test_config_load_json_names_the_file(tmp_path):
    from vlmbook.loop import LoopConfig

    p = tmp_path / "c.json"
    p.write_text(json.dumps({"steps": "ten"}))
    with pytest.raises(ValueError, match="c.json: LoopConfig.steps must be an int"):
        LoopConfig.load_json(p)
    p.write_text("[" * 50_000)
    with pytest.raises(ValueError, match="c.json is nested too deeply"):
        LoopConfig.load_json(p)
    with pytest.raises(ValueError, match=r"missing field\(s\)"):
        LoopConfig.from_dict({"steps": 3}, require_all=True)
    assert LoopConfig.from_dict({"steps": 3}).steps == 3  # partial dicts still fine for presets


# -- the .vlmb file: one canonical form ----------------------------------------------------
def test_bytes_after_the_alpha_stream_are_rejected():
    from vlmbook.codec import BitstreamError
    from vlmbook.codec.fileformat import _HEAD, decode_image, encode_image, parse_header

    img = np.random.default_rng(1).integers(0, 255, (20, 24, 4), dtype=np.uint8)
    data = encode_image(img, quality=1)
    info = parse_header(data)
    streams = info["streams"][:2] + [info["streams"][2] + b"\0junk"]
    head = data[:_HEAD.size] + struct.pack("<3I", *[len(s) for s in streams])
    payload = b"".join(streams)
    forged = head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)) & 0xFFFFFFFF) + payload
    with pytest.raises(BitstreamError, match="bytes follow the alpha stream"):
        decode_image(forged)
    assert np.array_equal(decode_image(data)[..., 3], img[..., 3])


def test_decoder_work_is_bounded_by_the_file():
    # Version 1 files held rANS streams whose lane count the decoder had to trust (a hand-made
    # lanes=1 file took 12-18 s to fail); version 2 streams are range coded, and a v1 file is
    # refused from its header. A v2 stream must be exactly as long as the encoder writes it.
    import time

    from vlmbook.codec import BitstreamError
    from vlmbook.codec.fileformat import _HEAD, decode_image, encode_image
    from vlmbook.codec.models import HyperpriorCodec

    model = HyperpriorCodec.from_pretrained(CODEC).eval()
    img = np.random.default_rng(2).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    good = encode_image(img, 3, model)
    assert decode_image(good, model).shape == img.shape
    fields = list(_HEAD.unpack_from(good, 0))
    ns = fields[-1]
    lengths = list(struct.unpack_from(f"<{ns}I", good, _HEAD.size))
    payload = good[_HEAD.size + 4 * ns + 4:]
    streams = [payload[sum(lengths[:i]):sum(lengths[:i + 1])] for i in range(ns)]

    def forge(version: int, streams: list[bytes]) -> bytes:
        head = _HEAD.pack(*fields[:1], version, *fields[2:-1], len(streams))
        head += struct.pack(f"<{len(streams)}I", *[len(x) for x in streams])
        body = b"".join(streams)
        return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head)) & 0xFFFFFFFF) + body

    assert decode_image(forge(2, streams), model).shape == img.shape  # the forger is faithful
    t0 = time.perf_counter()
    with pytest.raises(BitstreamError, match="version 1"):
        decode_image(forge(1, streams), model)
    assert time.perf_counter() - t0 < 1.0
    for bad in ([streams[0] + b"\x00", streams[1]], [streams[0][:-1], streams[1]], [streams[0], streams[1] + b"\xff"]):
        with pytest.raises(BitstreamError):
            decode_image(forge(2, bad), model)


# -- arguments of the wrong type -------------------------------------------------------------
def test_wrong_argument_types_name_the_argument():
    with pytest.raises(TypeError, match="length must be an int, got '10'"):
        Museum(length="10")  # was: '<' not supported between 'str' and 'int'
    with pytest.raises(TypeError, match="seed must be an int, got 1.5"):
        Museum(seed=1.5)  # was accepted
    with pytest.raises(TypeError, match="index must be an int, got 1.5"):
        Museum()[1.5]  # was accepted, returned Sample(index=1.5)
    with pytest.raises(TypeError, match="start must be an int"):
        Museum().images(0.5, 2)
    assert Museum(length=np.int64(3))[np.int64(2)].index == 2
    with pytest.raises(ValueError, match="size=10000 is larger than every bundled train photo"):
        random_crops(2, size=10000)  # was: "high <= 0"
    with pytest.raises(TypeError, match="seed must be an int"):
        random_crops(2, size=16, seed=1.5)
