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
# # Chapter 2 — Vector quantisation: Lloyd, VQ-VAE, EMA and the straight-through estimator
#
# Chapter 1 measured how many bits an exhibit needs. A language model, though, does not read bits:
# it reads *tokens* from a finite vocabulary. This chapter builds the machine that turns a museum
# exhibit into a short grid of integers — the image tokens that our museum guide will later read as
# `<v_k>` words, and cite as patches when it answers "which object is the red vase?".
#
# **What you will build and measure**
#
# - Lloyd's algorithm (k-means) and the Voronoi cells of a {term}`codebook`;
# - the VQ layer: nearest codeword, straight-through gradients, codebook and commitment losses;
# - codebook collapse, measured, and its fix: EMA updates, k-means initialisation and dead-code
#   restarts (perplexity and usage);
# - the relatives: Gumbel-softmax (dVAE), FSQ, LFQ, residual and grouped (product) VQ;
# - the book's image tokenizer, a VQ-VAE that maps a 64-pixel exhibit to 8 × 8 codes;
# - VQ-GAN's losses — a PatchGAN discriminator, the hinge loss, the adaptive weight and a
#   perceptual loss on a feature network this book trains itself;
# - MaskGIT: a bidirectional transformer over codes that samples and inpaints exhibits by
#   iterative parallel decoding.
#
# Everything is computed by `vlmbook.vq`; the notebook calls, prints and plots.

# %%
import inspect
import textwrap

import torch

from vlmbook import nb
from vlmbook import vq
from vlmbook.data import Museum
from vlmbook.plot import show
from vlmbook.plot import vq as vqplot
from myst_nb import glue  # numbers quoted in the prose are inserted from the computations

nb.start_chapter(2)
torch.set_num_threads(2)

# %% [markdown]
# ## 2.1 Lloyd's algorithm and Voronoi cells
#
# A {term}`vector quantiser <vector quantisation>` with codebook $\{e_1,\dots,e_K\}\subset\mathbb R^D$ maps a vector $z$ to its
# nearest codeword, $k(z)=\arg\min_k\lVert z-e_k\rVert^2$, and so costs $\log_2 K$ bits per vector.
# The set of points that map to $e_k$ is its *Voronoi cell*. Lloyd's algorithm {cite:p}`lloyd1982`
# alternates the two conditions an optimal quantiser must meet: assign every point to its nearest
# codeword, then move every codeword to the mean of its cell. Neither step can raise the mean
# squared error, so the distortion never increases. {numref}`fig-ch2-voronoi` shows the codebook
# Lloyd's algorithm finds for 2,000 points in the plane and the Voronoi cells it draws.

# %% mystnb={"figure": {"caption": "Lloyd's algorithm with $K = 16$ codewords (crosses) on 2,000 two-dimensional points drawn from a ring of Gaussian blobs; each shaded region is the Voronoi cell of one codeword, the set of points nearer to it than to any other.", "name": "fig-ch2-voronoi"}, "image": {"alt": "Points in eight clusters arranged on a ring around the origin, with sixteen orange crosses and the plane cut into sixteen shaded polygons; dense clusters get one or two crosses each, and a few crosses sit between clusters near the centre."}}
points = vq.ring_mixture(2000, seed=0)
centroids, assign = vq.kmeans(points, 16, iters=20, generator=torch.Generator().manual_seed(0))
show(vqplot.voronoi(points, centroids, title="Lloyd codebook, K = 16, on a ring of blobs"))

# %%
# NBVAL_CHECK_OUTPUT
d = vq.lloyd_distortions(points, 16, iters=8, generator=torch.Generator().manual_seed(0))
print("MSE after 0..8 Lloyd iterations:", [round(x, 3) for x in d])
print("never increases:", all(b <= a + 1e-9 for a, b in zip(d, d[1:])))

# %% [markdown]
# Lloyd's algorithm finds a *local* optimum: the initial codewords matter, which is why the VQ
# layer below borrows k-means for initialisation.
#
# ## 2.2 The VQ layer and the straight-through estimator
#
# In a VQ-VAE {cite:p}`vandenoord2017vqvae` an encoder produces vectors $z_e$, the quantiser
# replaces each by its nearest codeword $z_q$, and a decoder reconstructs the image. The
# $\arg\min$ has no useful gradient, so the {term}`straight-through estimator` (STE) copies the gradient
# from $z_q$ to $z_e$ unchanged: in code, $z_q \leftarrow z_e + \operatorname{sg}(z_q - z_e)$, where
# $\operatorname{sg}$ stops gradients. Two extra terms train the codebook and keep the encoder close
# to it:
#
# $$\mathcal L = \lVert x-\hat x\rVert^2 + \lVert \operatorname{sg}(z_e)-e\rVert^2 +
#   \beta\,\lVert z_e-\operatorname{sg}(e)\rVert^2 .$$

