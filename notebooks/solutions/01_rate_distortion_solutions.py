# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Solutions to Chapter 1 — Rate–distortion
#
# Worked solutions to the exercises of {doc}`../01_rate_distortion`. Each solution's code and
# discussion are folded: try the exercise first, then open them. Every number is computed here by
# `vlmbook`, and the printed results are checked by the test suite like the chapters'.

# %%
import io

import numpy as np
from myst_nb import glue
from PIL import Image

from vlmbook import nb, rd
from vlmbook.data import COLOUR_NAMES, SHAPES, Museum, eval_images

nb.start_chapter(1)

# %% [markdown]
# ## Exercise 1
#
# How many 448-px images with 14-px patches and 2 × 2 pixel shuffle fit into an 8k context beside
# a 1,000-token conversation?

# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
budget = rd.image_token_budget(8192, 1000)
per_image = rd.patch_tokens(448, 448, 14, merge=2)
glue("s1-images", budget // per_image, display=False)
print(f"budget {budget} tokens, {per_image} tokens per image -> {budget // per_image} images"
      f" ({budget - budget // per_image * per_image} tokens left over)")

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# $M \le C - L = 8192 - 1000$ tokens, and each image costs $(448/14)^2/2^2$ tokens, so
# {glue:text}`s1-images` images fit. Without the pixel shuffle each image would cost four times as
# many tokens. In practice keep a reserve for the answer (`reserve=`), which lowers the count.
# ```
#
# ## Exercise 2
#
# At what $n$ does the quadratic attention term equal the projections plus the MLP for $d = 4096$?

# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
d = 4096
n_star = 6 * d  # 4 n^2 d = 8 n d^2 + 16 n d^2  <=>  n = 6 d
for n in (n_star - 1, n_star, n_star + 1):
    f = rd.layer_flops(n, d)
    print(f"n={n}: attention - (projections + MLP) = {f.attention - (f.projections + f.mlp):+.3e} FLOPs")
glue("s1-nstar", n_star, display=False)

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# From `rd.layer_flops`: attention costs $4n^2d$, projections $8nd^2$ and the MLP $4nd\,d_\text{ff}
# = 16nd^2$. Equal when $4n^2d = 24nd^2$, i.e. $n = 6d$ = {glue:text}`s1-nstar` tokens; the sign
# change above confirms it. For a model of width 4096, attention's quadratic term dominates only
# beyond about 24 thousand tokens: below that, *every* token costs roughly the same.
# ```
#
# ## Exercise 3
#
# Blahut–Arimoto on a binary source with Hamming distortion against `rd.binary_rd`. Where does the
# curve hit zero rate, and why?
#
# ```{admonition} Hint
# :class: dropdown
# Take a biased source, $p = 0.2$, so that "zero rate" is not at $D = 1/2$. Sweep $\beta$ from
# small to large.
# ```

# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
p = 0.2
p_x = np.array([1 - p, p])
worst = 0.0
for beta in (0.5, 1.0, 1.5, 2.0, 3.0, 5.0):
    pt = rd.blahut_arimoto(p_x, rd.hamming_matrix(2), beta)
    ref = float(rd.binary_rd(pt.distortion, p))
    worst = max(worst, abs(pt.rate - ref))
    print(f"beta={beta:3.1f}: D={pt.distortion:.4f}  R_BA={pt.rate:.4f}  h(p)-h(D)={ref:.4f}")
print(f"largest disagreement below 1e-4 bits: {worst < 1e-4}")

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# The two agree. The rate reaches zero at $D = \min(p, 1-p) = 0.2$: with no bits at all the
# decoder can still output the more likely symbol every time and be wrong with probability
# $\min(p, 1-p)$, so no distortion above that ever needs a bit. For small $\beta$ (a shallow slope)
# Blahut–Arimoto returns exactly that zero-rate point.
# ```
#
# ## Exercise 4
#
# Repeat §1.5 with reconstruction at cell centroids (`centroid=True`). Does the high-rate gap
# change? What happens at low rate?

# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
for step in (2.0, 1.0, 0.5, 0.1):
    mid, cen = rd.ecsq_gaussian(step), rd.ecsq_gaussian(step, centroid=True)
    print(f"step {step:4.2f}: gap midpoint {mid.gap:.4f}, centroid {cen.gap:.4f} bit"
          f" (MSE {mid.distortion:.5f} -> {cen.distortion:.5f})")
glue("s1-gap-limit", float(rd.ECSQ_GAP_BITS), display=False)

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# The rate is the entropy of the indices, which the reconstruction points do not change; only
# the distortion falls. At high rate the density is nearly flat across each cell, its centroid
# is the midpoint, and both gaps tend to {glue:text}`s1-gap-limit:.3f` bit. At low rate (large
# steps) the centroids pull the outer levels inwards, towards where the probability is, and the
# gap shrinks noticeably.
# ```
#
# ## Exercise 5
#
# Estimate $I(\text{colour};\text{shape})$ from 200, 2,000 and 20,000 museum objects and compare
# the excess with the bias formula of §1.2.

# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
museum = Museum("train", size=32)
objs = []
i = 0
while len(objs) < 20_000:
    objs += museum.scene(i).objects
    i += 1
for n in (200, 2_000, 20_000):
    joint = np.zeros((len(COLOUR_NAMES), len(SHAPES)))
    for o in objs[:n]:
        joint[COLOUR_NAMES.index(o.colour), SHAPES.index(o.shape)] += 1
    joint /= joint.sum()
    bias = (len(COLOUR_NAMES) - 1) * (len(SHAPES) - 1) / (2 * n * np.log(2))
    print(f"N={n:6d}: I = {rd.mutual_information(joint):.4f} bits, bias formula {bias:.4f} bits")

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# Colour and shape are drawn independently, so the true mutual information is zero and the whole
# estimate is bias. It falls roughly as $1/N$, as the formula says, and tracks it closely: a
# plug-in estimate of a few hundredths of a bit from a few hundred samples means nothing.
# ```
#
# ## Exercise 6
#
# A PSNR-versus-bpp curve for JPEG with 4:4:4 chroma (`subsampling=0` in Pillow). Where does it
# help, and why?
#
# ```{admonition} Hint
# :class: dropdown
# `rd.pil_rd_curve` uses Pillow's defaults (4:2:0 chroma). Encode with
# `Image.fromarray(x).save(buf, "JPEG", quality=q, subsampling=0)`, decode, and use `rd.psnr`.
# ```

# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
photos = eval_images(256)


def jpeg_point(q: int, subsampling: int) -> tuple[float, float]:
    bpp, psnr = [], []
    for x in photos:
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, "JPEG", quality=q, subsampling=subsampling)
        y = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        bpp.append(8 * len(buf.getvalue()) / (x.shape[0] * x.shape[1]))
        psnr.append(rd.psnr(x, y))
    return float(np.mean(bpp)), float(np.mean(psnr))


qualities = (20, 35, 50, 70, 85, 95)
c420 = np.array([jpeg_point(q, 2) for q in qualities])
c444 = np.array([jpeg_point(q, 0) for q in qualities])
for q, (b420, p420), (b444, p444) in zip(qualities, c420, c444):
    at_equal_rate = np.interp(b444, c420[:, 0], c420[:, 1])
    print(f"q{q}: 4:2:0 {b420:.2f} bpp {p420:.1f} dB | 4:4:4 {b444:.2f} bpp {p444:.1f} dB"
          f" | 4:4:4 minus 4:2:0 at {b444:.2f} bpp: {p444 - at_equal_rate:+.1f} dB")

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# At the same quality setting 4:4:4 spends more bits (four times as many chroma samples) and gains
# PSNR. Whether it *helps* is a question of the curve, not of one point: compare PSNR at equal
# bpp, as the last column does (interpolating the 4:2:0 curve). At low rates the extra chroma bits are better spent on luma, and 4:2:0 wins; at high
# quality, where chroma subsampling's error dominates what is left, 4:4:4 pulls ahead. PSNR on RGB
# weighs chroma errors more than the eye does, which flatters 4:4:4.
# ```

# %%
nb.report_runtime()
