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
# # Solutions to Chapter 5 — Fusion
#
# Worked solutions to the exercises of {doc}`../05_fusion`. Code and discussion are folded: try
# first. **Most of these solutions are partial.** One run of the chapter's ablation trains a guide
# for {glue:text}`s5-steps` steps, about {glue:text}`s5-run-minutes:.0f` minutes of one CPU core,
# so this notebook cannot train the new runs the exercises ask for within its three minutes.
# Exercises 2 and 5 are solved in full; Exercises 1, 3, 4 and 6 are answered as far as the
# committed records (`bench/results/vlm_ablation.jsonl`, `bench/results/encoder_readout.jsonl`)
# and two short read-out runs allow, and each says which command completes it; Exercise 7 needs new code
# and has a hint and a plan only.

# %%
import statistics

from myst_nb import glue

from vlmbook import nb
from vlmbook.bench.vlm import load_ablation, load_readout, summarise
from vlmbook.fusion import ablation, cost
from vlmbook.plot import fusion as pf
from vlmbook.plot import show

nb.start_chapter(5)
records = load_ablation()
table = summarise(records)
oracle = {r["seed"]: r for r in records if r["variant"] == "recipe" and r["source"] == "oracle"}
glue("s5-steps", f"{oracle[0]['steps']:,}", display=False)
glue("s5-run-minutes", statistics.mean(r["train_seconds"] for r in oracle.values()) / 60, display=False)


def spread(key: str) -> tuple[float, float, float]:
    """(mean, lowest seed, highest seed) of overall held-out accuracy for one row of the table."""
    a = table[key]["all"]
    return a["mean"], a["min"], a["max"]


# %% [markdown]
# ## Exercise 1
#
# The table's `full_prefix` row lets question and image attend to each other both ways
# (PaliGemma-style). Run it for two more seeds. Is its difference from `recipe` larger than the
# spread between seeds?
#
# ```{admonition} Hint
# :class: dropdown
# `python -m vlmbook.fusion.ablation full_prefix 1 --source oracle` (and seed 2) appends records
# to the ablation file; `summarise(load_ablation())` then gives the mean and the range over seeds.
# ```

# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
for key in ("oracle/continuous/recipe/3000", "oracle/continuous/full_prefix/3000"):
    mean, lo, hi = spread(key)
    print(f"{key.split('/')[2]:12s} seeds {table[key]['seeds']}: all {mean:.1f} % (seeds {lo:.1f} to {hi:.1f} %)")
rec_mean, rec_lo, rec_hi = spread("oracle/continuous/recipe/3000")
fp = spread("oracle/continuous/full_prefix/3000")[0]
print(f"full_prefix - recipe mean: {fp - rec_mean:+.1f} points; the recipe's seeds span {rec_hi - rec_lo:.1f} points")
glue("s5-fp-diff", fp - rec_mean, display=False)
glue("s5-recipe-span", rec_hi - rec_lo, display=False)

# %% [markdown]
# ```{admonition} Discussion (partial solution: the two new seeds are not run here)
# :class: dropdown
# With the one committed seed, `full_prefix` differs from the recipe's mean by
# {glue:text}`s5-fp-diff:+.1f` points, while the recipe's own three seeds span
# {glue:text}`s5-recipe-span:.1f` points. One seed of a variant against three of the reference
# cannot separate a lever's effect from the luck of one run: the variant's seed could sit anywhere
# in a range as wide as the recipe's. The two runs of the hint (each as long as the others in the
# table) give `full_prefix` a range of its own; the difference is only worth reporting if it is
# larger than both ranges — or, better, if Chapter 7's paired test on the same test questions
# says so.
# ```
#
# ## Exercise 2
#
# Plot the training curves of one variant over its seeds. How much of a lever's effect is the
# *step* at which the jump happens?

# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
THRESHOLD = 60.0  # accuracy (%) well above the image-blind plateau and below every finished run's best


def curve(r: dict) -> tuple[list[int], list[float]]:
    """(steps, held-out accuracy) of one run: the logged points, then the final greedy score."""
    pts = [(p["step"], p["all"]) for p in r["log"]] + [(r["steps"], r["accuracy"]["all"])]
    return [s for s, _ in pts], [a for _, a in pts]