# %%
print(inspect.getsource(vq.straight_through))
print(inspect.getsource(vq.VectorQuantizer._quantize))

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
layer = vq.make_quantizer(vq.QuantizerConfig(dim=4, codebook_size=8, ema=False, kmeans_init=False,
                                             restart_threshold=0.0))
z = torch.randn(2, 4, 3, 3, requires_grad=True)      # a (B, D, H, W) feature map
upstream = torch.randn(2, 4, 3, 3)
out = layer(z)
(out.quantized * upstream).sum().backward()
print("codes shape:", tuple(out.codes.shape), out.codes.dtype)
print("gradient reaching the encoder equals the upstream gradient:", torch.allclose(z.grad, upstream))

# %% [markdown]
# Every quantiser in `vlmbook.vq` returns the same `QuantizerOutput`: the quantised tensor, integer
# codes, its loss, and two usage statistics. The *perplexity* is the exponential of the entropy of
# the code-usage histogram, $\exp\!\big(-\sum_k p_k\ln p_k\big)$: it equals $K$ when all codes are
# used equally and 1 when a single code does all the work. Note the minus sign and the natural
# logarithm inside the exponential: $2^{H}$ with $H$ in bits is the same number, but mixing the two
# (exponentiating a base-2 entropy with $e$) gives a value that is neither.

# %%
# NBVAL_CHECK_OUTPUT
ppl, used = vq.codebook_usage(torch.tensor([0, 0, 1, 2]), 4)
print(f"usage (1/2, 1/4, 1/4, 0): perplexity {float(ppl):.3f} = 2^1.5, used fraction {float(used):.2f}")

# %% [markdown]
# ## 2.3 Codebook collapse, and the fix
#
# With random codewords and gradient updates, only codewords that win some assignment ever move;
# the rest stay where they were initialised, far from the encoder's outputs, and are never chosen:
# the codebook *collapses* to a few codes. Three remedies are standard:
#
# - **EMA updates** {cite:p}`vandenoord2017vqvae,razavi2019vqvae2`: keep running averages of each
#   code's count $N_k$ and of the sum $m_k$ of the vectors assigned to it,
#   $N_k\leftarrow\gamma N_k+(1-\gamma)n_k$, $m_k\leftarrow\gamma m_k+(1-\gamma)\sum_{i:k(i)=k}z_i$,
#   and set $e_k=m_k/\tilde N_k$ with Laplace-smoothed counts
#   $\tilde N_k=\frac{N_k+\epsilon}{N+K\epsilon}N$ — a running k-means;
# - **k-means initialisation** of the codebook on the first batch;
# - **dead-code restart**: a code whose running count falls below a threshold is moved onto a
#   random encoder output from the current batch.

# %%
print(inspect.getsource(vq.VectorQuantizer.update_statistics))

# %% [markdown]
# Two small tokenizers (32-pixel exhibits → 8 × 8 codes, $K=128$) train on the same batches; they
# differ only in how the codebook learns.

# %%
collapse = vq.collapse_experiment(steps=120, batch_size=16, seed=0)
for label, (model, metrics) in collapse.items():
    print(f"{label:14s} PSNR {metrics['psnr']:.1f} dB  usage {metrics['usage']:.0%}  perplexity {metrics['perplexity']:.0f}")

# %%
# NBVAL_CHECK_OUTPUT
plain, fixed = collapse["plain VQ"][1], collapse["EMA + restart"][1]
print("plain VQ uses fewer than half of its codes:", plain["usage"] < 0.5)
print("EMA + restart uses at least 95 % of its codes:", fixed["usage"] >= 0.95)

# %% [markdown]
# {numref}`fig-ch2-usage` counts how often each code is chosen on held-out exhibits.

# %% mystnb={"figure": {"caption": "Code usage of the two tokenizers of \u00a72.3 on 256 held-out exhibits: each curve is the count of every code, sorted from the most to the least used (log scale; 0.5 is added so that unused codes show). The legend gives how many of the 128 codes are used at all.", "name": "fig-ch2-usage"}, "image": {"alt": "Two falling curves on a logarithmic count axis against code rank from 0 to 127: the plain VQ curve drops to the floor after a couple of codes, while the EMA plus restart curve declines slowly across almost all 128 codes."}}
val32 = vq.eval_images(256, 32)
show(vqplot.usage_histogram({k: m.encode(val32) for k, (m, _) in collapse.items()}, 128,
                            title="Code usage on 256 held-out exhibits"))

