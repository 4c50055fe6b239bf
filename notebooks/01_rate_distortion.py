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
# # Chapter 1 — Rate–distortion: bits, entropy and the token budget
#
# A museum guide that answers visitors' questions must first *see* the exhibit, and a language
# model sees an image only as a sequence of tokens that competes with the question, the answer and
# the conversation for room in its {term}`context window`. How few tokens can an image become and still
# answer "what colour is the vase?" That is a rate–distortion question, and this chapter gives the
# tools to ask it precisely.
#
# **What you will build and measure**
#
# - the token budget of a context window, and the real cost of attention as image tokens grow;
# - entropy, cross-entropy, KL divergence and mutual information, measured on the museum;
# - the rate–distortion function $R(D)$ of a Gaussian in closed form, and of any discrete source by
#   the Blahut–Arimoto algorithm — checked against each other;
# - uniform and Lloyd–Max scalar quantisers, and entropy-coded quantisation with its famous
#   0.254-bit gap to $R(D)$;
# - the Lagrangian $R + \lambda D$ that every learned codec in this book minimises;
# - distortion metrics (MSE/PSNR, SSIM, MS-SSIM; what LPIPS, FID and CLIPScore measure);
# - a first real rate–distortion curve: JPEG and WebP on the bundled photos.
#
# Everything below is computed by `vlmbook.rd`; the notebook only calls, prints and plots.

# %%
import inspect
import textwrap

import numpy as np

from myst_nb import glue  # numbers quoted in the prose are inserted from the computations

from vlmbook import nb
from vlmbook import rd
from vlmbook.data import Museum, eval_images
from vlmbook.plot import image_grid, line_plot, show
from vlmbook.plot import rd as rdplot

nb.start_chapter(1)

# %% [markdown]
# ## 1.1 The token budget
#
# The {term}`token budget` comes first. A decoder-only language model with a context of $C$ tokens must fit the image tokens $M$, the
# text tokens $L$ and room for the answer: $M + L + \text{reserve} \le C$. A ViT with patch size
# $p$ turns an $H\times W$ image into $(H/p)(W/p)$ tokens before any compression.

# %%
# NBVAL_CHECK_OUTPUT
for side in (224, 336, 448):
    print(f"{side}px image, 14px patches: {rd.patch_tokens(side, side, 14):5d} tokens;"
          f" after 2x2 pixel shuffle: {rd.patch_tokens(side, side, 14, merge=2):4d}")
print("image tokens that fit in a 2048 context beside a 300-token question and 200 for the answer:",
      rd.image_token_budget(2048, 300, reserve=200))

# %% [markdown]
# Tokens are not free even when they fit. For one transformer layer on $n$ tokens of width $d$
# (counting a multiply–add as two FLOPs), the Q, K, V and output projections cost $8nd^2$, the
# scores $QK^\top$ and the weighted sum of values cost $4n^2d$, and a feed-forward block of width
# $d_\text{ff}$ costs $4nd\,d_\text{ff}$ ($16nd^2$ for the usual $d_\text{ff}=4d$). The often-quoted
# "$4d(M+L)^2$" keeps only the quadratic term: for short sequences the projections and MLP dominate,
# and the quadratic term takes over only once $n > 6d$.

# %%
print(inspect.getsource(rd.layer_flops))

# %%
# NBVAL_CHECK_OUTPUT
d = 256
for n in (64, 256, 1024, 4096):
    f = rd.layer_flops(n, d)
    print(f"n={n:5d}: projections {f.projections/1e6:8.1f} MFLOP, attention {f.attention/1e6:8.1f},"
          f" MLP {f.mlp/1e6:8.1f}, quadratic share {f.attention/f.total:.0%}")

# %% [markdown]
# Is the count right? We time a PyTorch encoder layer on this CPU and plot measured time against
# counted FLOPs: if the count is right the points fall on a line through the origin whose slope is
# the machine's throughput ({numref}`fig-ch1-attention-cost`). (Timings vary from machine to
# machine, so this cell is not checked.)

