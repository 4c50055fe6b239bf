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
# # Solutions to Chapter 6 — Training the guide
#
# Worked solutions to the exercises of {doc}`../06_alignment`. Code and discussion are folded: try
# first. Each live run here is as short as the chapter's own (tens of steps on 40 training
# exhibits, scored on 30 test exhibits), so that the notebook runs in about a minute on a CPU.
# Exercises 1, 3 and 5 are therefore **partial**: they run one short setting of what the exercise
# sweeps and say what the full sweep adds. Exercises 2 and 4 give a hint and a plan; the half-width
# student of Exercise 4 is read from its committed records. Exercises 6 and 7 are solved in full.

# %%
import copy
import json
import statistics
from pathlib import Path

import torch
from myst_nb import glue

import vlmbook
from vlmbook import nb
from vlmbook.fusion.model import VisionLanguageModel, VLMConfig
from vlmbook.hub import load_artifact
from vlmbook.plot import line_plot, show
from vlmbook.train import group_relative_advantages, trainable_fraction
from vlmbook.train import stages as st
from vlmbook.train.policy import VLMPolicy

nb.start_chapter(6)
torch.set_num_threads(1)  # tiny models: one thread is as fast, and steadier on a shared machine
RESULTS = Path(vlmbook.__file__).resolve().parents[1] / "bench" / "results"


def guide() -> VLMPolicy:
    """A fresh copy of Chapter 5's committed guide, wrapped for training."""
    return VLMPolicy(load_artifact("vlm-tiny", VisionLanguageModel))


cfg = guide().module.config
train = st.exhibits("train", 40, cfg.image_size, start=5000)
test = st.exhibits("test", 30, cfg.image_size)

# %% [markdown]
# ## Exercise 1 — does DPO close the gap left by noisy citations? (partial)
#
# The chapter's settings (SFT 40 steps, DPO 40 steps with the RPO term), once from clean and once
# from noisy citations. The full exercise adds more test exhibits and Chapter 7's paired tests.

# %% tags=["hide-cell"]
rows = {}
for noise in (0.0, 0.5):
    sft = guide()
    st.train_sft(sft, st.sft_examples(sft, train, cite=True, citation_noise=noise, seed=0), train.images,
                 steps=40, batch_size=16, seed=0)
    dpo = VLMPolicy(copy.deepcopy(sft.module))
    st.train_dpo(dpo, VLMPolicy(copy.deepcopy(sft.module)), st.preference_data(sft, train), train.images,
                 steps=40, beta=0.1, batch_size=16, seed=0, nll_weight=1.0)
    rows[noise] = {"SFT": st.evaluate(sft, test)["all"], "DPO": st.evaluate(dpo, test)["all"]}
    for stage, r in rows[noise].items():
        print(f"noise {noise:.1f} {stage}: accuracy {r['accuracy']:5.1f} %  citation precision "
              f"{r['citation_precision']:5.1f} %")
gap_sft = rows[0.0]["SFT"]["citation_precision"] - rows[0.5]["SFT"]["citation_precision"]
gap_dpo = rows[0.0]["DPO"]["citation_precision"] - rows[0.5]["DPO"]["citation_precision"]
glue("s6-gap-sft", gap_sft, display=False)
glue("s6-gap-dpo", gap_dpo, display=False)

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# After SFT the clean-citation guide leads the noisy one by {glue:text}`s6-gap-sft:.1f` points of
# citation precision; after DPO the lead is {glue:text}`s6-gap-dpo:.1f` points. On 30 exhibits a
# few points are within the noise of one seed: Chapter 7 §7.2's paired tests (`stats.mcnemar_exact`
# on the per-question results of the two DPO guides) on a few hundred test exhibits decide whether
# the remaining gap is real.
# ```

# %% [markdown]
# ## Exercise 2 — chain of thought learned or only shown (hint and plan)
#
# ```{admonition} Hint
# :class: dropdown
# `cot_text` writes the reasoning before the answer, and `chain_of_thought` builds the examples;
# the difference between "learned" and "shown" is only which tokens carry a loss (the label
# `IGNORE` masks the reasoning when it is only shown). Train both with `train_sft` for the same
# steps, answer with `st.answer_all`, and count the generated tokens with the guide's tokenizer.
# Expect the learned version to write longer answers; whether it answers better on a model this
# small is what the exercise measures.
# ```