# %% [markdown]
# ## 2.4 Gumbel-softmax: a differentiable relaxation (dVAE)
#
# DALL·E's dVAE {cite:p}`ramesh2021dalle` avoids the STE: the encoder outputs logits over the $K$
# codes, and training uses a Gumbel-softmax sample {cite:p}`jang2017gumbel,maddison2017concrete`,
# $w=\operatorname{softmax}((\ell+g)/\tau)$ with Gumbel noise $g$, so the quantised vector
# $\sum_k w_k e_k$ is differentiable. As the temperature $\tau\to0$ the sample approaches a one-hot
# vector; training anneals $\tau$ downwards, and a KL term to a uniform prior keeps codes in use.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
gq = vq.GumbelQuantizer(vq.QuantizerConfig(kind="gumbel", dim=8, codebook_size=32))
zg = torch.randn(2000, 8)
with torch.no_grad():
    peaks = {t: float(gq.soft_assignments(zg, t).max(1).values.mean()) for t in (4.0, 1.0, 0.25, 1 / 16)}
for t, p in peaks.items():
    print(f"tau = {t:6.4f}: mean largest weight {p:.2f}")
print("annealing schedule:", [round(vq.gumbel_temperature(s, 1000), 3) for s in (0, 250, 500, 750, 1000)])

# %% [markdown]
# ## 2.5 Codebooks without lookups, and codebooks of codebooks
#
# - **FSQ** {cite:p}`mentzer2024fsq` bounds each of $d$ channels and rounds it to $L_i$ levels:
#   the implicit codebook has $\prod_i L_i$ codes and nothing to collapse.
# - **LFQ** {cite:p}`yu2024magvit2` keeps only the sign of each of $\log_2K$ channels, with an
#   entropy loss that makes each vector's code certain and the batch's codes diverse.
# - **Residual VQ** {cite:p}`zeghidour2022soundstream,lee2022rqvae` quantises what the previous
#   stages left: $L$ stages of $K$ codes describe $K^L$ points with $L$ small codebooks.
# - **Grouped / product VQ** {cite:p}`jegou2011pq` splits the vector into $G$ slices, each with its
#   own codebook: $K^G$ combinations.

# %%
# NBVAL_CHECK_OUTPUT
fsq = vq.make_quantizer(kind="fsq", dim=4, levels=(8, 5, 5, 5), codebook_size=1000)
idx = torch.arange(fsq.codebook_size)
print("FSQ levels (8, 5, 5, 5) ->", fsq.codebook_size, "codes; index -> digits -> index is the identity:",
      torch.equal(fsq.digits_to_codes(fsq.codes_to_digits(idx)), idx))
lfq = vq.make_quantizer(kind="lfq", dim=8, codebook_size=256)
print("LFQ code of z = (+,-,+,+,-,-,-,+):", int(lfq.encode(torch.tensor([[[1., -1, 1, 1, -1, -1, -1, 1]]]))))

# %%
torch.manual_seed(0)
latents = torch.randn(1, 4000, 8) * torch.linspace(2.0, 0.2, 8)   # correlated-scale Gaussian vectors
rvq = vq.make_quantizer(kind="residual", dim=8, codebook_size=16, depth=4, restart_threshold=0.0)
rvq.train()(latents)                     # k-means initialises each stage on its own residual
errors = [float((latents - r).pow(2).mean()) for r in rvq.partial_reconstructions(latents)]
gvq = vq.make_quantizer(kind="grouped", dim=8, codebook_size=16, groups=2, restart_threshold=0.0)
gvq.train()(latents)
gvq_err = float((latents - gvq.eval()(latents).quantized).pow(2).mean())

# %%
# NBVAL_CHECK_OUTPUT
print("residual VQ, 4 bits per stage; MSE after 1..4 stages:", [round(e, 2) for e in errors])
print("error never increases with depth:", all(b <= a for a, b in zip(errors, errors[1:])))
print(f"grouped VQ, 2 groups x 4 bits: MSE {gvq_err:.2f} (vs {errors[1]:.2f} for 2 residual stages)")

# %% [markdown]
# ## 2.6 The book's image tokenizer
#
# The tokenizer is a small VQ-VAE: three stride-2 convolutions take a 64-pixel exhibit to an
# 8 × 8 grid of 16-dimensional vectors, an EMA + restart VQ layer with $K=512$ codes turns each into
# a 9-bit token, and a mirrored decoder draws the image back: 64 tokens × 9 bits = 576 bits per
# exhibit, about 0.14 bits per pixel.
# It trains on museum exhibits mixed with crops of the bundled photos, with the recipe
# `vq.build_tiny_tokenizer` below. Its full 1,200 steps take one to two minutes on two CPU cores; here
# we train a quarter of them, live, to watch the recipe work. The full run is a *committed
# artifact*, `vq-tokenizer-tiny`, which this and later chapters load: `vlmbook artifacts build
# vq-tokenizer-tiny` rebuilds it with the same seed and recipe, and on the machines this book was made on
# the rebuild equals the committed weights bit for bit (`VLMBOOK_SLOW=2 pytest tests/test_vq_models.py
# -k rebuild` checks it; float reductions can differ on other processors, which is why the book loads
# the committed copy rather than retraining).