# %% mystnb={"figure": {"caption": "Cost of one transformer layer of width $d = 256$. Left: counted FLOPs of the projections, the quadratic attention term and the MLP against the sequence length $n$ (log\u2013log). Right: time measured on this machine against the counted total, with a least-squares line through the origin whose slope is the throughput.", "name": "fig-ch1-attention-cost"}, "image": {"alt": "Two panels. Left: three rising lines on log-log axes; the attention line is the steepest. Right: measured milliseconds against counted FLOPs, five points close to a straight line through the origin."}}
ns = np.array([64, 128, 256, 512, 1024])
seconds = np.array([rd.measure_layer_time(int(n), d=d) for n in ns])
counted = np.array([rd.layer_flops(int(n), d).total for n in ns])
parts = {"projections 8nd²": np.array([rd.layer_flops(int(n), d).projections for n in ns]),
         "attention 4n²d": np.array([rd.layer_flops(int(n), d).attention for n in ns]),
         "MLP 16nd²": np.array([rd.layer_flops(int(n), d).mlp for n in ns])}
show(rdplot.attention_cost(ns, counted, seconds, parts))
corr = float(np.corrcoef(counted, seconds)[0, 1])
glue("ch1-time-corr", corr, display=False)
print("correlation of measured time with counted FLOPs:", round(corr, 3))

# %% [markdown]
# ## 1.2 Information: entropy, cross-entropy, KL and mutual information
#
# The **{term}`entropy`** $H(p) = -\sum_x p(x)\log_2 p(x)$ is the fewest bits per symbol any lossless code
# can average {cite:p}`shannon1948`. Coding $p$ with a code designed for $q$ costs the
# **{term}`cross-entropy`** $H(p,q) = -\sum_x p(x)\log_2 q(x)$, and the excess is the **{term}`KL divergence`**
# $D(p\,\|\,q) = H(p,q) - H(p) \ge 0$. The **{term}`mutual information`**
# $I(X;Y) = D\big(p(x,y)\,\|\,p(x)p(y)\big)$ is how many bits one variable tells about another.
#
# Let us measure them on the museum ({numref}`fig-ch1-exhibits` shows six of its exhibits). Each exhibit object has a colour and a shape drawn
# independently, so their mutual information should be close to zero, while the colour of an
# object and the answer to "what colour is it?" share all of the colour's entropy.

# %% mystnb={"figure": {"caption": "Six exhibits of the museum's training split at 64 \u00d7 64 pixels: two to six objects, each with a shape, a colour and a size, on a textured wall.", "name": "fig-ch1-exhibits"}, "image": {"alt": "A row of six small square images, each showing a few coloured shapes such as stars, rings, vases and bowls on a light textured background."}}
museum = Museum("train", size=64)
show(image_grid([museum[i].image for i in range(6)], [f"exhibit {i}" for i in range(6)]))
print(textwrap.fill(museum[0].caption, 100))

# %%
# NBVAL_CHECK_OUTPUT
from vlmbook.data import COLOUR_NAMES, SHAPES

objs = [o for i in range(2000) for o in museum.scene(i).objects]
colour = np.array([COLOUR_NAMES.index(o.colour) for o in objs])
shape = np.array([SHAPES.index(o.shape) for o in objs])
joint = np.zeros((len(COLOUR_NAMES), len(SHAPES)))
np.add.at(joint, (colour, shape), 1)
joint /= joint.sum()
p_colour = rd.empirical_distribution(colour, len(COLOUR_NAMES))
print(f"objects counted: {len(objs)}")
print(f"H(colour) = {rd.entropy(p_colour):.3f} bits (uniform over 8 would be {np.log2(8):.3f})")
mi, bias = rd.mutual_information(joint), 49 / (2 * len(objs) * np.log(2))
glue("ch1-mi", float(mi), display=False)
glue("ch1-mi-bias", float(bias), display=False)
print(f"I(colour; shape) = {mi:.4f} bits;"
      f" plug-in bias (|X|-1)(|Y|-1)/(2N ln 2) = {bias:.4f} bits")
print(f"cross-entropy of colour under a code built for 4 colours only: "
      f"{rd.cross_entropy(p_colour, np.r_[np.full(4, 0.2475), np.full(4, 0.0025)]):.3f} bits")
print(f"KL(colour || uniform) = {rd.kl_divergence(p_colour, np.full(8, 1 / 8)):.4f} bits")

