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
# # Chapter 7 — Evaluation: when is a difference real?
#
# Every chapter so far ended with a number: a BD-rate, a speed ratio, an accuracy. This chapter
# asks what those numbers are worth. A guide's accuracy on one set of exhibits is not its accuracy
# on the next set, and a codec that beats its reference on one training seed may lose on the next.
# We build the harness that turns "a number" into "a number with an error bar",
# and that says *why* the guide is wrong when it is.
#
# **What you will build and measure**
#
# - one results schema: every answer of every model is a row (Parquet or CSV), versioned and
#   validated when read, written by `vlmbook eval MODEL --split test --out FILE`;
# - {term}`bootstrap <bootstrap confidence interval>` confidence intervals on accuracy (percentile and BCa {cite:p}`efron1987bca`), and
#   mean ± standard deviation over training seeds;
# - paired comparisons of two models on the same questions: the exact {term}`McNemar <McNemar test>` test
#   {cite:p}`mcnemar1947,dietterich1998` and the paired bootstrap {cite:p}`koehn2004`;
# - an error taxonomy computed from the museum's ground truth: perception, localisation,
#   reasoning, language;
# - the sweeps that tie the book together, read from the schema: accuracy against latency (a Pareto
#   front), accuracy against image tokens — Chapter 4's probe, and the guide itself per fusion route
#   and compressor — with Chapter 4's budget curve and chooser, and a tokenizer's reconstruction
#   and codebook usage against tokens per image;
# - one report of every benchmark (`python -m vlmbook.bench all`), and the museum exported for
#   the field's standard harness, lmms-eval {cite:p}`zhang2025lmmseval`.
#
# The guide's answers were computed once by `python -m vlmbook.bench eval` (a few minutes on one
# core) and committed as `bench/results/eval.predictions.parquet`; this notebook reads them.

# %%
import inspect
import json
import pprint
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlmbook import eval as ev
from vlmbook import nb
from vlmbook.eval import metrics, stats, taxonomy
from vlmbook.plot import show
from vlmbook.plot import eval as eplot
from myst_nb import glue  # numbers quoted in the prose are inserted from the computations

nb.start_chapter(7)
RESULTS = Path("../bench/results")

# %% [markdown]
# ## 7.1 One row per answer
#
# A results file is a table with one row per (model, question). The row carries what is needed to
# score the answer again (question id, reference, raw output, cited patches), to compare it with
# another model on the *same* question, and to say where and how fast it ran (device, threads,
# package versions, encode time, time to first token, tokens/s, peak memory).

# %%
# NBVAL_CHECK_OUTPUT
for name, typ, nullable, meaning in ev.FIELDS:
    print(f"{name:19s} {str(typ):18s} {'optional' if nullable else '        '}  {meaning}")

# %% [markdown]
# The file below holds three runs on the same {glue:text}`ch7-scenes` test exhibits: the committed
# guide `vlm-tiny` (Chapter 5), the same guide shown JPEG-compressed exhibits (quality
# {glue:text}`ch7-jpeg-quality`, Chapter 1's codec), and
# the image-blind majority baseline (each question type's most common training answer).

# %%
# NBVAL_CHECK_OUTPUT
preds = ev.read_predictions(RESULTS / "eval.predictions.parquet")
RUNS = ev.runs(preds)
correct = {r: np.array(ev.select_run(preds, r).column("correct").to_pylist()) for r in RUNS}
for r in RUNS:
    print(f"{r:18s} {len(correct[r]):5d} questions")
row = ev.select_run(preds, RUNS[0]).slice(0, 1).to_pylist()[0]
scenes = {q.split(":")[2] for q in ev.select_run(preds, RUNS[0]).column("question_id").to_pylist()}
glue("ch7-scenes", len(scenes), display=False)
glue("ch7-jpeg-quality", int(RUNS[1].rsplit("jpeg", 1)[1]), display=False)  # from the run id, vlm-tiny-jpegQ
pprint.pprint({k: row[k] for k in ("question_id", "qtype", "question", "reference", "output", "correct")},
              width=100, sort_dicts=False)

# %% [markdown]
# Reading validates. A file with a column missing, a value of the wrong type, a row whose
# `correct` disagrees with its answer, or rows from two schema versions is refused with an error
# that says what is wrong — never silently misread:

# %%
# NBVAL_CHECK_OUTPUT
tmp = Path(tempfile.mkdtemp())
mixed = preds.slice(0, 3).set_column(0, "schema_version", pa.array([1, 2, 1], pa.int32()))
pq.write_table(mixed, tmp / "mixed.parquet")
try:
    ev.read_predictions(tmp / "mixed.parquet")
except ev.SchemaError as e:
    print("SchemaError:", str(e).split(": ", 1)[1])

# %% [markdown]
# The only code that knows how a model answers is one adapter, `vlmbook.eval.predict`: it encodes
# the exhibit once, caches the image prefix, and asks every question about it.

# %%
print(inspect.getsource(ev.predict))

# %% [markdown]
# ## 7.2 How sure are we?
#
# Accuracy is the mean of a 0/1 vector over questions. Had the museum drawn other exhibits, the
# number would differ; the **bootstrap** estimates by how much, by redrawing the questions with
# replacement many times. The percentile interval takes the 2.5 % and 97.5 % quantiles of the
# redrawn accuracies; **BCa** shifts those quantiles to correct for bias and skew (it matters near
# 0 % or 100 %). Both are checked against `scipy.stats.bootstrap` in the tests.
# {numref}`fig-ch7-intervals` draws the BCa intervals of the three runs.

# %% mystnb={"figure": {"caption": "Accuracy of the three runs on the same test questions, each with its 95 % BCa bootstrap interval over questions.", "name": "fig-ch7-intervals"}, "image": {"alt": "Three horizontal error bars on an accuracy axis in percent: the majority baseline far left, the guide on JPEG-compressed exhibits in between, and the guide on the original exhibits furthest right; the bars are short and do not overlap."}}
# NBVAL_CHECK_OUTPUT
intervals = {}
for r in RUNS:
    c = correct[r]
    p = stats.bootstrap_ci(c, method="percentile")
    b = stats.bootstrap_ci(c, method="bca")
    intervals[r] = (100 * c.mean(), 100 * b[0], 100 * b[1])
    print(f"{r:18s} {100 * c.mean():5.1f} %   percentile [{100 * p[0]:.1f}, {100 * p[1]:.1f}]   "
          f"BCa [{100 * b[0]:.1f}, {100 * b[1]:.1f}]")