# %%
print(inspect.getsource(vq.build_tiny_tokenizer))
SHORT = vq.tokenizer.TINY_TRAIN.steps // 4
short = vq.build_tiny_tokenizer(seed=0, steps=SHORT)
short_metrics = vq.evaluate_tokenizer(short)
print(f"trained here for {SHORT} of {vq.tokenizer.TINY_TRAIN.steps} steps: PSNR {short_metrics['psnr']:.1f} dB on 256"
      f" held-out exhibits, {short_metrics['usage']:.0%} of the codebook in use")
glue("ch2-short-psnr", float(short_metrics["psnr"]), display=False)
tokenizer = vq.load_tiny_tokenizer()
print(tokenizer.config)

# %% [markdown]
# Four times the training, in the committed tokenizer, buys {glue:text}`ch2-train-gain:.1f` dB
# more than the quarter run's {glue:text}`ch2-short-psnr:.1f` dB:

# %%
# NBVAL_CHECK_OUTPUT
metrics = vq.evaluate_tokenizer(tokenizer)
print(f"tokens per image: {metrics['tokens_per_image']}, codebook size: {tokenizer.codebook_size}")
print(f"PSNR on 256 held-out exhibits: {metrics['psnr']:.1f} dB")
glue("ch2-tokenizer-psnr", float(metrics["psnr"]), display=False)
glue("ch2-train-gain", float(metrics["psnr"] - short_metrics["psnr"]), display=False)
print("codebook usage >= 95 %:", metrics["usage"] >= 0.95)

# %% [markdown]
# For the guide, each code is a token and each token is a patch: code $(r, c)$ covers pixels
# $8r\ldots8r+7$, $8c\ldots8c+7$. Written as words, the codes are `<v_k>` tokens, one per codebook
# entry. A citation needs the other half, *where*: Chapter 5's guide cites patch positions with a
# separate token family, `<p_k>`, so that a codebook entry and a place in the image are never
# confused.
#
# Chapter 5's discrete route reads a second preset of this same tokenizer, `vq.CELL_CONFIG`:
# 48-px exhibits through four stride-2 stages, so that each of its 3 × 3 codes covers exactly one
# museum cell and an exhibit becomes nine `<v_k>` words. It is the artifact `vq-tokenizer-cell`,
# trained by the same `train_tokenizer` on exhibits only. Reconstruction is not description:
# looked up code by code, a cell's code names its object's colour far more often than its shape,
# because the wall tint and the object's colour dominate the squared error while the outline of a
# seven-pixel star barely registers.

# %%
# NBVAL_CHECK_OUTPUT
from vlmbook.fusion.discrete import tokenizer_cell_readout  # noqa: E402

cell_tok = vq.load_cell_tokenizer()
cell_metrics = vq.evaluate_tokenizer(cell_tok, Museum("val", 48).tensors(0, 256))
print(f"cell tokenizer: {cell_tok.grid}x{cell_tok.grid} codes per exhibit, PSNR {cell_metrics['psnr']:.1f} dB, "
      f"codebook usage {cell_metrics['usage']:.0%}")
readout = tokenizer_cell_readout(cell_tok, 1000, 300)
print("object read from its cell's code:")
for a in ("colour", "shape", "size"):
    print(f"  {a:6s} {readout[a + '_object']:.0%} (majority baseline {readout[a + '_object_baseline']:.0%})")

# %% [markdown]
# {numref}`fig-ch2-code-grid` shows one held-out exhibit as the tokenizer sees it.

# %% mystnb={"figure": {"caption": "A held-out exhibit cut into the 8 \u00d7 8 patches of the tokenizer (left) and the code it gives each patch (right). The cell colours only mark equal codes: the plain wall takes a few recurring codes, the objects' patches others.", "name": "fig-ch2-code-grid"}, "image": {"alt": "Left, a 64-pixel exhibit with six coloured objects on a pale wall under a white 8 by 8 grid; right, an 8 by 8 table of integers between 0 and 511, one per patch, on pale coloured cells."}}
exhibit = Museum("val", 64)[3]
x = torch.from_numpy(exhibit.image).permute(2, 0, 1).float()[None] / 255
codes = tokenizer.encode(x)[0]
print(textwrap.fill(exhibit.caption, 100))
print("first row as tokens:", " ".join(f"<v_{int(k)}>" for k in codes[0]))
show(vqplot.code_grid(x[0], codes))