# %% [markdown]
# The mutual information is small but not zero: a finite sample of a few thousand objects always
# shows some chance dependence, and the plug-in estimate is biased upwards by roughly
# $(|X|-1)(|Y|-1)/(2N\ln 2)$ bits: {glue:text}`ch1-mi-bias:.4f` bits here, against the measured
# {glue:text}`ch1-mi:.4f` bits.
#
# :::{warning}
# A plug-in estimate of mutual information from a finite sample is biased upwards. Keep that in
# mind when a later chapter reports that a representation "carries information" about something.
# :::
#
# ## 1.3 The rate–distortion function
#
# Lossy compression trades bits for error. The **{term}`rate–distortion function`**
#
# $$R(D) = \min_{p(\hat x\mid x):\ \mathbb E\,d(X,\hat X)\le D} I(X;\hat X)$$ (eq-rd-function)
#
# is the fewest bits per sample any code can spend at average distortion $D$
# {cite:p}`shannon1959,cover2006`. For a Gaussian source of variance $\sigma^2$ under squared
# error it has a closed form,
#
# $$R(D) = \max\left(0, \tfrac12\log_2\frac{\sigma^2}{D}\right), \qquad D(R) = \sigma^2 2^{-2R},$$ (eq-gaussian-rd)
#
# so each extra bit divides the error by four: $10\log_{10}4 \approx 6.02$ dB per bit.
#
# For a discrete source there is rarely a formula, but the **{term}`Blahut–Arimoto <Blahut–Arimoto algorithm>`** algorithm
# {cite:p}`blahut1972,arimoto1972` finds the point of the curve where it has a given slope by
# alternating two minimisations: $q(\hat x\mid x)\propto q(\hat x)\,e^{-\beta d(x,\hat x)}$ and
# $q(\hat x)=\sum_x p(x)\,q(\hat x\mid x)$. With the natural exponential the slope is
# $dR/dD = -\beta$ when the rate is in nats; the book measures rates in bits, so the point found has
# slope $-\beta/\ln 2$. (For the Gaussian, $dR/dD = -1/(2D\ln 2)$ by {eq}`eq-gaussian-rd`, so
# $\beta$ should land at $D = 1/(2\beta)$: check the first column below.)

# %%
print(inspect.getsource(rd.blahut_arimoto))

# %% [markdown]
# Put a Gaussian on a fine grid, run Blahut–Arimoto at several slopes, and compare each point with
# the closed form {eq}`eq-gaussian-rd` at the same distortion.

# %%
# NBVAL_CHECK_OUTPUT
grid, p_grid = rd.discretized_gaussian(401, span=7.0)
dist = rd.squared_error_matrix(grid)
betas = [1.0, 2.0, 4.0, 8.0, 16.0]
ba_points = [rd.blahut_arimoto(p_grid, dist, b) for b in betas]
worst = 0.0
for pt in ba_points:
    gap = pt.rate - rd.gaussian_rd(pt.distortion)
    worst = max(worst, abs(gap))
    print(f"beta={pt.beta:5.1f}: D={pt.distortion:.4f}  R_BA={pt.rate:.4f}  R(D)={rd.gaussian_rd(pt.distortion):.4f} bits")
glue("ch1-ba-worst", worst, display=False)
print(f"largest disagreement: below 1e-3 bits: {worst < 1e-3}")

# %% [markdown]
# ## 1.4 Scalar quantisers: uniform and Lloyd–Max
#
# A scalar quantiser maps each sample to one of $L$ levels. A **uniform** quantiser spaces them
# evenly; the **{term}`Lloyd–Max <Lloyd–Max quantiser>`** quantiser {cite:p}`lloyd1982,max1960` alternates the two conditions of
# optimality — each threshold halfway between neighbouring levels, each level the mean of its cell —
# and so places levels densely where the density is high.

# %%
print(inspect.getsource(rd.lloyd_max_gaussian))

# %%
# NBVAL_CHECK_OUTPUT
print(" L | uniform MSE (best step) | Lloyd-Max MSE | R(D) bound at log2 L bits")
for L in (2, 4, 8, 16):
    uq, step = rd.best_uniform_gaussian(L)
    lm = rd.lloyd_max_gaussian(L)
    glue(f"ch1-uniform-mse-{L}", float(rd.gaussian_mse(uq)), display=False)
    glue(f"ch1-lloyd-mse-{L}", float(rd.gaussian_mse(lm)), display=False)
    print(f"{L:2d} | {rd.gaussian_mse(uq):.5f} (step {step:.3f})  | {rd.gaussian_mse(lm):.5f}       |"
          f" {rd.gaussian_dr(np.log2(L)):.5f}")

