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
# # Solutions to Chapter 2 — Vector quantisation
#
# Worked solutions to the exercises of {doc}`../02_vector_quantisation`. Code and discussion are
# folded: try first. The training runs here are deliberately short (a few hundred CPU steps) so
# that the notebook runs in minutes; they show the method and the direction of each effect, and
# the discussion says where a longer run could change the answer.

# %%
import math

import torch
from myst_nb import glue

from vlmbook import nb, rd, vq
from vlmbook.data import Museum

nb.start_chapter(2)

# %% [markdown]
# ## Exercise 1
#
# Re-run the collapse experiment with `restart_threshold=0` but `ema=True`. Which of the three
# remedies matters most here?
#
# ```{admonition} Hint
# :class: dropdown
# `vq.collapse_configs()` returns the two tokenizers of §2.3; `.replace(...)` switches one remedy on
# at a time. Train each with `vq.train_tokenizer` on the same seed and measure with
# `vq.evaluate_tokenizer`.
# ```

# %% tags=["hide-input"]
plain = vq.collapse_configs()["plain VQ"]
variants = {"plain VQ": plain,
            "EMA only": plain.replace(ema=True),
            "k-means init only": plain.replace(kmeans_init=True),
            "restart only": plain.replace(restart_threshold=1.0)}  # all three together: the chapter's §2.3
val32 = vq.eval_images(256, 32)
usage = {}
for label, cfg in variants.items():
    torch.manual_seed(0)
    model = vq.VQTokenizer(cfg)
    vq.train_tokenizer(model, vq.TokenizerTrainConfig(steps=120, batch_size=16, seed=0), progress=False)
    m = vq.evaluate_tokenizer(model, val32)
    usage[label] = m["usage"]
    print(f"{label:18s} PSNR {m['psnr']:.1f} dB  usage {m['usage']:.0%}  perplexity {m['perplexity']:.0f}")
best = max((k for k in usage if k != "plain VQ"), key=usage.get)
glue("s2-best-remedy", best, display=False)
print("single remedy with the highest usage:", best)

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# Read the usage column: the single remedy that revives most codes here is
# **{glue:text}`s2-best-remedy`**. EMA alone moves only codes that win an assignment, so codes
# initialised far from the encoder's outputs stay dead without k-means initialisation or a restart;
# a restart moves dead codes onto live data whatever the update rule. With 120 steps this is one
# seed of a short run: repeat with `seed=1, 2` before trusting a small difference.
# ```
#
# ## Exercises 2 and 3
#
# **2.** Train `TokenizerConfig(image_size=64, downsample=2)` (16 × 16 codes). How much PSNR do four
# times as many tokens buy, and what does that cost the context window?
# **3.** Replace the VQ layer by FSQ with levels (8, 8, 8): same $K = 512$, no codebook loss. Compare
# usage and PSNR.
#
# ```{admonition} Hint
# :class: dropdown
# Compare like with like: train all three tokenizers here with the same recipe and number of steps
# (the committed `tiny` tokenizer trained longer). FSQ needs `quantizer="fsq"`, `levels=(8, 8, 8)`
# and `code_dim=3` (one channel per level).
# ```

# %% tags=["hide-input"]
STEPS = 100
tiny = vq.TokenizerConfig.tiny()
configs = {"VQ 8x8": tiny,
           "VQ 16x16": tiny.replace(downsample=2),
           "FSQ 8x8 (8,8,8)": tiny.replace(quantizer="fsq", levels=(8, 8, 8), code_dim=3)}
val64 = vq.eval_images(256, 64)
results = {}
for label, cfg in configs.items():
    torch.manual_seed(0)
    model = vq.VQTokenizer(cfg)
    vq.train_tokenizer(model, vq.TokenizerTrainConfig.tiny().replace(steps=STEPS, seed=0), progress=False)
    results[label] = (model, vq.evaluate_tokenizer(model, val64))
    tokens = model.grid ** 2
    m = results[label][1]
    print(f"{label:16s} {tokens:3d} tokens, K={model.codebook_size}: PSNR {m['psnr']:.2f} dB,"
          f" usage {m['usage']:.0%}")