# %% mystnb={"figure": {"caption": "Eight held-out exhibits (top) and the tokenizer's reconstructions from their 64 codes each (bottom).", "name": "fig-ch2-reconstructions"}, "image": {"alt": "Two rows of eight small exhibits: sharp coloured shapes and number plaques on textured walls above, and below the same scenes as soft coloured blobs in the right places, with the plaques' digits gone."}}
val = vq.eval_images(8, 64)
show(vqplot.reconstructions(val, {"8×8 codes": tokenizer.reconstruct(val)}, n=8))

# %% [markdown]
# Look closely at {numref}`fig-ch2-reconstructions` before trusting the {glue:text}`ch2-tokenizer-psnr:.1f` dB. The reconstructions
# keep where each object is and, mostly, its colour, but not its shape: stars, diamonds, squares
# and triangles all come back as soft blobs, dark objects drift towards the wall's colour, and the
# plaques' digits are gone. PSNR averages over the wall, which is most of the picture and easy to
# reproduce. A guide reading these tokens could say *where* something hangs but not reliably
# *what* it is or what the plaque says — the motivation for the sharper losses of §2.7 and for
# the richer continuous features of Chapter 4.

# %% [markdown]
# ## 2.7 VQ-GAN: sharper reconstructions from a discriminator and a perceptual loss
#
# Pixel MSE rewards blur: when the decoder is unsure where an edge lies, the average of the
# possibilities minimises squared error. VQ-GAN {cite:p}`esser2021vqgan` adds two terms. A
# *perceptual loss* compares feature maps of a fixed network instead of pixels.
#
# ```{note}
# LPIPS {cite:p}`zhang2018lpips` uses a pretrained AlexNet by default (VQ-GAN uses its VGG-16
# variant). The book downloads nothing at run time, so it trains its own `FeatureNet` to name the
# colour and shape in each cell of an exhibit's 3 × 3 grid, and compares its channel-normalised
# features.
# ```
#
# A *PatchGAN* discriminator {cite:p}`isola2017pix2pix` scores
# overlapping patches as real or reconstructed, trained with the hinge loss
# $\mathcal L_D=\mathbb E[\max(0,1-D(x))]+\mathbb E[\max(0,1+D(\hat x))]$, while the decoder
# minimises $-\mathbb E[D(\hat x)]$ with the adaptive weight
# $\lambda=\lVert\nabla_{G_L}\mathcal L_\text{rec}\rVert/(\lVert\nabla_{G_L}\mathcal L_\text{GAN}\rVert+\delta)$
# taken at the decoder's last layer $G_L$, which keeps the two gradients on the same scale.
# The two players have opposite goals, so each gets its own optimiser: `loop.fit` takes a list of
# `Stage`s and steps them in turn on the same batch — first the tokenizer on its loss, then the
# discriminator on real images against the reconstructions the tokenizer just produced.

# %%
print(inspect.getsource(vq.adaptive_weight))
print(inspect.getsource(vq.generator_loss))
print(inspect.getsource(vq.vqgan_stages))

# %%
# NBVAL_CHECK_OUTPUT
features = vq.load_feature_net()
accuracy, baseline = vq.feature_net_accuracy(features), vq.empty_cell_baseline()
print(f"feature net: per-cell colour/shape accuracy {accuracy:.0%} on held-out exhibits "
      f"(always answering 'empty': {baseline:.0%})")

# %% [markdown]
# Both runs below start from the tokenizer and fine-tune it for the same number of steps at the same
# 64 tokens per image: one with MSE alone, one with MSE + perceptual + adversarial terms.

# %% mystnb={"figure": {"caption": "Eight held-out exhibits (top) and their reconstructions after 20 more training steps of the tokenizer with MSE alone (middle) and with the VQ-GAN losses (bottom), both at 64 codes per exhibit.", "name": "fig-ch2-vqgan"}, "image": {"alt": "Three rows of eight small exhibits: the originals with crisp shapes, then two rows of blurred reconstructions that look alike at this size; the bottom row's edges are slightly more contrasted."}}
import copy

finetuned = {}
for label, cfg in {"MSE only": vq.VQGANConfig(steps=20, perceptual_weight=0.0, disc_weight=0.0),
                   "VQ-GAN": vq.VQGANConfig(steps=20, perceptual_weight=1.0, disc_weight=0.5)}.items():
    gan = vq.VQGAN(copy.deepcopy(tokenizer), vq.PatchDiscriminator(32, 3), vq.PerceptualLoss(features))
    vq.train_vqgan(gan, cfg, progress=False)
    finetuned[label] = gan.tokenizer.eval()
