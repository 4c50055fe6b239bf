"""Tests for vlmbook.util: the shared median timer and step-seeded generator."""
from __future__ import annotations

import time

import pytest
import torch

from vlmbook.util import (SEED_STRIDE, median_seconds, median_seconds_each, median_seconds_pair, step_generator,
                          step_seed)


def test_step_seed_golden_and_disjoint_streams():
    assert SEED_STRIDE == 1_000_003
    assert step_seed(0, 5) == 5 and step_seed(2, 7) == 2_000_013
    # seeds 0 and 1 give different draws at the same step, the same draws for the same (seed, step)
    a, b, c = (torch.rand(4, generator=step_generator(s, 3)) for s in (0, 1, 0))
    assert torch.equal(a, c) and not torch.equal(a, b)
    assert torch.rand(1, generator=step_generator(0, 0)).item() == pytest.approx(0.49625658988952637)


def test_median_seconds_counts_calls_and_is_the_median():
    calls = []
    t = median_seconds(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7 and 0 <= t < 0.1
    n = {"a": 0, "b": 0}
    ta, tb = median_seconds_pair(lambda: n.__setitem__("a", n["a"] + 1), lambda: n.__setitem__("b", n["b"] + 1),
                                 repeats=3, warmup=1)
    assert n == {"a": 4, "b": 4} and ta >= 0 and tb >= 0


def test_median_seconds_each_interleaves_named_functions():
    order = []
    med = median_seconds_each({k: (lambda k=k: order.append(k)) for k in "abc"}, repeats=2, warmup=1)
    assert order == list("abc") * 3  # warm-up round, then each round calls every function in turn
    assert set(med) == set("abc") and all(0 <= t < 0.1 for t in med.values())
    # the median of four sleeps of 0 / 0 / 20 / 20 ms is their middle pair's mean, 10 ms
    sleeps = iter([0, 0, 0.02, 0.02])
    t = median_seconds_each({"s": lambda: time.sleep(next(sleeps))}, repeats=4, warmup=0)["s"]
    assert 0.008 < t < 0.05
    with pytest.raises(ValueError, match="at least one"):
        median_seconds_each({})
    with pytest.raises(ValueError, match="repeats"):
        median_seconds_each({"a": lambda: None}, repeats=0)


@pytest.mark.parametrize("kw", [{"repeats": 0}, {"repeats": 1.5}, {"warmup": -1}])
def test_median_seconds_rejects_bad_counts(kw):
    with pytest.raises(ValueError):
        median_seconds(lambda: None, **kw)


def test_step_seed_rejects_negative_or_float():
    with pytest.raises(ValueError):
        step_seed(-1, 0)
    with pytest.raises(ValueError):
        step_seed(0, 1.0)
    with pytest.raises(ValueError):
        step_seed(0, 1, stride=0)


def test_step_seed_stride_reproduces_the_codec_constant():
    # the codec's trainers drew batch `step` from seed * 100_003 + step before util existed
    assert step_seed(3, 5, stride=100_003) == 300_014
    for seed, step in ((0, 0), (2, 17)):
        old = torch.Generator().manual_seed(seed * 100_003 + step)
        assert torch.equal(torch.rand(5, generator=old), torch.rand(5, generator=step_generator(seed, step, 100_003)))
    # the default stride is the book's one, and it is not the codec's
    assert not torch.equal(torch.rand(3, generator=step_generator(1, 0)),
                           torch.rand(3, generator=step_generator(1, 0, 100_003)))