# %% [markdown]
# At $L = 2$ the two quantisers are the same: for a symmetric density the best two-level uniform
# quantiser already puts its threshold at 0 and its levels at the conditional means $\pm\sigma\sqrt{2/\pi}$,
# so both give {glue:text}`ch1-lloyd-mse-2:.5f`. From $L = 4$ on, Lloyd–Max wins
# ({glue:text}`ch1-lloyd-mse-4:.5f` against {glue:text}`ch1-uniform-mse-4:.5f`, and
# {glue:text}`ch1-lloyd-mse-8:.5f` against {glue:text}`ch1-uniform-mse-8:.5f` at $L = 8$; the
# Lloyd–Max values are the entries of Max's 1960 table), and the gain grows with $L$. Both stay well
# above $D(R)$: a fixed-length code with $\log_2 L$ bits wastes the fact that outer levels are rare.
# {numref}`fig-ch1-staircase` shows where the eight levels go.

# %% mystnb={"figure": {"caption": "Input\u2013output staircases of the best uniform and the Lloyd\u2013Max 8-level quantisers of a unit Gaussian, over its density (grey). Lloyd\u2013Max packs its levels closer together near zero, where most samples fall, and spreads the outer ones.", "name": "fig-ch1-staircase"}, "image": {"alt": "Two step functions rising from bottom left to top right over a grey bell curve; the Lloyd-Max steps are narrower near zero and wider in the tails than the evenly spaced uniform steps."}}
xs = np.linspace(-3.5, 3.5, 701)
show(rdplot.quantizer_staircase(xs, {"uniform, 8 levels": rd.best_uniform_gaussian(8)[0](xs),
                                     "Lloyd–Max, 8 levels": rd.lloyd_max_gaussian(8)(xs)},
                                pdf=np.exp(-xs**2 / 2)))

# %% [markdown]
# (sec-ch1-ecsq)=
# ## 1.5 Entropy-coded quantisation and the 0.254-bit gap
#
# Give the rare levels long codewords and the common ones short: entropy-code the index of a
# uniform quantiser with step $\Delta$. At high rate its distortion is $\Delta^2/12$ and its rate is
# $h(X) - \log_2\Delta$, where $h(X)=\tfrac12\log_2(2\pi e\sigma^2)$ is the differential entropy.
# Subtracting $R(D)$ leaves a constant {cite:p}`gish1968`:
#
# $$R_\text{ECSQ} - R(D) \to \tfrac12\log_2\frac{2\pi e}{12} \approx 0.254\ \text{bit}
# \quad(10\log_{10}\tfrac{\pi e}{6}\approx 1.53\ \text{dB}).$$ (eq-ecsq-gap)
#
# This is the gap between one-dimensional cells and the ideal space-filling ones; vector
# quantisation (Chapter 2) and learned transforms with entropy models (Chapter 3) attack it.

# %%
# NBVAL_CHECK_OUTPUT
glue("ch1-gap-bits", float(rd.ECSQ_GAP_BITS), display=False)
glue("ch1-gap-db", float(rd.ECSQ_GAP_DB), display=False)
print(f"limit: {rd.ECSQ_GAP_BITS:.4f} bit = {rd.ECSQ_GAP_DB:.3f} dB")
for step in (2.0, 1.0, 0.5, 0.25, 0.1):
    e = rd.ecsq_gaussian(step)
    print(f"step {step:4.2f}: rate {e.rate:.3f} bits, MSE {e.distortion:.5f}, gap to R(D) {e.gap:.4f} bit")

# %% [markdown]
# The same gap, *measured* by quantising a million samples and computing the empirical entropy of
# the indices:

# %%
# NBVAL_CHECK_OUTPUT
samples = np.random.default_rng(0).standard_normal(1_000_000)
for step in (0.5, 0.1):
    e = rd.ecsq_empirical(samples, step)
    glue(f"ch1-measured-gap-{step}", float(e.gap), display=False)
    print(f"step {step}: measured rate {e.rate:.3f} bits, MSE {e.distortion:.5f}, gap {e.gap:.3f} bit")