show(eplot.accuracy_intervals(intervals, title="accuracy with 95 % BCa intervals"))

# %% [markdown]
# Two models asked the **same** questions should be compared question by question. Only the
# questions where exactly one of them is right carry information: if the models were equally good,
# each such question would be a fair coin. That is McNemar's exact test. The paired bootstrap
# redraws questions once for both models and gives an interval on the difference itself.

# %%
# NBVAL_CHECK_OUTPUT
guide, jpeg, base = RUNS[0], RUNS[1], RUNS[2]


def compare(a: str, b: str, sel: np.ndarray | None = None) -> dict:
    ca, cb = (correct[a], correct[b]) if sel is None else (correct[a][sel], correct[b][sel])
    m, pb = stats.mcnemar_exact(ca, cb), stats.paired_bootstrap(ca, cb)
    print(f"{a} vs {b} on {len(ca)} questions: difference {100 * pb['difference']:+.1f} points, "
          f"95 % CI [{100 * pb['low']:+.1f}, {100 * pb['high']:+.1f}]")
    print(f"    only {a} right {m['only_a']}, only {b} right {m['only_b']}, McNemar p = {m['p_value']:.2g} -> "
          f"{'significant' if m['p_value'] < 0.05 else 'not significant'} at 5 %")
    return m


m_base = compare(guide, base)
m_jpeg = compare(guide, jpeg)
overlap = intervals[jpeg][2] >= intervals[guide][1]
print(f"the two separate 95 % intervals of {guide} and {jpeg} overlap: {overlap}")

# %% [markdown]
# The guide beats answering blind by a margin no resampling explains away, and JPEG at quality
# {glue:text}`ch7-jpeg-quality`
# costs it more than the noise of the test questions too: here even the two separate intervals keep
# apart. For smaller differences they are a blunt tool. Most questions are answered the same way
# with and without compression; the paired tests remove that shared variation and can resolve
# differences that two overlapping intervals hide (Exercise 2 looks for one). Now the trap: the same
# comparisons on the first ten exhibits only, as one would after a quick test.

# %%
# NBVAL_CHECK_OUTPUT
scene_of = np.array([int(q.split(":")[2]) for q in ev.select_run(preds, guide).column("question_id").to_pylist()])
small = scene_of < 10
m_small = compare(guide, jpeg, small)
m_small_base = compare(guide, base, small)

# %% [markdown]
# On a handful of exhibits a difference of several points can come from which questions happened to
# be asked; the tests say which of the two gaps survives at this sample size. **Seeds** are the other half of the uncertainty: a model trained again with
# another seed is another model. Chapter 3's benchmark trained each codec with three seeds; here
# is its BD-rate against CompressAI's, seed by seed:

# %%
# NBVAL_CHECK_OUTPUT
codec = json.loads((RESULTS / "codec.json").read_text())["table"]
per_seed = {k: v for k, v in codec.get("bd_rate_percent_per_seed", {}).items() if k.startswith("ours_vs_compressai_seed")}
mean, std = stats.mean_std(list(per_seed.values()))
for k, v in per_seed.items():
    print(f"{k:28s} {v:+6.1f} %")
print(f"mean ± std over {len(per_seed)} seeds: {mean:+.1f} ± {std:.1f} %")

# %% [markdown]
# One seed alone would have reported only its own line; the standard deviation over seeds says how
# far apart two runs of the *same* recipe land. A difference is real when it is larger than both kinds of noise: the questions' (the
# bootstrap) and the seeds' (the standard deviation over training runs).

# %% [markdown]
# ## 7.3 Why is the guide wrong?
#
# The museum knows every scene, so every wrong answer can be explained. The rules are in
# `vlmbook.eval.taxonomy` and are checked in this order:

# %%
print(taxonomy.__doc__.split("\n\n", 1)[1])

# %% [markdown]
# Counted over all test questions, the causes split as printed below; {numref}`fig-ch7-error-causes`
# breaks the guide's wrong answers down by question type.

# %% mystnb={"figure": {"caption": "The committed guide's wrong answers on the test questions, counted by question type (rows) and cause (columns), the causes assigned from each scene's ground truth by the rules above.", "name": "fig-ch7-error-causes"}, "image": {"alt": "A heat map of question types against four causes (perception, localisation, reasoning, language), each cell labelled with its count; one dark cell, reasoning errors on spatial questions, holds most of the wrong answers."}}
# NBVAL_CHECK_OUTPUT
counts = {r: taxonomy.error_counts(ev.select_run(preds, r)) for r in (guide, jpeg)}
for r in (guide, jpeg):
    shares = taxonomy.category_shares(counts[r])
    print(f"{r:18s}", "  ".join(f"{k} {100 * v:4.1f} %" for k, v in shares.items()))
show(eplot.error_heatmap(counts[guide], title=f"{guide}: wrong answers by cause"))

# %% [markdown]
# The per-type view shows where each cause lives; for colour questions, the confusion matrix of
# {numref}`fig-ch7-colour-confusion` shows which colours the guide gives instead of the right one.

# %% mystnb={"figure": {"caption": "Confusion matrix of the committed guide's answers to the test colour questions: reference colour (rows) against the colour the guide answered (columns), each cell a count.", "name": "fig-ch7-colour-confusion"}, "image": {"alt": "An eight-by-eight heat map of colours with dark, labelled cells along the diagonal and almost every off-diagonal cell empty, so nearly all colour answers are right."}}
refs, answers, mat = taxonomy.answer_confusion(ev.select_run(preds, guide), "colour")
show(eplot.confusion_heatmap(refs, answers, mat, title=f"{guide}: colour questions"))

# %% [markdown]
# ## 7.4 How fast, and where?
#
# The rows also carry the latency of each answer, measured on the thread count they record.

# %%
g = ev.select_run(preds, guide)
for col in ("encode_ms", "ttft_ms", "tokens_per_s"):
    v = np.array([x for x in g.column(col).to_pylist() if x is not None])
    print(f"{col:13s} median {np.median(v):8.1f}   (threads {g.column('threads')[0].as_py()}, "
          f"device {g.column('device')[0].as_py()})")