# %% [markdown]
# ## Exercise 3 — DPO's β and the RPO term (partial)
#
# One value of β with and without the RPO term, on the noisy-citation SFT guide; the full sweep adds
# β = 0.01 and 1 and plots the KL against the change in citation precision.

# %% tags=["hide-cell"]
sft = guide()
noisy = st.sft_examples(sft, train, cite=True, citation_noise=0.5, seed=0)
st.train_sft(sft, noisy, train.images, steps=40, batch_size=16, seed=0)
base = st.evaluate(sft, test)["all"]
pairs = st.preference_data(sft, train)
beta_rows = {}
for w in (0.0, 1.0):
    pol = VLMPolicy(copy.deepcopy(sft.module))
    st.train_dpo(pol, VLMPolicy(copy.deepcopy(sft.module)), pairs, train.images, steps=40, beta=0.1, batch_size=16,
                 seed=0, nll_weight=w)
    r = st.evaluate(pol, test)["all"]
    kl = st.kl_to_reference(pol, VLMPolicy(copy.deepcopy(sft.module)), noisy, train.images)
    beta_rows[w] = (r["citation_precision"] - base["citation_precision"], r["accuracy"] - base["accuracy"], kl)
    print(f"beta 0.1, nll_weight {w:.0f}: citation precision {beta_rows[w][0]:+5.1f} points, "
          f"accuracy {beta_rows[w][1]:+5.1f} points, KL to SFT {kl:.3f} nats")
glue("s6-rpo-acc", beta_rows[1.0][1] - beta_rows[0.0][1], display=False)

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# At the same β, adding the RPO term changed the accuracy gain by {glue:text}`s6-rpo-acc:+.1f` points
# against plain DPO (one seed, 30 test exhibits). DPO only widens the margin between chosen and rejected answers and may lower
# both; the negative log-likelihood of the chosen answers keeps them likely (Pang et al., 2024).
# Over the full sweep, a small β lets the policy move far from the reference (a large KL) and a
# large one holds it near; plot KL on the horizontal axis against the change in citation precision,
# with one line per `nll_weight`.
# ```

# %% [markdown]
# ## Exercise 4 — distillation with few right answers (hint, plan and the committed records)
#
# The committed half-width students were distilled for 3,000 steps by
# `python -m vlmbook.train.student SEED`; their records say what each part of the loss gives.

# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
records = [json.loads(line) for line in (RESULTS / "student.jsonl").read_text().splitlines() if line.strip()]
for r in records:
    print(f"seed {r['seed']}  alpha {r['alpha']}  hidden-state weight {r.get('hidden_weight', 0.0)}  "
          f"accuracy {r['accuracy']['all']:.1f} %")
full = [r["accuracy"]["all"] for r in records if r.get("hidden_weight", 0.0) > 0]
glue("s6-student-mean", statistics.mean(full), display=False)

# %% [markdown]
# ```{admonition} Hint
# :class: dropdown
# With hidden states the students average {glue:text}`s6-student-mean:.1f` %; the seed trained on
# the logits alone stays far below. The exercise's `--alpha 0` run trains on the right answers
# only; compare its record with these. For the half-depth student of the chapter, call
# `st.distill` on examples from 10 and from 40 training exhibits with `alpha` 0 and 0.5 (four short
# runs): with 10 exhibits the teacher's soft distribution carries information that the few one-hot
# answers do not, so distillation should help more there.
# ```

# %% [markdown]
# ## Exercise 5 — LoRA instead of full fine-tuning (partial)
#
# How many weights train at each rank (all three ranks), and one short SFT run at r = 8 beside full
# fine-tuning; the full exercise runs every rank for the same steps.

# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
full_ft = guide()
n_all = sum(p.numel() for p in full_ft.module.lm.parameters())
for r in (4, 8, 16):
    pol = guide()
    pol.module.apply_lora(r=r, alpha=2 * r)
    n_lora = sum(p.numel() for n, p in pol.module.lm.named_parameters() if "lora_" in n)
    print(f"rank {r:2d}: {n_lora:6,d} LoRA weights = {100 * n_lora / n_all:4.1f} % of the language model's "
          f"{n_all:,}; trainable in the whole guide {100 * trainable_fraction(pol.module):.1f} %")