# %% [markdown]
# The measured gap at step 0.1, {glue:text}`ch1-measured-gap-0.1:.3f` bit, is already close to
# the limit {glue:text}`ch1-gap-bits:.4f` bit of {eq}`eq-ecsq-gap`. {numref}`fig-ch1-rd-theory` puts
# the three descriptions of the same source side by side.

# %% mystnb={"figure": {"caption": "Rate\u2013distortion of a unit Gaussian: the closed form $R(D)$, Blahut\u2013Arimoto on the discretised source (one point per $\\beta$), and a uniform quantiser with entropy-coded indices (one point per step size), whose curve runs parallel to $R(D)$ at high rate, a constant gap above it (the limit of \u00a71.5).", "name": "fig-ch1-rd-theory"}, "image": {"alt": "Rate in bits against distortion on a logarithmic axis: a falling solid line, orange dots lying on it, and a dashed line of red squares slightly above it."}}
dd = np.logspace(-3.5, 0, 60)
steps = [2.0, 1.0, 0.5, 0.25, 0.1, 0.05]
ecsq_pts = [rd.ecsq_gaussian(s) for s in steps]
show(rdplot.rd_theory(dd, rd.gaussian_rd(dd), (np.array([p.rate for p in ba_points]),
                                               np.array([p.distortion for p in ba_points])),
                      (np.array([e.rate for e in ecsq_pts]), np.array([e.distortion for e in ecsq_pts]))))

# %% [markdown]
# ## 1.6 The Lagrangian: trading rate for distortion with one number
#
# A codec offers many operating points $(R_i, D_i)$. Rather than fix a rate and minimise
# distortion, we minimise the {term}`Lagrangian` $J = R + \lambda D$: each $\lambda \ge 0$ picks one point, and sweeping
# $\lambda$ traces exactly the **lower convex hull** of the cloud. Every learned codec in
# Chapter 3 trains on this loss, one model per $\lambda$. Here the points are entropy-coded uniform
# quantisers with random step sizes, each given a random amount of wasted bits (as a worse
# entropy coder would spend), so that not every point is efficient ({numref}`fig-ch1-lagrangian`).

# %% mystnb={"figure": {"caption": "Forty operating points (grey), their lower convex hull (blue) and, for three values of $\\lambda$, the line $R + \\lambda D = J^*$ of the best value of the Lagrangian: each line touches the cloud at the point that $\\lambda$ picks, always a hull vertex.", "name": "fig-ch1-lagrangian"}, "image": {"alt": "Scatter of grey points with distortion falling as rate rises; a blue polyline along their lower-left edge; three dotted straight lines, each touching the blue hull at one large coloured dot."}}
rng = np.random.default_rng(1)
cand_steps = rng.uniform(0.05, 2.5, 40)
cand = [rd.ecsq_gaussian(float(s)) for s in cand_steps]
R = np.array([c.rate for c in cand]) + rng.uniform(0, 0.4, 40)  # some points waste bits
D = np.array([c.distortion for c in cand])
hull = rd.lower_convex_hull(R, D)
lambdas = [2.0, 10.0, 60.0]
show(rdplot.lagrangian(R, D, hull, lambdas, [rd.lagrangian_choice(R, D, lam) for lam in lambdas]))

# %%
# NBVAL_CHECK_OUTPUT
chosen = set(rd.lambda_sweep(R, D, np.logspace(-2, 4, 400)).tolist())
glue("ch1-hull-size", len(hull), display=False)
glue("ch1-sweep-picks", len(chosen), display=False)
print(f"{len(hull)} of {len(R)} points are on the hull; the λ sweep picks {len(chosen)} distinct points,"
      f" all on the hull: {chosen <= set(hull.tolist())}")

# %% [markdown]
# :::{tip}
# In Jupyter, run the next cell and drag the slider to watch $\lambda$ move the chosen point
# along the hull (the built site shows the static figure above instead; the book build skips the
# cell, whose widget needs a live kernel).
# :::

# %% tags=["remove-output", "skip-execution"]
import ipywidgets as widgets