# %% [markdown]
# ### Accuracy against latency
#
# Every configuration Chapter 5 trained from an image — each route, compressor and lever in its
# ablation — has an accuracy (over its seeds) and a cost. Time to first token depends on the
# architecture and the length of the sequence, not on the trained weights, so
# `sweeps.accuracy_latency` times a model of each configuration here, on one thread, and reads the
# accuracies from the committed ablation. The **{term}`Pareto front`** keeps the configurations that no
# other beats on both axes: anything off it is slower, less accurate, or both, than a choice on it.
# {numref}`fig-ch7-pareto` shows every configuration and the front.

# %% mystnb={"figure": {"caption": "Chapter 5's configurations: held-out accuracy (mean over seeds, bar from the lowest to the highest seed) against time to first token measured here on one thread. Filled markers lie on the Pareto front (dashed), hollow ones off it.", "name": "fig-ch7-pareto"}, "image": {"alt": "Scatter of eight configurations, accuracy in percent against milliseconds to first token, each with its own marker and colour and a vertical range bar; a dashed line joins the filled markers on the front, from the fastest configuration up to the most accurate continuous guide; which configurations lie on it depends on the timings of the run."}}
from vlmbook.bench.vlm import load_ablation  # noqa: E402
from vlmbook.eval import sweeps  # noqa: E402

sweep = sweeps.accuracy_latency(load_ablation(), repeats=5)
for r in sweep:
    print(f"{r['route']:10s} {r['variant']:22s} {r['compressor']:9s} M={r['image_tokens']}  "
          f"accuracy {r['accuracy']:5.1f} % ({r['seeds']} seed{'s' * (r['seeds'] > 1)})  "
          f"TTFT {r['ttft_ms']:5.2f} ms  {'on the front' if r['pareto'] else ''}")
show(eplot.pareto_figure(sweep, title="accuracy against time to first token"))
ttft = [r["ttft_ms"] for r in sweep]
glue("ch7-ttft-spread", max(ttft) - min(ttft), display=False)

# %% [markdown]
# Variants that differ only in how they were trained (a curriculum, more steps) are one
# architecture and share one timing. At nine image tokens the configurations' times to first token
# lie within {glue:text}`ch7-ttft-spread:.1f` ms of each other, and part of that is the noise of
# timing on a shared machine (which configurations reach the front can change from run to run), so
# the front here is decided mostly by accuracy. Every guide in the ablation reads nine image
# tokens, one per exhibit cell; the last part of this section frees the number of tokens $M$ from
# the cells and sweeps it.
#
# ### Accuracy against image tokens
#
# Chapter 4's museum probe has no such tie: it compresses the 64 patch features of the frozen
# encoder to $M$ tokens with each compressor and answers a fixed set of questions from them. Its
# benchmark (`python -m vlmbook.bench resample`, about six minutes on one core) swept $M$ from 1 to
# 64 for every compressor and committed the accuracies in `bench/results/resample.json`. Here the
# record is read through the metrics schema of §7.5, Chapter 4's curve
# $Q(M) = a - b/(M + c)$ is fitted to each compressor again, and the token-budget chooser picks
# $M^*$, the fewest tokens within one point of the best accuracy that fits a
# {glue:text}`ch7-context`-token context holding {glue:text}`ch7-text-len` text tokens.
# {numref}`fig-ch7-budget` shows the points and the fits. This is the probe, not the guide: it
# says how much each extra token *can* buy a reader trained on the same features; the guide itself
# is swept below.

# %% mystnb={"figure": {"caption": "Chapter 4's probe accuracy on held-out exhibits against the number of image tokens M for each compressor (points, read from the committed resample benchmark record), with the fitted Q(M) = a - b/(M + c) (lines) and the accuracy of all 64 patch tokens (dashed).", "name": "fig-ch7-budget"}, "image": {"alt": "Probe accuracy against M on a logarithmic axis from 1 to 64, one colour per compressor with its fitted curve: the Perceiver rises and flattens, the Q-Former and TokenLearner stay nearly flat and low, pixel shuffle lies highest from the start, and ToMe starts lowest and climbs steeply from 16 to 64 tokens; a dashed horizontal line marks the accuracy of all 64 patch tokens."}}
# NBVAL_CHECK_OUTPUT
from vlmbook.plot import resample as rplot  # noqa: E402

CONTEXT, TEXT_LEN = 512, 96
resample_record = json.loads((RESULTS / "resample.json").read_text())
probe = sweeps.budget_rows(metrics.metrics_table("resample", resample_record["table"]))
budget = sweeps.token_budget(probe, context=CONTEXT, text_len=TEXT_LEN, tolerance=0.01)
full_probe = next(r["accuracy"] for r in probe if r["kind"] == "all")
for kind, b in budget.items():
    c = b["curve"]
    at = {r["M"]: r["accuracy"] for r in probe if r["kind"] == kind}
    print(f"{kind:13s} M={min(at)}..{max(at)}: {100 * at[min(at)]:4.1f} -> {100 * at[max(at)]:4.1f} %  "
          f"Q(M) = {c.a:.3f} - {c.b:.3f}/(M + {c.c:.2f})  rmse {100 * c.rmse:.2f} pt  M* = {b['M_star']}")
print(f"all 64 patch tokens: {100 * full_probe:.1f} %")
glue("ch7-context", CONTEXT, display=False)
glue("ch7-text-len", TEXT_LEN, display=False)
for kind in budget:
    glue(f"ch7-mstar-{kind}", budget[kind]["M_star"], display=False)
glue("ch7-rmse-perceiver", 100 * budget["perceiver"]["curve"].rmse, display=False)
glue("ch7-c-tome", budget["tome"]["curve"].c, display=False)
glue("ch7-probe-full", 100 * full_probe, display=False)
show(rplot.accuracy_vs_budget(probe, {k: b["curve"] for k, b in budget.items()}, full=full_probe))