def jump_step(r: dict) -> int | None:
    """First logged step at which the run's accuracy passes THRESHOLD (None: never)."""
    return next((s for s, a in zip(*curve(r)) if a >= THRESHOLD), None)


rows = []
for variant in ("recipe", "sincos_cells", "open_answers", "no_cell_embed"):
    for r in sorted((r for r in records if r["variant"] == variant and r["source"] == "oracle"),
                    key=lambda r: r["seed"]):
        rows.append((variant, r["seed"], jump_step(r), r["accuracy"]["all"]))
        print(f"{variant:13s} seed {r['seed']}: passes {THRESHOLD:.0f} % at step {jump_step(r) or 'never':>5}, "
              f"final {r['accuracy']['all']:.1f} %")
early = [final for _, _, step, final in rows if step is not None and step <= 1500]
late = [final for _, _, step, final in rows if step is None or step > 1500]
print(f"runs past {THRESHOLD:.0f} % by step 1,500: {len(early)}, final mean {statistics.mean(early):.1f} %; "
      f"later or never: {len(late)}, final mean {statistics.mean(late):.1f} %")
glue("s5-early-n", len(early), display=False)
glue("s5-late-n", len(late), display=False)
glue("s5-early-final", statistics.mean(early), display=False)
glue("s5-late-final", statistics.mean(late), display=False)

# %% mystnb={"figure": {"caption": "Held-out accuracy during training of every seed of two variants of the ablation, from oracle features: the recipe and the variant with fixed sin-cos cell codes. Points every 750 steps (teacher-forced) and at the end (greedy).", "name": "fig-s5-seed-curves"}, "image": {"alt": "Six lines of held-out accuracy against training step, three per variant; each stays low at first and then rises, and the steps at which they rise differ from seed to seed."}} tags=["hide-input"]
show(pf.accuracy_curves({f"{r['variant']}, seed {r['seed']}": curve(r)
                         for r in sorted(records, key=lambda r: (r["variant"], r["seed"]))
                         if r["source"] == "oracle" and r["variant"] in ("recipe", "sincos_cells")},
                        title="oracle features: two variants, three seeds each"))

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# {numref}`fig-s5-seed-curves` draws every seed of the recipe and of the sin-cos variant. A run
# sits on the plateau, jumps, and then climbs slowly — or has not jumped by the last step, as two
# of the sin-cos seeds; what differs between seeds is mostly *when* the jump comes. Counting the runs of four variants by the step at which they pass
# {glue:text}`s5-threshold` %: the {glue:text}`s5-early-n` runs that pass it by step 1,500 finish at
# {glue:text}`s5-early-final:.1f` % on average, the {glue:text}`s5-late-n` that pass it later or
# never at {glue:text}`s5-late-final:.1f` %. At a fixed budget of steps the step of the jump
# therefore decides much of the final score, and a lever that makes the jump earlier or more
# reliable looks, in the table, like a lever that makes the model better. The logs have a point
# every 750 steps only, so the jump step is known to within that; logging more often (the
# `log_every` of the training loop) would pin it down.
# ```

# %% tags=["remove-cell"]
glue("s5-threshold", f"{THRESHOLD:.0f}", display=False)

# %% [markdown]
# ## Exercise 3
#
# Swap the guide's Perceiver Resampler for Chapter 4's Q-Former and measure its read-out. Then
# train the guide on it. Do the read-out and the answers rank the compressors the same way?
#
# ```{admonition} Hint
# :class: dropdown
# `ablation.encoder_readout("qformer", encoder_lr=3e-3)` warms up the encoder with the Q-Former
# exactly as the committed Perceiver read-out was made (same steps, learning rate and seed) and
# returns linear-probe accuracies per cell. Training the guide on it is
# `ablation.run_cell("qformer", 0, 3000, "clip")` after adding the variant as the exercise says.
# ```

# %% tags=["hide-cell"]
SHORT = 400  # warm-up steps of each read-out here (the committed read-outs: 1,500)
ref = next(r for r in load_readout() if r["compressor"] == "perceiver" and r["encoder_lr"] == 3e-3)
short = {c: ablation.encoder_readout(c, encoder_lr=ref["encoder_lr"], steps=SHORT, seed=ref["seed"],
                                     test_scenes=ref["test_scenes"]) for c in ("perceiver", "qformer")}