def _pick(lam: float = 10.0) -> None:
    k = rd.lagrangian_choice(R, D, lam)
    show(rdplot.lagrangian(R, D, hull, [lam], [k]))


widgets.interact(_pick, lam=widgets.FloatLogSlider(value=10.0, base=10, min=-1, max=3, step=0.05,
                                                   description="λ"));

# %% [markdown]
# ## 1.7 Measuring distortion
#
# - **MSE / {term}`PSNR`.** $\text{PSNR} = 10\log_{10}(\text{MAX}^2/\text{MSE})$ dB. Cheap, differentiable,
#   and blind to structure: a one-pixel shift can cost more PSNR than a visible blur.
# - **{term}`SSIM`** {cite:p}`wang2004ssim` compares local means, variances and covariance in an
#   $11\times 11$ Gaussian window; **MS-SSIM** {cite:p}`wang2003msssim` repeats the contrast–structure
#   term over five scales (so images need sides above 160 px).
# - **LPIPS** {cite:p}`zhang2018lpips` compares deep features of a pretrained network, calibrated to
#   human judgements; **FID** {cite:p}`heusel2017fid` is the Fréchet distance between Gaussians
#   fitted to Inception features of two image *sets* (a distribution measure, not per image);
#   **CLIPScore** {cite:p}`hessel2021clipscore` is the cosine similarity of CLIP image and text
#   embeddings. All three need pretrained networks that this offline book cannot download:
#   Chapter 2 trains its own feature network for a perceptual loss and Chapter 4 its own CLIP.
#
# Our SSIM is written out in `vlmbook.rd.ssim_map`; the tests check it against `pytorch_msssim`.

# %%
print(inspect.getsource(rd.ssim_map))

# %%
# NBVAL_CHECK_OUTPUT
photo = eval_images(256)[0]
noise = np.random.default_rng(0).normal(0, 12, photo.shape)
noisy = np.clip(photo + noise, 0, 255).astype(np.uint8)
shifted = np.roll(photo, 1, axis=1)
for name, img in (("Gaussian noise σ=12", noisy), ("shift by one pixel", shifted)):
    key = "noise" if img is noisy else "shift"
    glue(f"ch1-psnr-{key}", float(rd.psnr(photo, img)), display=False)
    print(f"{name:20s}: PSNR {rd.psnr(photo, img):5.2f} dB, SSIM {rd.ssim(photo, img):.3f},"
          f" MS-SSIM {rd.ms_ssim(photo, img):.3f}")

# %% [markdown]
# The one-pixel shift is invisible to a visitor, yet PSNR scores it far worse than visible noise
# ({glue:text}`ch1-psnr-shift:.1f` dB against {glue:text}`ch1-psnr-noise:.1f` dB).
# SSIM reverses the order. MS-SSIM also ranks the shift below the noise: its fine scales still see
# the misalignment, and its coarse scales average the noise away. No single number is "the"
# quality; the book reports PSNR and MS-SSIM side by side. The Fréchet distance behind FID has a closed form for two
# Gaussians, $\|\mu_1-\mu_2\|^2 + \operatorname{Tr}\big(\Sigma_1+\Sigma_2-2(\Sigma_1\Sigma_2)^{1/2}\big)$:

# %%
# NBVAL_CHECK_OUTPUT
print(f"{rd.frechet_distance([0, 0], np.eye(2), [1, 0], 4 * np.eye(2)):.3f}  (= 1 + 2·(1 + 4 − 2·2) = 3)")

# %% [markdown]
# ## 1.8 A first real rate–distortion curve: JPEG and WebP
#
# The three evaluation photos that Chapter 3's learned codec will be measured on
# ({numref}`fig-ch1-eval-photos`), coded by JPEG and WebP (through Pillow) at several qualities.
# Rate is in bits per pixel ({term}`bpp`).

# %% mystnb={"figure": {"caption": "The three evaluation photos, 256 \u00d7 256 pixels: no codec in the book trains on them.", "name": "fig-ch1-eval-photos"}, "image": {"alt": "Three photographs side by side: an astronaut in a white suit, a cup of coffee seen from above, and a flower."}}
photos = eval_images(256)
show(image_grid(photos, ["astronaut", "coffee", "flower"], ncols=3, size=2.2))

