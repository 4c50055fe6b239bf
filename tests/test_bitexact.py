"""A .vlmb file encodes to the same bytes and decodes to the same pixels whatever the thread count or CPU kernel."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from vlmbook.codec import CodecConfig, HyperpriorCodec
from vlmbook.codec.exact import exact_forward

ROOT = Path(__file__).resolve().parents[1]


def _probe(threads: int, **env: str) -> str:
    e = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
         "VLMBOOK_PROGRESS": "0", **env}
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "bitexact_probe.py"), str(threads)], env=e,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_bytes_and_pixels_do_not_depend_on_threads_or_cpu_kernel():
    one = _probe(1)
    assert len(one.splitlines()) == 4
    # Two threads split every convolution's sums differently; ATEN_CPU_CAPABILITY=default swaps
    # the vectorised kernels for the generic ones.
    assert _probe(2) == one
    assert _probe(1, ATEN_CPU_CAPABILITY="default") == one


def test_exact_transforms_match_float_ones_closely():
    torch.manual_seed(0)
    m = HyperpriorCodec(CodecConfig.tiny()).eval()
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        y_float = m.g_a(x)
        y_exact = exact_forward(m.g_a, x)
        x_float = m.g_s(y_float)
        x_exact = exact_forward(m.g_s, y_float)
        z_float, z_exact = m.h_a(y_float.abs()), exact_forward(m.h_a, y_float.abs())
    assert y_exact.dtype == torch.float32 and y_exact.shape == y_float.shape == (1, 32, 4, 8)
    scale = float(y_float.abs().max())
    assert float((y_exact - y_float).abs().max()) < 2e-3 * max(scale, 1.0)
    assert float((x_exact - x_float).abs().max()) < 1 / 255
    assert float((z_exact - z_float).abs().max()) < 2e-3 * max(float(z_float.abs().max()), 1.0)
    # same input, same bits: fixed point does not depend on how the tensor was laid out
    assert torch.equal(exact_forward(m.g_s, y_float.contiguous(memory_format=torch.channels_last)), x_exact)


def test_exact_transforms_refuse_sums_that_could_round():
    torch.manual_seed(0)
    m = HyperpriorCodec(CodecConfig.tiny()).eval()
    huge = torch.full((1, 32, 2, 2), 1e9)
    try:
        exact_forward(m.g_s, huge)
    except ValueError as e:
        assert "2**53" in str(e)
    else:
        raise AssertionError("activations of 1e9 must be refused")
    assert np.isfinite(exact_forward(m.g_s, torch.zeros(1, 32, 2, 2)).numpy()).all()