# %% tags=["hide-cell"]
lora = guide()
lora.module.apply_lora(r=8, alpha=16)
st.train_sft(lora, st.sft_examples(lora, train, cite=True, seed=0), train.images, steps=40, batch_size=16, seed=0)
st.train_sft(full_ft, st.sft_examples(full_ft, train, cite=True, seed=0), train.images, steps=40, batch_size=16, seed=0)
for name, pol in (("LoRA r=8", lora), ("full", full_ft)):
    r = st.evaluate(pol, test)["all"]
    print(f"{name:9s} after 40 steps: accuracy {r['accuracy']:5.1f} %  citation precision {r['citation_precision']:5.1f} %")

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# LoRA trains a few percent of the language model's weights; the guide's projector, cell
# embeddings and image side still count in the whole model's trainable fraction. Starting from an
# already trained guide, 40 steps move neither far, so the two end close; the difference between
# ranks shows when the task needs the model to change more (a new kind of question, or the noisy
# citations of Exercise 1).
# ```

# %% [markdown]
# ## Exercise 6 — GRPO over several steps, groups of 4 and 8
#
# `grpo_step` on eight training questions per step for 50 steps would take minutes here; the
# solution runs 12 steps of each group size (the same code, `steps = 50` for the full exercise);
# {numref}`fig-s6-grpo` shows the mean reward of each step's samples.

# %% mystnb={"figure": {"caption": "Mean reward of the sampled answers against the GRPO step, for groups of 4 and 8 answers per question (eight training questions per step, seed 0).", "name": "fig-s6-grpo"}, "image": {"alt": "Two lines of mean reward against the step, one per group size, fluctuating between steps."}} tags=["hide-input"]
steps = 12
curves = {}
for group in (4, 8):
    torch.manual_seed(0)
    pol, ref = guide(), guide()
    opt = torch.optim.AdamW(pol.module.lm.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    curves[f"group {group}"] = [st.grpo_step(pol, ref, opt, train, train.items[8 * s % len(train.items):][:8], g,
                                             group=group)["score"] for s in range(steps)]
show(line_plot({k: (list(range(steps)), v) for k, v in curves.items()}, xlabel="GRPO step", ylabel="mean reward",
               title="GRPO"))

# %% [markdown]
# Groups whose answers all score the same carry no signal: their advantages are zero, so they add
# nothing to the gradient (only the KL term acts on them).

# %% tags=["hide-cell"]
# NBVAL_CHECK_OUTPUT
rewards = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.5]])
print(group_relative_advantages(rewards))

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# Each step draws eight other questions, so the mean reward moves with the questions drawn more
# than with training: over these 12 steps at learning rate $10^{-4}$ neither curve shows a trend.
# The full 50 steps revisit the same questions, which is where a trend can show. Groups of 8 cost
# twice the sampling of groups of 4. The vlm-tiny guide already answers most training questions
# right, so expect many groups in which every answer scores the same: they contribute nothing, and
# a larger group is more likely to contain a wrong answer that gives its question a signal. That
# is why GRPO-style training filters or up-weights prompts whose groups disagree.
# ```

# %% [markdown]
# ## Exercise 7 — prompt caching for an image-first guide
#
# The time to first token depends on the architecture and the sequence, not on the trained weights,
# so an untrained image-first guide of the same size answers the question.

# %% tags=["hide-cell"]
image_first = VLMPolicy(VisionLanguageModel(cfg.replace(layout="image_first", mask="prefix")).eval())
question_first = guide()
q = test.items[0][1].question
for name, pol in (("image-first", image_first), ("question-first", question_first)):
    t = st.prompt_cache_ttft(pol, test.images[0], q, repeats=9)
    print(f"{name:15s} cache {t['cache']:15s} TTFT {t['ttft_ms']:6.2f} ms -> {t['ttft_cached_ms']:6.2f} ms "
          f"({1 - t['ttft_cached_ms'] / t['ttft_ms']:.0%} less)")

# %% [markdown]
# ```{admonition} Discussion
# :class: dropdown
# The image-first guide keeps the keys and values of its whole image prefix, so a new question only
# runs the language model over the question's tokens; the question-first guide can keep only the
# ViT's features and still runs the compressor, projector and the language model over the image
# tokens for every question. On a language model this small the ViT is a large share of the work,
# so both savings are large; with a large language model the KV prefix saves much more.
# ```

# %%
nb.report_runtime()