val64 = vq.eval_images(64, 64)
for label, tok in finetuned.items():
    rec = tok.reconstruct(val64)
    print(f"{label:9s} PSNR {vq.psnr(rec, val64):.2f} dB, edge energy {vq.sharpness(rec) / vq.sharpness(val64):.0%} of the originals'")
show(vqplot.reconstructions(val64, {k: t.reconstruct(val64) for k, t in finetuned.items()}, n=8))

# %% [markdown]
# The VQ-GAN run ({numref}`fig-ch2-vqgan`, bottom row) gives up a little PSNR for more edge energy (the mean absolute difference between
# neighbouring pixels, relative to the originals): the perceptual and adversarial terms pay for
# detail that MSE would average away. Twenty CPU steps only start this; the `base` preset trains
# for thousands.
#
# ## 2.8 MaskGIT: generating and inpainting exhibits as codes
#
# Once images are codes, generating an image is predicting tokens. MaskGIT {cite:p}`chang2022maskgit`
# trains a *bidirectional* transformer to fill in masked codes: a random fraction $\gamma(r)$ of the
# 64 codes is replaced by a `[MASK]` token, with $r\sim U(0,1)$ and the cosine schedule
# $\gamma(r)=\cos(\pi r/2)$, and the loss is cross-entropy on the masked positions. To sample, start
# fully masked; at step $t$ of $T$ predict every masked code, keep the most confident, and re-mask
# the $\gamma(t/T)$ fraction that the model is least sure of. $T=8$ steps replace the 64 sequential
# steps of an autoregressive model. "Least sure" is measured on the log-probability of each
# freshly sampled code plus Gumbel noise whose scale falls linearly to zero over the steps
# (Chang et al.'s choice temperature): early on the noise spreads the first picks over the image
# instead of letting the blandest, most probable codes win everywhere. Codes kept at one step stay
# fixed for the rest. How much noise is enough depends on the model, as we shall measure.
#
# One detail decides whether this works at all. A masked position's input is the `[MASK]`
# embedding *plus its position embedding*, and nothing else tells two masked positions apart.
# PyTorch's `nn.Embedding` starts at standard deviation 1 while the position table starts at
# 0.02 (as in BERT and MaskGIT): left so, the position signal is fifty times weaker, every
# masked position sees nearly the same input, and the model predicts one distribution for all
# of them. Sampling more steps then only re-draws the most common codes. `MaskGIT` therefore
# starts its token embedding at 0.02 too.

# %%
train_codes = tokenizer.encode(Museum("train", 64, length=4096).tensors(0, 4096))
mg = vq.MaskGIT(vq.MaskGITConfig(codebook_size=tokenizer.codebook_size, grid=tokenizer.grid))
print(f"{sum(p.numel() for p in mg.parameters()):,} parameters, {len(train_codes)} training exhibits as codes")
history = vq.train_maskgit(mg, train_codes, vq.MaskGITTrainConfig(steps=300, batch_size=32), progress=False)
print(f"masked-token loss: {history[0]['loss']:.2f} -> {history[-1]['loss']:.2f} nats "
      f"(uniform guessing: {torch.log(torch.tensor(float(tokenizer.codebook_size))):.2f})")

# %% [markdown]
# How good are the samples? FID {cite:p}`heusel2017fid` compares Inception features of real and
# generated images; we use the same Fréchet distance on our `FeatureNet`'s pooled features. For
# scale, the tokenizer's own reconstructions of held-out exhibits set a floor.

# %% mystnb={"figure": {"caption": "Fr\u00e9chet distance (on the book's FeatureNet features) between 128 MaskGIT samples and 128 held-out exhibits, against the number of decoding steps $T$: the chapter's 300-step model with the paper's choice temperature 4.5 and the book's default 20, and the same model trained for 3,000 steps (the artifact `maskgit-tiny`) with 20; lower is better. The dashed line is the floor set by the tokenizer's own reconstructions of other held-out exhibits.", "name": "fig-ch2-maskgit-steps"}, "image": {"alt": "Three lines of five points against decoding steps 1, 2, 4, 8 and 16: the 300-step model with choice temperature 4.5 falls to a minimum at a few steps and rises steeply again; with 20 it rises at two steps, then falls to 16 steps; the 3,000-step model starts near them at one step and falls steeply with every step to eight, close to the dashed floor."}}
real = features.embed(vq.eval_images(128, 64)).detach()
floor = vq.frechet_distance(features.embed(tokenizer.reconstruct(Museum("val", 64).tensors(1000, 128))).detach(), real)
trained = vq.load_maskgit_tiny()  # the same model trained ten times longer: vlmbook artifacts build maskgit-tiny
runs = {"paper": (mg, 4.5), "book": (mg, vq.maskgit.CHOICE_TEMPERATURE), "long": (trained, vq.maskgit.CHOICE_TEMPERATURE)}
LABELS = {"paper": "300 steps, choice temperature 4.5", "book": "300 steps, choice temperature 20",
          "long": "3,000 steps (maskgit-tiny), choice temperature 20"}