# %% mystnb={"figure": {"caption": "JPEG and WebP through Pillow at qualities 10 to 95 on the three evaluation photos: PSNR (left) and MS-SSIM (right) against bits per pixel, averaged over the photos.", "name": "fig-ch1-codec-rd"}, "image": {"alt": "Two panels of rising curves against bits per pixel; in both, the WebP curve lies above the JPEG curve."}}
curves = {c.upper(): rd.pil_rd_curve(photos, c, qualities=(10, 20, 35, 50, 70, 85, 95)) for c in ("jpeg", "webp")}
show(rdplot.codec_rd(curves))

# %%
# NBVAL_CHECK_OUTPUT
print("quality | " + " | ".join(f"{name:>15s}" for name in curves))
for i, q in enumerate(curves["JPEG"]):
    print(f"{q.quality:7d} | " + " | ".join(f"{pts[i].bpp:.2f} bpp {pts[i].psnr:4.1f} dB" for pts in curves.values()))
jpeg, webp = curves["JPEG"], curves["WEBP"]
overlap = [p for p in jpeg if webp[0].bpp <= p.bpp <= webp[-1].bpp]
margin = min(np.interp(p.bpp, [q.bpp for q in webp], [q.psnr for q in webp]) - p.psnr for p in overlap)
glue("ch1-webp-margin", float(margin), display=False)
print(f"smallest PSNR lead of WebP over JPEG where both curves have points: {margin:.1f} dB")

# %% [markdown]
# WebP sits above JPEG at every rate where both curves have points ({numref}`fig-ch1-codec-rd`), by
# at least {glue:text}`ch1-webp-margin:.1f` dB of PSNR on these photos. Chapter 3 adds a third curve — a learned
# hyperprior codec trained on the other bundled photos — and measures the gap with the BD-rate.
#
# ## Summary
#
# - The context window makes image tokens a budget, $M \le C - L - \text{reserve}$; attention
#   costs $8nd^2 + 4n^2d$ FLOPs per layer (plus the MLP), and the measured time follows the count.
# - Entropy bounds lossless coding; cross-entropy and KL price a wrong model; mutual information
#   measures shared bits — and finite samples overestimate it.
# - $R(D)$ is the limit of lossy coding. For a Gaussian, $R(D)=\tfrac12\log_2(\sigma^2/D)$;
#   Blahut–Arimoto computes it for discrete sources and agrees with the closed form here to within
#   {glue:text}`ch1-ba-worst:.1e` bits.
# - Lloyd–Max beats uniform quantisation at equal levels from $L = 4$ on (at $L = 2$ they coincide
#   for a symmetric source); entropy coding the indices of a uniform quantiser gets within
#   {glue:text}`ch1-gap-bits:.3f` bit ({glue:text}`ch1-gap-db:.2f` dB) of $R(D)$ at high rate.
# - Minimising $R + \lambda D$ and sweeping $\lambda$ traces the lower convex hull of achievable
#   points — the loss every learned codec in this book trains on.
# - PSNR is cheap and blind to structure; SSIM/MS-SSIM see structure; LPIPS, FID and CLIPScore
#   need pretrained networks, which this book trains itself.
#
# ## Exercises
#
# 1. Use `rd.image_token_budget` to find how many 448-px images with 14-px patches and 2×2 pixel
#    shuffle fit into an 8k context beside a 1,000-token conversation.
# 2. At what $n$ does the quadratic attention term equal the projections plus MLP for $d=4096$?
#    Derive it from `rd.layer_flops`, then check numerically.
# 3. Run Blahut–Arimoto on a binary source with Hamming distortion (`rd.hamming_matrix(2)`) and
#    compare with `rd.binary_rd`. Where does the curve hit zero rate, and why?
# 4. Repeat §1.5 with reconstruction at cell centroids (`centroid=True`). Does the high-rate gap
#    change? What happens at low rate?
# 5. Estimate $I(\text{colour};\text{shape})$ from 200, 2,000 and 20,000 museum objects. Compare the
#    excess with the bias formula in §1.2.
# 6. Add a PSNR-versus-bpp curve for JPEG with 4:4:4 chroma (`subsampling=0` in Pillow). Where does
#    it help, and why?

# %%
nb.report_runtime()