keys = ("colour", "shape", "size", "all_three")
print(f"{'read-out (%)':34s} " + " ".join(f"{k:>9s}" for k in keys))
for name, r in (("perceiver, committed", ref), ("perceiver, here", short["perceiver"]),
                ("qformer, here", short["qformer"])):
    print(f"{name + ' (' + str(r['steps']) + ' steps)':34s} " + " ".join(f"{r[k]:9.1f}" for k in keys))
glue("s5-short", SHORT, display=False)
glue("s5-ref-steps", f"{ref['steps']:,}", display=False)
glue("s5-qf-all", short["qformer"]["all_three"], display=False)
glue("s5-pc-all", short["perceiver"]["all_three"], display=False)
glue("s5-ref-all", ref["all_three"], display=False)

# %% [markdown]
# ```{admonition} Discussion (partial solution: short warm-ups, and the guide is not trained on the Q-Former)
# :class: dropdown
# After {glue:text}`s5-short` warm-up steps each (same learning rate, seed and test exhibits as the
# committed read-outs, which use {glue:text}`s5-ref-steps`), the Q-Former's features give all
# three attributes of a cell right for {glue:text}`s5-qf-all:.1f` % of the cells, against
# {glue:text}`s5-pc-all:.1f` % for the Perceiver ({glue:text}`s5-ref-all:.1f` % after the committed
# warm-up). A ranking after a short warm-up may still change with training: the full read-out is
# `ablation.encoder_readout("qformer", encoder_lr=3e-3)`, as long as the committed one. The read-out
# ranks the compressors on what a linear head can read; whether the guide's *answers* rank them the same way needs the guide trained on each
# (`run_cell`, one run per seed, three seeds to be safe), because the language model must also
# learn to find the right cell, and §5.7 shows that this search, not the read-out, is what stalls
# most runs. A ranking that agrees would say the read-out is a cheap proxy for choosing a
# compressor; one that disagrees would say the search, not the features, decides.
# ```
#
# ## Exercise 4
#
# Train the gated route with the recipe (`--route gated`). Can cross-attention cite?
#
# ```{admonition} Hint
# :class: dropdown
# `python -m vlmbook.fusion.ablation recipe SEED --source clip --route gated`. The committed records
# already hold the gated route trained with the curriculum (`clip/gated/curriculum`); compare its
# citation precision with the prefix route's, and with the precision of a guide that cites at
# random.
# ```

# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
for key in ("clip/continuous/curriculum/3000", "clip/gated/curriculum/3000"):
    row = table[key]
    print(f"{key:34s} all {row['all']['mean']:5.1f} %, citation precision {row['cite_precision']['mean']:5.1f} % "
          f"(seeds {row['cite_precision']['min']:.1f} to {row['cite_precision']['max']:.1f})")
gated = table["clip/gated/curriculum/3000"]
glue("s5-gated-cite", gated["cite_precision"]["mean"], display=False)
glue("s5-gated-all", gated["all"]["mean"], display=False)
glue("s5-prefix-cite", table["clip/continuous/curriculum/3000"]["cite_precision"]["mean"], display=False)

# %% [markdown]
# ```{admonition} Discussion (partial solution: read from the committed curriculum runs, not a new recipe run)
# :class: dropdown
# The committed gated runs (with the curriculum) cite with a precision of
# {glue:text}`s5-gated-cite:.1f` %, against {glue:text}`s5-prefix-cite:.1f` % for the prefix route
# with the same recipe and steps, while answering {glue:text}`s5-gated-all:.1f` % of the questions.
# A likely reason, not tested here: the citation is a token the language model writes, and in the
# gated route the text stream never holds the image's cell tokens, so the model can learn *which*
# cell to name only through cross-attention whose gates start closed. Whether it can cite with
# more steps, or with the plain recipe (the exercise's run), is what the hint's command measures;
# before calling it citing, compare its precision with that of a guide that names a cell at
# random.
# ```
#
# ## Exercise 5
#
# Using `cost.prefix_flops` and `cost.gated_flops`, find the $M$ at which gated fusion becomes
# cheaper than prefix fusion for $L = 32$, $d = 128$, four layers.

# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
L, d, layers = 32, 128, 4
for every in (1, 2):
    m_star = next(M for M in range(0, 100_000) if cost.gated_flops(M, L, d, layers, every=every)
                  < cost.prefix_flops(M, L, d, layers))
    p, g = cost.prefix_flops(m_star, L, d, layers), cost.gated_flops(m_star, L, d, layers, every=every)
    print(f"cross-attention every {every} layer(s): gated is cheaper from M = {m_star} "
          f"({p / 1e6:.2f} vs {g / 1e6:.2f} MFLOP)")
    glue(f"s5-mstar-{every}", m_star, display=False)

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# With a cross-attention block in every layer, gated fusion is cheaper from
# $M$ = {glue:text}`s5-mstar-1` image tokens; with one every two layers (the chapter's setting),
# from $M$ = {glue:text}`s5-mstar-2`. Below that, the gated blocks' own projections and MLP cost
# more than running the few image tokens through the language model. Prefix fusion grows with
# $(M + L)^2$ in attention and $(M + L)$ in the projections of *every* layer, gated fusion only
# linearly in $M$, so the gap widens quickly past the crossing; §5.9 shows that measured time on
# one CPU core does not follow the FLOP count exactly.
# ```
#
# ## Exercise 6
#
# Rebuild `vlm-tiny` with another seed (`ftrain.build_vlm_tiny(1)`) and compare its accuracy per
# question type and its citation precision with the committed one.
#
# ```{admonition} Hint
# :class: dropdown
# `vlmbook artifacts build vlm-tiny --seed 1` (or `ftrain.build_vlm_tiny(1)` in Python) trains the
# guide the way the committed one was trained; Chapter 6's `st.evaluate` (or Chapter 7's harness)
# scores both on the same test exhibits, and Chapter 7's paired tests say whether they differ.
# ```

# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
row = table["clip/continuous/curriculum/3000"]
types = ["colour", "shape", "count", "exists", "locate", "spatial", "compare"]
print("clip/continuous/curriculum over seeds", row["seeds"], "(mean, lowest and highest seed, %):")
for t in types + ["cite_precision"]:
    print(f"  {t:15s} {row[t]['mean']:6.1f}  {row[t]['min']:6.1f}  {row[t]['max']:6.1f}")
widest = max(types, key=lambda t: row[t]["max"] - row[t]["min"])
glue("s5-widest", widest, display=False)
glue("s5-widest-span", row[widest]["max"] - row[widest]["min"], display=False)

# %% [markdown]
# ```{admonition} Discussion (partial solution: no guide is rebuilt here)
# :class: dropdown
# Rebuilding the guide takes longer than this notebook may run, so the rows above show instead
# what a new seed is likely to do: the ablation's runs of the same recipe from Chapter 4's encoder
# differ between seeds most on {glue:text}`s5-widest` questions, by
# {glue:text}`s5-widest-span:.1f` points between the lowest and the highest seed, while the
# single-object types barely move. Expect a rebuilt `vlm-tiny` to land within that kind of range:
# a new seed that scores several points lower on relational questions is not a broken build. The
# comparison the exercise asks for is a paired one (Chapter 7): the same test questions, the
# McNemar test on the questions where the two guides disagree.
# ```
#
# ## Exercise 7
#
# In the discrete route each `<v_k>` row starts as an unrelated random vector. Initialise row $k$
# from a linear projection of the tokenizer's codebook vector $e_k$ (trained with the rest) and
# rerun the `vq` row of the table. Do related codes now start with related meanings?
#
# ```{admonition} Hint
# :class: dropdown
# The `<v_k>` rows are rows of the language model's input embedding. Keep them, but compute them
# as $W e_k + b$ from the (frozen) codebook of Chapter 2's tokenizer with a trained linear map
# $W$, for example with a small module whose output replaces those rows at every forward pass.
# At initialisation, compare the cosine similarity of the rows of two codes with the distance
# between their codewords: with the projection, near codewords start as near embeddings.
# ```
#
# ```{admonition} Not solved here
# :class: dropdown
# This exercise needs a change to the discrete route's embedding (new code) and a 3,000-step run,
# and is not solved in this notebook. The plan: implement the projection as in the hint, check at
# initialisation that embedding similarity follows codeword distance, then run the `vq` row with
# three seeds and compare it with the committed `vq/discrete/recipe` record (one seed).
# ```

# %%
nb.report_runtime()