gain = results["VQ 16x16"][1]["psnr"] - results["VQ 8x8"][1]["psnr"]
glue("s2-psnr-gain", gain, display=False)
glue("s2-tokens-8", results["VQ 8x8"][0].grid ** 2, display=False)
glue("s2-tokens-16", results["VQ 16x16"][0].grid ** 2, display=False)
glue("s2-steps", STEPS, display=False)
glue("s2-fsq-gap", abs(results["FSQ 8x8 (8,8,8)"][1]["psnr"] - results["VQ 8x8"][1]["psnr"]), display=False)
glue("s2-recipe-ratio", vq.tokenizer.TINY_TRAIN.steps // STEPS, display=False)
glue("s2-preset-steps", vq.TokenizerTrainConfig.tiny().steps, display=False)
budget = rd.image_token_budget(2048, 500)
for label in ("VQ 8x8", "VQ 16x16"):
    fits = budget // results[label][0].grid ** 2
    glue(f"s2-fit-{results[label][0].grid}", fits, display=False)
    print(f"{label}: {fits} images fit in a 2048-token context beside 500 text tokens")

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# **Exercise 2.** Going from {glue:text}`s2-tokens-8` to {glue:text}`s2-tokens-16` tokens changes
# PSNR by {glue:text}`s2-psnr-gain:+.2f` dB after the same {glue:text}`s2-steps` steps. In Chapter 1's
# terms, each image now takes four times as much of the context window: in a 2,048-token context
# with 500 tokens of text, {glue:text}`s2-fit-16` images fit where {glue:text}`s2-fit-8` did. Whether the PSNR is
# worth it depends on what the guide must read (plaque digits need the finer grid; colours and
# shapes do not).
#
# **Exercise 3.** FSQ needs no codebook loss and cannot collapse in the VQ sense: its "codebook"
# is the grid of $8^3 = 512$ rounded values, so usage depends only on whether the encoder spreads
# its outputs over the grid — and after this short run it has not (compare the usage column). The
# two 8 × 8 tokenizers end {glue:text}`s2-fsq-gap:.1f` dB apart, but after so few steps both
# reconstruct only the wall and coarse blobs (the chapter's `tiny` tokenizer, trained
# {glue:text}`s2-recipe-ratio` times longer, does much better), so one short run of one seed cannot
# rank VQ against FSQ on PSNR. Train both for the {glue:text}`s2-preset-steps` steps of
# `vq.TokenizerTrainConfig.tiny()` to answer that; expect FSQ's usage to rise as its encoder learns
# to use the range of each channel.
# ```
#
# ## Exercise 4
#
# Show that the LFQ entropy loss is minimised when every code is equally likely over the batch and
# every vector's own code distribution is one-hot.

# %% [markdown]
# ```{admonition} Solution
# :class: dropdown
# The loss is $\mathcal L = \mathbb E_i\,H\big(p(\cdot\mid z_i)\big) - H\big(\mathbb E_i\,p(\cdot\mid z_i)\big)$.
# Each term of the first sum is an entropy, so it is $\ge 0$, with equality exactly when every
# $p(\cdot\mid z_i)$ is one-hot. The second term is the entropy of a distribution over $K$ codes,
# so it is $\le \ln K$ (in nats, as `LFQ.entropy_loss` computes it), with equality exactly when the
# batch average is uniform. Hence $\mathcal L \ge -\ln K$, and the bound is reached when both conditions hold together — which is
# possible (for a batch of size at least $K$, assign each code to equally many vectors). Any other
# configuration loses on at least one term. The check below evaluates `LFQ.entropy_loss` at such a
# configuration, and at a collapsed one. (The method's docstring says "bits"; the numbers below
# show that it returns nats.)
# ```

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
lfq = vq.make_quantizer(kind="lfq", dim=4, codebook_size=16)
corners = lfq.all_vectors * 20.0  # every code once, far from the decision boundaries: near one-hot
collapsed = lfq.all_vectors[:1].repeat(16, 1) * 20.0  # one code for the whole batch
# entropy_loss works with natural logarithms: its values are in nats, and the bound is -ln K.
print(f"all 16 codes, confident: {float(lfq.entropy_loss(corners)):+.3f} nats (bound -ln K = {-math.log(16):+.3f})")
print(f"one code, confident:     {float(lfq.entropy_loss(collapsed)):+.3f} nats")

# %% [markdown]
# ## Exercise 5
#
# Decode the chapter's 300-step MaskGIT and `vq.load_maskgit_tiny()` with `choice_temperature` 0,
# 4.5 and 20 at $T$ = 1, 2, 4 and 8. Which noise suits each model, and why does the answer move
# with training? Try `nn.init.normal_(mg.tok.weight)` (the default scale) as well.
#
# ```{admonition} Hint
# :class: dropdown
# Train a model with the chapter's recipe (its codes and 300 steps; seeded here, so its numbers
# differ a little from the chapter's) and keep the same 128 samples, seed and `FeatureNet`, so that
# only the training length and `choice_temperature` change.
# ```

# %% tags=["hide-input"]
tokenizer, features = vq.load_tiny_tokenizer(), vq.load_feature_net()
train_codes = tokenizer.encode(Museum("train", 64, length=4096).tensors(0, 4096))
real = features.embed(vq.eval_images(128, 64)).detach()
torch.manual_seed(0)
short = vq.MaskGIT(vq.MaskGITConfig(codebook_size=tokenizer.codebook_size, grid=tokenizer.grid))
vq.train_maskgit(short, train_codes, vq.MaskGITTrainConfig(steps=300, batch_size=32), progress=False)
models = {"300 steps": short.eval(), "3,000 steps (maskgit-tiny)": vq.load_maskgit_tiny()}
CTS = (0.0, 4.5, vq.maskgit.CHOICE_TEMPERATURE)
fd = {}
for name, model in models.items():
    for ct in CTS:
        for steps in (1, 2, 4, 8):
            codes = vq.decode(model, n=128, steps=steps, choice_temperature=ct, generator=torch.Generator().manual_seed(0))
            fd[name, ct, steps] = round(vq.frechet_distance(features.embed(tokenizer.decode(codes)).detach(), real))
        print(f"{name:27s} choice_temperature={ct:4g}: Fréchet distance by T:",
              {t: fd[name, ct, t] for t in (1, 2, 4, 8)})
for name in models:
    key = "long" if "3,000" in name else "short"
    # the best choice noise for each schedule length (T >= 2: with one step nothing is chosen)
    best_ct = [min(CTS, key=lambda c: fd[name, c, t]) for t in (2, 4, 8)]
    print(f"{name}: best choice_temperature at T = 2, 4, 8:", ", ".join(f"{c:g}" for c in best_ct))
    glue(f"s2-best-cts-{key}", ", ".join(f"{c:g}" for c in best_ct), display=False)
    glue(f"s2-rising-{key}", "rises" if best_ct == sorted(best_ct) and best_ct[0] < best_ct[-1] else "does not rise",
         display=False)
long = "3,000 steps (maskgit-tiny)"
glue("s2-long-0-8", fd[long, 0.0, 8], display=False)
glue("s2-long-20-8", fd[long, vq.maskgit.CHOICE_TEMPERATURE, 8], display=False)

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# The best noise depends on the number of steps more than on the model. For T = 2, 4 and 8 the
# lowest Fréchet distance comes with `choice_temperature` = {glue:text}`s2-best-cts-short` for the
# 300-step model and {glue:text}`s2-best-cts-long` for the 3,000-step one: the best noise
# {glue:text}`s2-rising-long` with the schedule's length. Without noise (0) the choice is pure
# confidence, and a model is most confident of the commonest codes, plain wall: a long schedule
# keeps wall step after step (the 3,000-step model reaches {glue:text}`s2-long-0-8` at T = 8,
# against {glue:text}`s2-long-20-8` with the book's 20). Noise makes the early picks closer to
# random positions and leaves the model's confidence to decide only the late ones; the more steps
# a schedule has, the more early picks it makes, and the more noise it needs to keep them from
# filling up with wall. Read the printed table for which noise suits which $T$ here (the book's
# default of 20 was chosen for eight steps and more); a model trained far longer may move them. With
# `nn.init.normal_(mg.tok.weight)` the token embeddings start fifty times larger than the position
# embeddings and every masked position sees nearly the same input (§2.8); train it and decode it
# as above to see what that does to the samples.
# ```

# %%
nb.report_runtime()
