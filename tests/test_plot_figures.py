"""The chapter figures whose layout was fixed after looking at the built site (Chapters 3, 5, 6)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vlmbook.plot import codec as cplot  # noqa: E402
from vlmbook.plot import fusion as fplot  # noqa: E402
from vlmbook.plot import train as tplot  # noqa: E402

CURVES = {"JPEG": ([0.2, 0.5, 1.0], [22.0, 26.0, 30.0]), "WebP": ([0.2, 0.5, 1.0], [24.0, 28.0, 31.0]),
          "ours": ([0.1, 0.2, 0.3], [23.0, 24.5, 25.5]), "ours+ctx": ([0.1, 0.2, 0.3], [23.2, 24.7, 25.6])}


def _lines(ax):
    return [ln for ln in ax.get_lines() if ln.get_label() in CURVES]


def test_rd_figure_styles_every_curve_apart_and_zooms_on_the_named_ones():
    fig = cplot.rd_figure(CURVES, title="RD", zoom=["ours", "ours+ctx"])
    top, bottom = fig.axes[:2]
    assert [ln.get_label() for ln in _lines(top)] == list(CURVES) == [ln.get_label() for ln in _lines(bottom)]
    styles = {(ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in _lines(top)}
    assert len(styles) == len(CURVES)  # no two curves look alike
    (x0, x1), (y0, y1) = bottom.get_xlim(), bottom.get_ylim()
    assert x0 < 0.1 and 0.3 < x1 < 0.5 and y0 < 23.0 and 25.6 < y1 < 30.0  # the zoomed curves' range only
    assert top.get_xlabel() == "bits per pixel" and top.get_ylabel() == "PSNR (dB)" and top.get_title() == "RD"
    assert len(fig.legends) == 1 and not top.get_legend()  # one legend, off the data
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(CURVES)
    assert len(cplot.rd_figure(CURVES).axes) == 1


def test_latent_figure_is_a_2x2_grid_with_colour_bars_for_the_maps():
    rng = np.random.default_rng(0)
    y, scales = rng.normal(size=(3, 4, 5)), rng.uniform(0.1, 2.0, size=(3, 4, 5))
    y[1] *= 5  # the most energetic channel is the one drawn
    img = rng.uniform(size=(16, 20, 3))
    fig = cplot.latent_figure(img, y, scales, img)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:4] == ["photo", "latent y, channel 1", "predicted scale, channel 1", "decoded"]
    assert len(fig.axes) == 6  # four panels and two colour bars
    lat = next(ax for ax in fig.axes if ax.get_title().startswith("latent"))
    lo, hi = lat.get_images()[0].get_clim()
    assert lo == pytest.approx(-hi) and hi == pytest.approx(np.abs(y[1]).max())  # symmetric around 0


def test_masks_figure_two_per_row_with_labelled_or_numbered_ticks():
    causal = torch.tril(torch.ones(4, 4, dtype=torch.bool))
    masks = {"causal": causal, "prefix": causal | torch.eye(4, dtype=torch.bool), "media": torch.ones(4, 2)}
    fig = fplot.masks_figure(masks, labels=["<bos>", "a", "b", "c"])
    shown = [ax for ax in fig.axes if ax.get_images()]
    assert len(shown) == 3 and len(fig.axes) == 4 and not fig.axes[3].axison  # 2 x 2, the spare panel hidden
    assert [t.get_text() for t in shown[0].get_xticklabels()] == ["<bos>", "a", "b", "c"]
    assert [t.get_text() for t in shown[2].get_xticklabels()] == ["0", "1"]  # 2 keys: numbered
    with pytest.raises(ValueError, match="at least one"):
        fplot.masks_figure({})


def test_stages_figure_legend_sits_outside_the_bars():
    fig = tplot.stages_figure({"a": {"accuracy": 99.0, "citation_precision": 98.0},
                               "b": {"accuracy": 50.0, "citation_precision": 40.0}})
    ax = fig.axes[0]
    assert ax.get_legend() is None and len(fig.legends) == 1
    assert [p.get_height() for p in ax.patches][:2] == [99.0, 50.0]


def test_decoding_steps_draws_one_curve_or_several_with_the_floor():
    from vlmbook.plot import vq as vqplot

    one = vqplot.decoding_steps({1: 200.0, 4: 150.0, 8: 170.0}, 20.0)
    ax = one.axes[0]
    assert [ln.get_label() for ln in ax.get_lines()] == ["MaskGIT samples", "reconstruction floor"]
    assert list(ax.get_lines()[0].get_ydata()) == [200.0, 150.0, 170.0]
    two = vqplot.decoding_steps({"ct 4.5": {1: 200.0, 8: 260.0}, "ct 20": {1: 200.0, 8: 150.0}}, 20.0)
    lines = two.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["ct 4.5", "ct 20", "reconstruction floor"]
    assert lines[0].get_color() != lines[1].get_color() and two.axes[0].get_ylim()[1] == pytest.approx(286.0)
    with pytest.raises(ValueError, match="at least one"):
        vqplot.decoding_steps({"empty": {}}, 1.0)
    with pytest.raises(ValueError, match="at least one"):
        vqplot.decoding_steps({}, 1.0)