curves = {}
for name, (model, ct) in runs.items():
    curves[name] = {}
    for steps in (1, 2, 4, 8, 16):
        codes_s = vq.decode(model, n=128, steps=steps, choice_temperature=ct, generator=torch.Generator().manual_seed(0))
        curves[name][steps] = vq.frechet_distance(features.embed(tokenizer.decode(codes_s)).detach(), real)
val_codes = tokenizer.encode(Museum("val", 64).tensors(0, 512))
held_out = {}
for name, model in (("short", mg), ("long", trained)):
    torch.manual_seed(0)  # the same random masks for both models
    held_out[name] = float(vq.masked_token_loss(model.eval(), val_codes)[0].detach())
print(f"floor (tokenizer reconstructions of other exhibits): {floor:.0f}")
print(f"held-out masked-token loss: 300 steps {held_out['short']:.2f} nats, 3,000 steps {held_out['long']:.2f} nats")
print("Fréchet distance of 128 samples by decoding steps T:")
for name, q in curves.items():
    print(f"  {LABELS[name]:50s}", "  ".join(f"T={k} {v:.0f}" for k, v in q.items()))
paper, quality, long = curves["paper"], curves["book"], curves["long"]
paper_best = min(paper, key=paper.get)
for name, q in curves.items():
    for k in (1, 2, 4, 8, 16):
        glue(f"ch2-fd-{name}-t{k}", float(q[k]), display=False)
glue("ch2-fd-paper-best-t", int(paper_best), display=False)
glue("ch2-fd-floor", float(floor), display=False)
glue("ch2-fd-t2-verdict", "already below" if quality[2] < quality[1] else "not yet below", display=False)
falls = all(long[b] < long[a] for a, b in ((1, 2), (2, 4), (4, 8)))
glue("ch2-fd-long-verdict", "falls with every step from one to eight" if falls else
     "does not fall with every step from one to eight", display=False)
near = abs(long[16] - floor) <= 0.3 * floor
glue("ch2-fd-long-floor", "in FeatureNet's eyes its samples come about as close to real exhibits as the tokenizer's "
     "own reconstructions do" if near else "its samples stay further from real exhibits than the tokenizer's own "
     "reconstructions" if long[16] > floor else "below the floor, a sign of how noisy 128 samples are", display=False)
glue("ch2-loss-short", held_out["short"], display=False)
glue("ch2-loss-long", held_out["long"], display=False)
show(vqplot.decoding_steps({LABELS[n]: q for n, q in curves.items()}, floor,
                           ylabel="Fréchet distance (FeatureNet)", title="Sample quality against decoding steps"))

# %% [markdown]
# With the paper's choice temperature, 4.5, more steps help the 300-step model only up to a point
# ({numref}`fig-ch2-maskgit-steps`): the Fréchet distance falls from
# {glue:text}`ch2-fd-paper-t1:.0f` at one step (every code sampled at once, independently) to its
# lowest at $T = ${glue:text}`ch2-fd-paper-best-t`, then climbs to {glue:text}`ch2-fd-paper-t8:.0f` at
# $T = 8$ and {glue:text}`ch2-fd-paper-t16:.0f` at $T = 16$ — the opposite of Chang et al., who find
# quality improving up to about 8–12 steps. The cause is the choice, not the model's predictions:
# a step keeps the codes the model is most confident of, our small, briefly trained MaskGIT is
# most confident of plain wall, and a code kept is context for every later step, so a long
# schedule keeps wall, grows surer of wall, and ends in bland images. Noise of scale 4.5 is too
# small against the spread of this weak model's log-probabilities to break that loop. With the
# book's default of 20, the early picks are close to random positions, the model's confidence
# decides only the late ones, and more steps help from four on: {glue:text}`ch2-fd-book-t4:.0f` at
# $T = 4$, {glue:text}`ch2-fd-book-t8:.0f` at $T = 8$ and {glue:text}`ch2-fd-book-t16:.0f` at
# $T = 16$. Two steps are {glue:text}`ch2-fd-t2-verdict` one ({glue:text}`ch2-fd-book-t2:.0f`
# against {glue:text}`ch2-fd-book-t1:.0f`): likely because after 300 steps the model's predictions
# given a few kept codes are worse than its guesses with none.
#
# Two steps losing to one is the model's youth, not the algorithm's. The same model trained ten times
# longer (the artifact `maskgit-tiny`: 3,000 steps on 8,192 exhibits, about five minutes on one
# core) reaches a held-out masked-token loss of {glue:text}`ch2-loss-long:.2f` nats against
# {glue:text}`ch2-loss-short:.2f`, and its Fréchet distance {glue:text}`ch2-fd-long-verdict`:
# {glue:text}`ch2-fd-long-t1:.0f`, {glue:text}`ch2-fd-long-t2:.0f`, {glue:text}`ch2-fd-long-t4:.0f`
# and {glue:text}`ch2-fd-long-t8:.0f` at $T$ = 1, 2, 4 and 8, as Chang et al. found, and
# {glue:text}`ch2-fd-long-t16:.0f` at 16, against the reconstruction floor's
# {glue:text}`ch2-fd-floor:.0f`: {glue:text}`ch2-fd-long-floor`. Iterative decoding pays once the
# model's confidence means something. (With the paper's 4.5, long schedules still grow worse for
# this model too; Exercise 5 measures which choice noise suits which $T$.)
#
# Inpainting is the guide's use: keep the codes of the top half of an exhibit and let MaskGIT
# fill in the bottom ({numref}`fig-ch2-maskgit-samples`).