# %% [markdown]
# The chooser turns each curve into a budget, and the shapes of the curves explain the budgets.
# The Perceiver Resampler's accuracy climbs steeply over the first few tokens and flattens, so
# $M^*$ = {glue:text}`ch7-mstar-perceiver` tokens is within a point of its best. Pixel shuffle can
# only make 1, 4, 16 or 64 tokens from the 8 × 8 patch grid, and its fitted curve at 16 is still
# more than a point below its value at 64, so $M^*$ = {glue:text}`ch7-mstar-pixel_shuffle`, although
# the measured points at 16 and 64 are almost equal: the chooser trusts the fit, and a fit through
# four points is a blunt instrument. ToMe gains most between 16 and 64 tokens (it merges the most
# similar patches until $M$ are left, and merging down to a few loses much), so its fit is nearly
# a straight line in $M$ over this range ($c$ = {glue:text}`ch7-c-tome:.0f`) and $M^*$ =
# {glue:text}`ch7-mstar-tome`. The Q-Former and TokenLearner barely move with $M$ (their
# $M^*$ are {glue:text}`ch7-mstar-qformer` and {glue:text}`ch7-mstar-tokenlearner`): for them the
# compressor itself, not the number of its tokens, limits the probe. The statistics of §7.2 apply
# here too. Each point is one training seed, and the Perceiver's points scatter around its curve by
# {glue:text}`ch7-rmse-perceiver:.1f` points (root mean square), more than the one-point tolerance
# the chooser works to: its $M^*$ is a reading of a noisy curve, and a second seed per point
# would be needed to say whether 16 tokens really beat 8.
#
# ### The guide against image tokens
#
# The guide's nine tokens are tied to the cells twice: its warm-up trains token $k$ to describe
# cell $k$, and its citations `<p_k>` name cells. Only the first tie is needed. `VLMConfig.tokens`
# sets $M$ apart from the 3 × 3 grid: the Perceiver Resampler (or another of Chapter 4's
# compressors) makes $M$ tokens, the citations still name the nine cells, and the warm-up's heads
# read every cell's colour, shape and size from all $M$ tokens at once — a joint linear read-out
# (`CellProbe(joint=True)`), since token $k$ can no longer be cell $k$. Each run is one seed of
# Chapter 5's recipe on one thread:
# a fresh 1,500-step warm-up for that $M$ and compressor, then 3,000 language-model steps with the
# curriculum, scored greedily on the 200 held-out exhibits. Nine tokens are trained again with the
# joint read-out, so that every point shares one recipe; the committed guide, whose token $k$ is cell
# $k$, is the dashed line. The Perceiver has three seeds per point on the continuous and the gated
# route; the other compressors, one seed each on the continuous route, at the budgets each can
# make (pixel shuffle only 1, 4 or 16 from the 8 × 8 patches). One point is one command (five to
# seven minutes on a core), for example
# `python -m vlmbook.fusion.ablation curriculum 0 --source clip --route gated --tokens 4 --joint
# --out ../bench/results/vlm_tokens.jsonl` (`--compressor tome` for another compressor).
#
# The discrete route has no compressor: its image tokens are Chapter 2's codes, and its $M$ is the
# code grid of its tokenizer. Chapter 5's museum tokenizer makes 3 × 3 codes from a 48-px exhibit;
# three more, trained with the same recipe (K = 256, 2,400 steps on museum exhibits, one thread),
# make 1, 2 × 2 and 4 × 4 codes from a 64-px exhibit (the artifacts `vq-tokenizer-m1`, `-m4` and
# `-m16`; a 3 × 3 grid does not divide 64 px into stride-2 stages). The language model is trained
# exactly as on the other routes, three seeds per $M$:
# `python -m vlmbook.fusion.ablation curriculum 0 --source vq --route discrete --tokens 4
# --out ../bench/results/vlm_tokens.jsonl`.
# Chapter 4's $Q(M)$ is fitted to each route and compressor with three or more points, and the
# chooser picks $M^*$ as above, to within one point.
# {numref}`fig-ch7-guide-tokens` shows the points and the fits, {numref}`fig-ch7-guide-pareto` their
# times to first token.

# %% mystnb={"figure": {"caption": "The museum guide's held-out accuracy against its number of image tokens M (the mean over seeds per point: three for the Perceiver on the continuous and gated routes and for the discrete route, whose compressor is Chapter 2's tokenizer, one for the other compressors; read from the committed token sweep), with Q(M) fitted where there are three or more points; the dashed line is the committed guide with one token per cell (three seeds).", "name": "fig-ch7-guide-tokens"}, "image": {"alt": "Accuracy in percent against M on a logarithmic axis, one colour per route and compressor with its fitted curve where it has one, and a dashed horizontal line for the committed guide; the continuous route's points rise with M, the gated and discrete routes' stay low and flat."}}
# NBVAL_CHECK_OUTPUT
from vlmbook.bench.vlm import load_readout  # noqa: E402

token_records = load_ablation(RESULTS / sweeps.TOKEN_RECORD)
guide_rows = sweeps.token_rows(token_records)
guide_fit = sweeps.guide_budget(guide_rows, context=CONTEXT, text_len=TEXT_LEN, tolerance=1.0)
cell_guide = next(r for r in sweep if r["route"] == "continuous" and r["variant"] == "curriculum")
for r in guide_rows:
    print(f"{r['route']:10s} {r['compressor']:13s} M={r['image_tokens']:2d}  accuracy {r['accuracy']:5.1f} %  "
          f"single {r['single']:5.1f}  relational {r['relational']:5.1f}  citation precision {r['cite_precision']:5.1f}")
for key, b in guide_fit.items():
    c = b["curve"]
    print(f"{key:24s} Q(M) = {100 * c.a:.1f} - {100 * c.b:.1f}/(M + {c.c:.2f})  rmse {100 * c.rmse:.2f} pt  "
          f"M* = {b['M_star']}")
print(f"committed guide, one token per cell: {cell_guide['accuracy']:.1f} % ({cell_guide['seeds']} seeds)")
readout = {r["image_tokens"]: r for r in load_readout(RESULTS / sweeps.TOKEN_READOUT)}
cell_readout = next(r for r in load_readout() if (r["compressor"], r["encoder_lr"]) == ("perceiver", 3e-3))
print("warm-up read-out, occupied cells with colour, shape and size all right (500 held-out exhibits):")
print("  joint heads: " + ", ".join(f"M={m} {readout[m]['all_three']:.1f} %" for m in sorted(readout))
      + f";  token k = cell k (M=9): {cell_readout['all_three']:.1f} %")
