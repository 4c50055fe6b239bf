"""Chapter 7 §7.5: the accuracy–latency sweep over the ablation's configurations."""
from __future__ import annotations

import itertools

import pytest

from vlmbook.eval.sweeps import accuracy_latency, pareto_front


def test_pareto_front_golden_and_property():
    lat = [5.0, 1.0, 3.0, 2.0, 4.0, 2.0]
    acc = [90.0, 40.0, 80.0, 30.0, 60.0, 50.0]
    front = pareto_front(lat, acc)
    assert front == [1, 5, 2, 0]  # golden: sorted by latency, accuracy rising along it
    on = set(front)
    for i, j in itertools.product(range(len(lat)), repeat=2):
        if i in on and i != j:  # nothing beats a front point on both axes
            assert not (lat[j] <= lat[i] and acc[j] >= acc[i] and (lat[j], acc[j]) != (lat[i], acc[i]))
    for j in set(range(len(lat))) - on:  # every other point is beaten by one on the front
        assert any(lat[i] <= lat[j] and acc[i] >= acc[j] for i in on)
    assert pareto_front([1.0, 1.0], [5.0, 5.0]) == [0]
    with pytest.raises(ValueError, match="points"):
        pareto_front([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        pareto_front([float("nan")], [1.0])


def _rec(source, route, variant, seed, acc):
    # the fields an ablation record carries (vlmbook.fusion.ablation.run_cell)
    return {"source": source, "route": route, "variant": variant, "seed": seed, "steps": 3000, "levers": {},
            "image_tokens": 9, "threads": 1, "steps_per_s": 10.0, "accuracy": {"all": acc}}


def test_accuracy_latency_measures_each_encoder_configuration():
    from vlmbook.plot import to_png
    from vlmbook.plot.eval import pareto_figure

    records = [_rec("clip", "continuous", "curriculum", s, a) for s, a in ((0, 80.0), (1, 90.0))]
    records += [_rec("vq", "discrete", "recipe", 0, 30.0), _rec("oracle", "continuous", "recipe", 0, 99.0)]
    rows = accuracy_latency(records, repeats=1)
    assert [(r["source"], r["route"], r["variant"]) for r in rows] == [("clip", "continuous", "curriculum"),
                                                                       ("vq", "discrete", "recipe")]
    assert [(r["route"], r["seeds"], r["accuracy"]) for r in rows] == [("continuous", 2, 85.0), ("discrete", 1, 30.0)]
    assert rows[0]["compressor"] == "perceiver" and rows[1]["compressor"] == "none"
    assert all(r["ttft_ms"] > 0 and r["tokens_per_s"] > 0 and r["image_tokens"] == 9 for r in rows)
    assert rows[0]["pareto"]  # the more accurate one is always on the front
    assert to_png(pareto_figure(rows))[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="nothing to sweep"):
        accuracy_latency(records[-1:])