# %% mystnb={"figure": {"caption": "MaskGIT (`maskgit-tiny`) at $T = 8$ steps. Top: eight held-out exhibits. Middle: the same exhibits with the codes of their top half kept and the bottom half inpainted. Bottom: eight samples generated from nothing.", "name": "fig-ch2-maskgit-samples"}, "image": {"alt": "Three rows of eight small images: crisp original exhibits; their inpainted versions with the top halves kept and new content in the bottom halves; and unconditional samples of coloured shapes on walls."}}
originals = vq.eval_images(8, 64)
orig_codes = tokenizer.encode(originals)
known = torch.zeros_like(orig_codes, dtype=torch.bool)
known[:, :4] = True                       # keep the top half of every exhibit, inpaint the bottom
inpainted = vq.decode(trained, steps=8, codes=orig_codes, known=known, generator=torch.Generator().manual_seed(2))
samples = tokenizer.decode(vq.decode(trained, n=8, steps=8, generator=torch.Generator().manual_seed(1)))
show(vqplot.image_rows({"original": originals, "bottom inpainted": tokenizer.decode(inpainted),
                        "samples (T=8)": samples}))

# %% [markdown]
# ## Summary
#
# - A vector quantiser is a codebook plus a nearest-neighbour rule; Lloyd's algorithm alternates
#   assignment and centroid steps and never increases distortion.
# - The VQ layer trains through the $\arg\min$ with the straight-through estimator, plus codebook
#   and commitment losses.
# - Plain gradient-trained codebooks collapse; EMA updates with Laplace smoothing, k-means
#   initialisation and dead-code restarts keep (here) at least 95 % of codes in use, measured by
#   usage and perplexity.
# - Gumbel-softmax, FSQ, LFQ, residual VQ and grouped VQ are alternative routes to discrete codes,
#   all behind the same `QuantizerOutput` interface.
# - The book's tokenizer turns a 64-pixel exhibit into 64 nine-bit codes; VQ-GAN losses trade
#   a little PSNR for sharper edges; MaskGIT generates and inpaints exhibits in a few parallel
#   steps. Whether more steps help depends on the model: a briefly trained one is most confident
#   of bland codes and samples worse with two steps than with one, while the same model trained
#   ten times longer improves with every step up to eight, as in the paper. Its token and position
#   embeddings must start on the same scale, or it cannot tell masked positions apart.
#
# ## Exercises
#
# 1. Re-run the collapse experiment with `restart_threshold=0` but `ema=True`. Which of the three
#    remedies matters most here?
# 2. Train `TokenizerConfig(image_size=64, downsample=2)` (16 × 16 codes). How much PSNR do four
#    times as many tokens buy, and what does that cost the guide's context window (Chapter 1)?
# 3. Replace the VQ layer of the tokenizer by FSQ with levels (8, 8, 8): same $K=512$, no codebook
#    loss. Compare usage and PSNR.
# 4. Show that the LFQ entropy loss is minimised when every code is equally likely over the batch
#    and every vector's own code distribution is one-hot.
# 5. Decode the chapter's 300-step MaskGIT and `vq.load_maskgit_tiny()` with `choice_temperature`
#    0, 4.5 and 20 at $T$ = 1, 2, 4 and 8. Which noise suits each model, and why does the answer
#    move with training? Try `nn.init.normal_(mg.tok.weight)` (the default scale) as well.

# %%
nb.report_runtime()