kinds = [{"kind": f"{r['route']} / {r['compressor']}", "M": r["image_tokens"], "accuracy": r["accuracy"]}
         for r in guide_rows]
curves = {k.replace("/", " / "): (lambda M, c=b["curve"]: 100 * c(M)) for k, b in guide_fit.items()}
show(rplot.accuracy_vs_budget(kinds, curves, full=cell_guide["accuracy"], ylabel="guide accuracy (held-out, %)",
                              full_label="committed guide, token k = cell k"))
acc_at = {(r["route"], r["compressor"], r["image_tokens"]): r["accuracy"] for r in guide_rows}
for (route, comp, M), a in acc_at.items():
    glue(f"ch7-guide-{route}-{comp}-{M}", a, display=False)
for key, b in guide_fit.items():
    glue(f"ch7-guide-mstar-{key.replace('/', '-')}", b["M_star"], display=False)
    glue(f"ch7-guide-asym-{key.replace('/', '-')}", 100 * b["curve"].a, display=False)
glue("ch7-guide-cell", cell_guide["accuracy"], display=False)
cp = {r["image_tokens"]: r for r in guide_rows if (r["route"], r["compressor"]) == ("continuous", "perceiver")}
best_m = max(cp, key=lambda m: cp[m]["accuracy"])
glue("ch7-guide-best-m", best_m, display=False)
glue("ch7-guide-best-acc", cp[best_m]["accuracy"], display=False)
glue("ch7-guide-seeds", min(r["seeds"] for r in cp.values()), display=False)
glue("ch7-guide-after-best", "falls" if max(cp) > best_m and cp[max(cp)]["accuracy"] < cp[best_m]["accuracy"] - 1
     else "does not rise", display=False)
glue("ch7-guide-max-m", max(cp), display=False)
glue("ch7-guide-max-m-acc", cp[max(cp)]["accuracy"], display=False)
glue("ch7-guide-max-m-lo", cp[max(cp)]["accuracy_max"], display=False)
glue("ch7-guide-best-lo", cp[best_m]["accuracy_min"], display=False)
gated = [r["accuracy"] for r in guide_rows if r["route"] == "gated"]
glue("ch7-gated-lo", min(gated), display=False)
glue("ch7-gated-hi", max(gated), display=False)
glue("ch7-joint-cost", cell_guide["accuracy"] - cp[9]["accuracy"], display=False)
glue("ch7-readout-joint-9", readout[9]["all_three"], display=False)
glue("ch7-readout-cell", cell_readout["all_three"], display=False)
glue("ch7-readout-16", readout[16]["all_three"], display=False)
glue("ch7-readout-1", readout[1]["all_three"], display=False)
better16 = readout[16]["all_three"] > readout[9]["all_three"]
glue("ch7-readout-16-vs-9", "more than" if better16 else "no more than", display=False)
glue("ch7-drop-cause", "the image side says more and the guide answers less: the loss is the language model's, "
     "which must gather each cell from several tokens in its 3,000 steps" if better16 else
     "part of the loss is already in the image side", display=False)
pc_fit = guide_fit["continuous/perceiver"]
glue("ch7-guide-rmse", 100 * pc_fit["curve"].rmse, display=False)
others = sorted({r["compressor"] for r in guide_rows if r["route"] == "continuous"} - {"perceiver"})
NAMES = {"qformer": "the Q-Former", "pixel_shuffle": "pixel shuffle", "tokenlearner": "TokenLearner", "tome": "ToMe"}


def listed(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c', or 'none'."""
    names = [NAMES.get(n, n) for n in names]
    return "none" if not names else names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


at16 = {c: acc_at[("continuous", c, 16)] for c in others if ("continuous", c, 16) in acc_at}
glue("ch7-above-16", listed([c for c, a in at16.items() if a > cp[16]["accuracy_max"]]), display=False)
glue("ch7-among-16", listed([c for c, a in at16.items() if cp[16]["accuracy_min"] <= a <= cp[16]["accuracy_max"]]),
     display=False)
glue("ch7-below-16", listed([c for c, a in at16.items() if a < cp[16]["accuracy_min"]]), display=False)
glue("ch7-ps-16", at16.get("pixel_shuffle", float("nan")), display=False)
glue("ch7-p16-range", f"{cp[16]['accuracy_min']:.1f}–{cp[16]['accuracy_max']:.1f}", display=False)
one = [acc_at[("continuous", c, 1)] for c in others if ("continuous", c, 1) in acc_at]
glue("ch7-one-lo", min(one), display=False)
glue("ch7-one-hi", max(one), display=False)
# the discrete route: Chapter 2's tokenizers, one per code grid, and the LM fed perfect codes (Chapter 5)
from vlmbook import hub, vq  # noqa: E402

disc = {r["image_tokens"]: r for r in guide_rows if r["route"] == "discrete"}
tok_psnr = {m: json.loads((hub.REPO_ARTIFACTS / hub.artifact_specs()[vq.TOKEN_ARTIFACTS[m]].key / "metrics.json")
                          .read_text())["psnr"] for m in disc}
print("discrete route's tokenizers, PSNR on 256 val exhibits:\n  "
      + ", ".join(f"M={m} {tok_psnr[m]:.1f} dB ({vq.TOKEN_GRID_CONFIGS[m].image_size} px)" for m in sorted(disc)))
oracle_codes = next(r for r in load_ablation(RESULTS / "vlm_discrete_vq.jsonl") if r.get("run") == "oracle_codes")
glue("ch7-disc-seeds", min(r["seeds"] for r in disc.values()), display=False)
glue("ch7-disc-lo", min(r["accuracy"] for r in disc.values()), display=False)
glue("ch7-disc-hi", max(r["accuracy"] for r in disc.values()), display=False)
glue("ch7-disc-psnr", ", ".join(f"{tok_psnr[m]:.1f}" for m in sorted(disc) if vq.TOKEN_GRID_CONFIGS[m].image_size == 64),
     display=False)
glue("ch7-disc-psnr-ms", ", ".join(str(m) for m in sorted(disc) if vq.TOKEN_GRID_CONFIGS[m].image_size == 64),
     display=False)
glue("ch7-oracle-codes", oracle_codes["accuracy"]["all"], display=False)
glue("ch7-majority", 100 * correct[next(r for r in RUNS if r.startswith("majority"))].mean(), display=False)
d_fit = guide_fit["discrete/vq"]
glue("ch7-disc-rmse", 100 * d_fit["curve"].rmse, display=False)
glue("ch7-disc-asym", 100 * d_fit["curve"].a, display=False)

# %% [markdown]
# The guide's accuracy rises with its tokens up to the number of cells and not beyond. On the
# continuous route with the Perceiver (means over {glue:text}`ch7-guide-seeds` seeds) it climbs from
# {glue:text}`ch7-guide-continuous-perceiver-1:.1f` % with one token through
# {glue:text}`ch7-guide-continuous-perceiver-4:.1f` % with four to
# {glue:text}`ch7-guide-best-acc:.1f` % with {glue:text}`ch7-guide-best-m`, and then
# {glue:text}`ch7-guide-after-best`: {glue:text}`ch7-guide-max-m-acc:.1f` % with
# {glue:text}`ch7-guide-max-m` tokens, whose best seed ({glue:text}`ch7-guide-max-m-lo:.1f` %) stays
# below the worst seed at nine ({glue:text}`ch7-guide-best-lo:.1f` %). One token cannot hold nine
# cells: its warm-up reads only {glue:text}`ch7-readout-1:.1f` % of the occupied cells right.
# With one token every compressor is as stuck as the Perceiver ({glue:text}`ch7-one-lo:.1f` to
# {glue:text}`ch7-one-hi:.1f` %). With one seed each, the other compressors can only be placed
# against the Perceiver's three seeds at sixteen tokens ({glue:text}`ch7-p16-range` %): above all
# three lies {glue:text}`ch7-above-16`, among them {glue:text}`ch7-among-16`, below them
# {glue:text}`ch7-below-16`. Pixel shuffle ({glue:text}`ch7-ps-16:.1f` % at sixteen) is the one
# compressor whose tokens have fixed places — token $k$ is always the same 2 × 2 block of patches —
# a tie of token to place like the one whose worth the read-out below measures; with one seed that
# is a lead to follow, not a result. The gated route stays between
# {glue:text}`ch7-gated-lo:.1f` and {glue:text}`ch7-gated-hi:.1f` % at every $M$: as in Chapter 5,
# it has not found the objects in 3,000 steps, and more tokens cannot help a route that does not
# yet use them.
#
# The discrete route is nearly flat: between {glue:text}`ch7-disc-lo:.1f` and
# {glue:text}`ch7-disc-hi:.1f` % at every $M$ (means over {glue:text}`ch7-disc-seeds` seeds;
# the image-blind majority baseline of §7.1 scores {glue:text}`ch7-majority:.1f` %), although its
# tokenizers reconstruct the exhibits better with every code they add (PSNR
# {glue:text}`ch7-disc-psnr` dB at $M$ = {glue:text}`ch7-disc-psnr-ms` on 64-px exhibits). Its
# limit is most likely the language model's: each `<v_k>` word starts as a random vector whose
# meaning must be learned from scratch, and Chapter 5's run of the same model fed *perfect* codes,
# one per cell, reached only {glue:text}`ch7-oracle-codes:.1f` % (3,000 steps, one seed, without
# the curriculum). A better tokenizer, or more of its codes, can help little while the model has
# not learned what one code means (Chapter 5, Exercise 7).
#
# Chapter 4's $Q(M)$ assumes a curve that rises and flattens. The guide's curve peaks, so the fit
# misses its points by {glue:text}`ch7-guide-rmse:.1f` points (root mean square) and its $M^*$ of
# {glue:text}`ch7-guide-mstar-continuous-perceiver` is an extrapolation the measurements contradict;
# each other compressor has three points for the fit's three parameters, which it matches exactly
# and so tests nothing. The flat routes fit well and choose little: the gated route
# {glue:text}`ch7-guide-mstar-gated-perceiver` token, because tokens buy it nothing, and the
# discrete route (whose budgets are square code grids) $M^*$ =
# {glue:text}`ch7-guide-mstar-discrete-vq`, with its points {glue:text}`ch7-disc-rmse:.1f` points
# (root mean square) from a curve that levels off at {glue:text}`ch7-disc-asym:.1f` % — budgets
# for routes that have learned little, not for the guide. Check a model's shape against the data
# before trusting what it chooses: for the guide the measured answer is
# $M$ = {glue:text}`ch7-guide-best-m`.
#
# Where does the loss come from? The warm-ups were read out on their own (the same runs, scored with
# their linear heads on 500 held-out exhibits; `python -m vlmbook.fusion.ablation --readout
# perceiver:3e-3 --tokens M --joint`). The joint read-out at nine tokens gets all three attributes of
# {glue:text}`ch7-readout-joint-9:.1f` % of the occupied cells right, against
# {glue:text}`ch7-readout-cell:.1f` % when token $k$ is cell $k$. A likely reason: one small head
# shared by the nine cells learns from every cell of every exhibit, while the joint heads must learn
# each cell apart. An image side that says this much less is the likely source of most of the
# {glue:text}`ch7-joint-cost:.1f` points between the committed guide
# ({glue:text}`ch7-guide-cell:.1f` %) and nine free tokens. The drop
# from nine tokens to sixteen is a different matter: the sixteen-token warm-up reads
# {glue:text}`ch7-readout-16:.1f` % of the cells, {glue:text}`ch7-readout-16-vs-9` the nine-token
# one, so {glue:text}`ch7-drop-cause`. Tying tokens to what the questions ask about is worth more
# here than adding tokens.

# %% mystnb={"figure": {"caption": "Accuracy against time to first token for every point of the guide's token sweep (route \u00d7 compressor \u00d7 M, the mean over its seeds; time measured here on one thread on a model of each configuration). Filled markers lie on the Pareto front (dashed).", "name": "fig-ch7-guide-pareto"}, "image": {"alt": "Scatter of the token sweep's configurations, accuracy in percent against milliseconds to first token, each with its own marker; a dashed line joins the filled markers on the front from the fastest configuration to the most accurate one; which configurations lie on it depends on the timings of the run."}}
token_sweep = sweeps.token_latency(guide_rows, repeats=5)
for r in token_sweep:
    print(f"{r['route']:10s} {r['compressor']:13s} M={r['image_tokens']:2d}  accuracy {r['accuracy']:5.1f} %  "
          f"TTFT {r['ttft_ms']:5.2f} ms  {'on the front' if r['pareto'] else ''}")
show(eplot.pareto_figure(token_sweep, title="the guide's token sweep: accuracy against time to first token"))
front_best = max((r for r in token_sweep if r["pareto"]), key=lambda r: r["accuracy"])
glue("ch7-front-best", f"{front_best['route']} route with the {front_best['compressor']} at M = "
     f"{front_best['image_tokens']}", display=False)
cont = [r for r in token_sweep if (r["route"], r["compressor"]) == ("continuous", "perceiver")]
glue("ch7-ttft-cont-lo", min(r["ttft_ms"] for r in cont), display=False)
glue("ch7-ttft-cont-hi", max(r["ttft_ms"] for r in cont), display=False)
glue("ch7-m-lo", min(r["image_tokens"] for r in cont), display=False)
glue("ch7-m-hi", max(r["image_tokens"] for r in cont), display=False)

# %% [markdown]
# Every configuration of the sweep is one point of accuracy against latency. At this scale the
# number of image tokens hardly shows in the time to first token: with the Perceiver on the
# continuous route the times lie between {glue:text}`ch7-ttft-cont-lo:.1f` and
# {glue:text}`ch7-ttft-cont-hi:.1f` ms for $M$ from {glue:text}`ch7-m-lo` to {glue:text}`ch7-m-hi`, differences the size of the timing noise
# of a shared machine (run the cell again and compare). Accuracy moves by tens of points,
# so the front is decided by accuracy: its most accurate point is the
# {glue:text}`ch7-front-best`. With a larger language model, longer contexts or thousands of patch
# tokens (Chapter 4's $N$ = 2048), the time axis would matter.
#
# ### What a tokenizer keeps, per token
#
# Chapter 2's tokenizer has the same dial: a 64-px exhibit through four, three or two stride-2
# stages becomes 4 × 4, 8 × 8 or 16 × 16 codes. The sweep below trained tokenizers for each grid with
# the same recipe and three seeds (codebook of K = 256, 600 steps, one thread;
# `python -m vlmbook.eval.sweeps tokenizers`, under twenty minutes) and scored each on 256
# held-out exhibits: PSNR, MS-SSIM, and
# which share of the codebook the exhibits use. The record is a metrics file (§7.5), read and
# validated here; {numref}`fig-ch7-tokenizers` plots it.
#
# ```{warning}
# MS-SSIM {cite:p}`wang2003msssim` compares structure at five scales; on 64-px images the five
# scales leave room for a 3-pixel window only (the standard 11-pixel window needs sides above
# 160 px), so these values are not comparable with MS-SSIM reported on photographs.
# ```

# %% mystnb={"figure": {"caption": "Chapter 2's VQ tokenizer trained with 4 \u00d7 4, 8 \u00d7 8 and 16 \u00d7 16 codes per 64-px image (K = 256, 600 steps, one thread, three seeds): reconstruction PSNR, MS-SSIM and the share of the codebook used on 256 held-out exhibits, against tokens per image, as the mean over seeds with bars of \u00b1 one standard deviation; read from the committed sweep record.", "name": "fig-ch7-tokenizers"}, "image": {"alt": "Three small panels against tokens per image (16, 64, 256 on a logarithmic axis), each point a mean over seeds with a short error bar: PSNR in decibels rising with the tokens, MS-SSIM rising with the tokens, and codebook usage near the top of its zero-to-one axis for every grid."}}
# NBVAL_CHECK_OUTPUT
tok_table = metrics.read_metrics(RESULTS / sweeps.TOKENIZER_RECORD)
tok_rows = sweeps.tokenizer_rows(tok_table)  # one row per (grid, seed)
tok = sweeps.tokenizer_summary(tok_rows)  # mean and standard deviation over seeds, per grid
for r in tok:
    print(f"{int(r['tokens_per_image']):4d} tokens/image ({r['seeds']} seeds)  PSNR {r['psnr']:5.2f} ± {r['psnr_std']:.2f} dB  "
          f"MS-SSIM {r['ms_ssim']:.3f} ± {r['ms_ssim_std']:.3f}  usage {100 * r['usage']:5.1f} % of K = "
          f"{int(tok_rows[0]['codebook_size'])}")
bench_vq = json.loads((RESULTS / "vq.json").read_text())["table"]["psnr_vs_tokens"]  # the vq benchmark, one thread
print("vq benchmark (full run, one thread), PSNR:",
      ", ".join(f"{v['tokens_per_image']} tokens {v['psnr']:.2f} dB" for v in bench_vq.values()))
lo_t, hi_t = tok[0], tok[-1]
glue("ch7-tok-lo", int(lo_t["tokens_per_image"]), display=False)
glue("ch7-tok-hi", int(hi_t["tokens_per_image"]), display=False)
glue("ch7-tok-psnr-gain", hi_t["psnr"] - lo_t["psnr"], display=False)
glue("ch7-tok-psnr-per-doubling", (hi_t["psnr"] - lo_t["psnr"]) / np.log2(hi_t["tokens_per_image"] / lo_t["tokens_per_image"]),
     display=False)
glue("ch7-tok-msssim-lo", lo_t["ms_ssim"], display=False)
glue("ch7-tok-msssim-hi", hi_t["ms_ssim"], display=False)
glue("ch7-tok-usage-lo", 100 * lo_t["usage"], display=False)
glue("ch7-tok-seeds", min(r["seeds"] for r in tok), display=False)
glue("ch7-tok-psnr-std-max", max(r["psnr_std"] for r in tok), display=False)
show(eplot.tokenizer_sweep_figure(tok, title="tokenizer quality against tokens per image"))

# %% [markdown]
# From {glue:text}`ch7-tok-lo` to {glue:text}`ch7-tok-hi` tokens per image, PSNR rises by
# {glue:text}`ch7-tok-psnr-gain:.1f` dB, about {glue:text}`ch7-tok-psnr-per-doubling:.1f` dB per
# doubling of the tokens, and MS-SSIM from {glue:text}`ch7-tok-msssim-lo:.2f` to
# {glue:text}`ch7-tok-msssim-hi:.2f` (means over {glue:text}`ch7-tok-seeds` seeds). The seeds
# disagree by at most {glue:text}`ch7-tok-psnr-std-max:.2f` dB (standard deviation), well under
# what one doubling of the tokens buys, so by §7.2's rule this difference is real; the vq
# benchmark's own full run, one seed on one thread, lands within a few tenths of a
# decibel of the same PSNRs. The codebook stays in use at every grid
# (even at 16 tokens {glue:text}`ch7-tok-usage-lo:.0f` % of its codes appear), so what limits the
# small grids is how much one code can say about a 16 × 16-pixel patch, not collapse (Chapter 2's
# EMA updates and restarts see to that). Tokens per image are not the only dial, though: the
# committed `vq-tokenizer-tiny`, with 64 tokens like the middle point but twice the codebook
# (K = 512) and twice the training steps, scores as follows when measured here:

# %%
# NBVAL_CHECK_OUTPUT
from vlmbook.vq import load_tiny_tokenizer, eval_images  # noqa: E402

tiny_live = sweeps.tokenizer_metrics(load_tiny_tokenizer(), eval_images(256, 64))
print(f"vq-tokenizer-tiny: {tiny_live['tokens_per_image']} tokens/image, K = {tiny_live['codebook_size']}   "
      f"PSNR {tiny_live['psnr']:.2f} dB   MS-SSIM {tiny_live['ms_ssim']:.3f}   usage {100 * tiny_live['usage']:.1f} %")
glue("ch7-tiny-psnr", tiny_live["psnr"], display=False)
glue("ch7-tiny-msssim", tiny_live["ms_ssim"], display=False)

# %% [markdown]
# It reaches {glue:text}`ch7-tiny-psnr:.1f` dB and an MS-SSIM of {glue:text}`ch7-tiny-msssim:.2f`
# with 64 tokens, close to what the sweep's tokenizer needed 256 tokens for: before spending more
# tokens per image — each one a position the language model must attend to — spend more training
# and a larger codebook.

# %% [markdown]
# ## 7.5 Every benchmark, one format
#
# Each chapter's benchmark keeps its own nested table. `vlmbook.eval.metrics` flattens any of them
# into rows `(benchmark, path, metric, value)`, and `python -m vlmbook.bench all --quick` runs
# every benchmark into one Markdown report with the machine, the thread count, the load average
# around each run, the package versions and every ratio of ours against a reference.

# %%
# NBVAL_CHECK_OUTPUT
t = metrics.metrics_table("codec", codec)
bd = t.filter(pc.equal(t.column("path"), "bd_rate_percent"))
for m_, v in zip(bd.column("metric").to_pylist(), bd.column("value").to_pylist()):
    print(f"codec bd_rate_percent/{m_:20s} {v:+.1f}")

# %% [markdown]
# ## 7.6 The field's harness
#
# `vlmbook.eval.export_museum` writes the museum's test questions as a Hugging Face `datasets`
# dataset (Parquet, images included) and an lmms-eval task file; the `vlmbook[lmms]` extra
# registers the guide as `--model vlmbook`, so that
# `lmms-eval --model vlmbook --model_args pretrained=vlm-tiny --include_path DIR --tasks vlmbook_museum`
# scores it with the same harness that scores the field's models.

# %%
# NBVAL_CHECK_OUTPUT
task = ev.export_museum(tmp / "museum_task", "test", n_scenes=5)
ds = ev.load_museum(tmp / "museum_task")
print(ds)
pprint.pprint({k: ds[0][k] for k in ("question_id", "question", "answer", "qtype", "support_patches")},
              width=100, sort_dicts=False)
print("\n".join(line for line in task.read_text().splitlines() if line.startswith(("task", "output_type"))))

# %% [markdown]
# ## Summary
#
# - One schema for every answer: a row per model and question, versioned, validated on read, in
#   Parquet or CSV; everything else (tables, tests, figures) is computed from the rows.
# - Accuracy comes with an interval: the bootstrap over questions (percentile or BCa) and the
#   spread over training seeds are two different uncertainties, and both must be smaller than a
#   difference before it is believed.
# - Compare models on the same questions: McNemar's exact test and the paired bootstrap use the
#   pairing and resolve smaller differences than two separate intervals.
# - Ground truth explains errors: the guide's mistakes are counted as perception, localisation,
#   reasoning or language from the scene itself, per question type.
# - Accuracy has a price: each of Chapter 5's configurations is a point of accuracy against time to
#   first token, and only those on the Pareto front are worth choosing.
# - Tokens have a price too: a fitted curve $Q(M)$ turns a sweep over image tokens into a budget
#   $M^*$ for a given context, and a tokenizer's PSNR, MS-SSIM and codebook usage say what each
#   extra token per image buys in reconstruction.
# - A fitted curve is a model to check: the guide's own accuracy peaks at one token per exhibit
#   cell and falls beyond, a shape $Q(M)$ cannot follow, and its warm-up read-out tells an image
#   side that says too little from a language model that cannot find what it says.
#
# ## Exercises
#
# 1. Evaluate the guide on the `val` split (`vlmbook eval vlm-tiny --split val --out val.parquet`).
#    Is the difference from the test split significant? Which test applies, and why not McNemar?
# 2. Change `JPEG_QUALITY` in `vlmbook/bench/eval.py` to 5 and 30. At which quality does the loss
#    become significant on 200 exhibits? Find a quality at which the paired tests call the loss
#    significant while the two separate intervals still overlap. How many exhibits would resolve a
#    2-point loss?
# 3. Train Chapter 5's routes with three seeds each and report mean ± std and a paired test between
#    the best two. Is the ranking stable across seeds?
# 4. Add a rule to the taxonomy for `count` questions: off by one versus off by more. What share of
#    the guide's counting errors is off by one?
# 5. The guide's token sweep trained three seeds per $M$ of each route's main line (the Perceiver
#    on the continuous and gated routes, Chapter 2's tokenizers on the discrete route) and one seed
#    of the other compressors. Use §7.2's rule — a difference counts when it is larger than the
#    spread over seeds — to say which steps in $M$ change the guide's accuracy on each route.
#    Which one-seed comparison in the sweep would you not trust, and how many seeds would settle it?
# 6. Run `python -m vlmbook.bench all --quick` and compare the load average and the speed ratios
#    with the committed records; which ratios move with load?

# %%
nb.report_runtime()
