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
# # Chapter 6 — Training the guide: alignment, instructions, preferences
#
# Chapter 5 trained the museum guide in two steps: its image side on the exhibits' per-cell
# labels, then everything after it on the museum's questions, with one loss.
# Real vision-language models are trained in several stages, each with its own data, its own loss
# and its own set of weights that may move. This chapter walks through those stages on the guide,
# at toy scale, with the package `vlmbook.train`: every loss is a function of tensors, tested
# against a reference implementation, and one adapter (`VLMPolicy`) gets those tensors from
# Chapter 5's `VisionLanguageModel`.
#
# **What you will build and measure**
#
# - stage 0, alignment: only the projector learns, the language model and the encoder are frozen
#   {cite:p}`liu2023llava`;
# - stage 1, instruction tuning: a chat template whose loss counts only the assistant's tokens, a
#   chain of thought written from the scene's ground truth, a curriculum, {term}`LoRA` {cite:p}`hu2022lora`
#   and one learning rate per group of weights;
# - stage 2, preferences: a Bradley–Terry reward model {cite:p}`bradley1952rank,ouyang2022instructgpt`,
#   {term}`DPO` {cite:p}`rafailov2023dpo`, PPO {cite:p}`schulman2017ppo,schulman2016gae` and
#   group-relative advantages {cite:p}`shao2024deepseekmath`;
# - stage 3, inference and distillation: self-consistency {cite:p}`wang2023selfconsistency` and a
#   half-size student trained on the guide's softened answers {cite:p}`hinton2015distilling` and
#   its hidden states;
# - stage 4, post-training: int8 weights, an int8 KV cache and prompt caching;
# - how the same trainers run on several GPUs.
#
# Each stage trains for a few dozen steps on a few dozen exhibits, so that the chapter runs in
# minutes on a laptop CPU. The numbers show that each piece works and in which direction it moves
# the guide; they are not the numbers a full training run would reach.

# %%
import copy
import textwrap

import torch
from myst_nb import glue  # numbers quoted in the prose are inserted from the computations

from vlmbook import nb
from vlmbook.fusion.model import VisionLanguageModel
from vlmbook.hub import load_artifact
from vlmbook.plot import line_plot, show
from vlmbook.plot import train as tplot
from vlmbook.train import (IGNORE, AdaptiveKLController, Curriculum, chain_of_thought,
                           cot_text, difficulty, distill_loss, dpo_loss, gae, group_relative_advantages, param_groups,
                           ppo_policy_loss, reward_loss, trainable_fraction, vlm_lrs)
from vlmbook.train import stages as st
from vlmbook.train.policy import VLMPolicy

nb.start_chapter(6)


def guide() -> VLMPolicy:
    """A fresh copy of Chapter 5's committed guide, wrapped for training."""
    return VLMPolicy(load_artifact("vlm-tiny", VisionLanguageModel))


base = guide()
cfg = base.module.config
train = st.exhibits("train", 40, cfg.image_size, start=5000)
test = st.exhibits("test", 30, cfg.image_size)
print(f"guide: layout {cfg.layout}, {cfg.grid}x{cfg.grid} patches, image {cfg.image_size} px, "
      f"{sum(p.numel() for p in base.module.parameters()):,} parameters")
print(f"train: {len(train.scenes)} exhibits, {len(train.items)} questions;  "
      f"test: {len(test.scenes)} exhibits, {len(test.items)} questions")
results = {"vlm-tiny": st.evaluate(base, test)["all"]}
print("vlm-tiny on the test exhibits:", results["vlm-tiny"])

# %% [markdown]
# ## 6.1 The stages of a real VLM
#
# LLaVA {cite:p}`liu2023llava` set the pattern most open models follow. A pretrained vision
# encoder and a pretrained language model already exist; what does not exist is the projector
# between them. **Stage 0 (alignment)** trains only the projector, on image–caption pairs, so that
# image tokens land where the language model can read them; both towers stay frozen, because a
# randomly initialised projector sends large, meaningless gradients into them. **Stage 1
# (instruction tuning)** then unfreezes the language model and trains on conversations.
# Preference tuning, inference-time tricks and compression follow.
#
# `freeze_all_but` sets `requires_grad` by submodule name, and `train_sft` takes one learning rate
# per top-level part of the model (`vlm_lrs` lists them, so a part Chapter 5 adds, such as learned
# cell embeddings, is never silently left out). Stage 0 on the guide, captioning the exhibits:

# %%
# NBVAL_CHECK_OUTPUT
stage0 = guide()
print("learning rates per part:", ", ".join(f"{k} {v:g}" for k, v in vlm_lrs(stage0.module, 1e-3).items()))
hist0 = st.align_projector(stage0, train, steps=30, batch_size=16, lr=3e-3)
print(f"stage 0 trains {100 * trainable_fraction(stage0.module):.1f} % of the weights: "
      f"{sorted({n.split('.')[0] for n, p in stage0.module.named_parameters() if p.requires_grad})}")

# %%
print(f"caption loss: step {hist0[0]['step']} {hist0[0]['loss']:.3f} -> step {hist0[-1]['step']} "
      f"{hist0[-1]['loss']:.3f}")

# %% [markdown]
# The caption loss starts high — the guide answers questions, it does not describe exhibits — and
# the projector alone brings it down while the language model's weights stay as they were. The curve is in {numref}`fig-ch6-losses` below, with those of the later stages.
#
# ## 6.2 Instruction tuning
#
# ### A chat template, and a loss on the assistant's tokens only
#
# A conversation is a list of turns, each with a role. The template writes a role marker before
# each turn and an end marker after the assistant's; the *labels* are the ids themselves where
# the model should learn to write, and −100 (ignored by the loss) everywhere else. The end marker
# is learned, so the guide learns to stop.
#
# ```{note}
# The visitor's question and the image are context, never targets: a guide trained on them would
# learn to ask questions.
# ```

# %%
# NBVAL_CHECK_OUTPUT
i0, qa0 = train.items[0]
ex0 = base.response(qa0.question, qa0.answer, i0)
tok = base.module.tokenizer
shown = [(tok.convert_ids_to_tokens(t), lab != IGNORE) for t, lab in zip(ex0.ids, ex0.labels)]
print("question:", qa0.question, "| answer:", qa0.answer)
print(" ".join(f"[{t}]" if learned else t for t, learned in shown if t != "<image>").replace("Ġ", ""))
print(f"{sum(t == '<image>' for t, _ in shown)} image slots; "
      f"{sum(learned for _, learned in shown)} of {len(shown)} tokens are learned (in brackets)")

# %% [markdown]
# ### Chain of thought from the ground truth
#
# The museum knows every object's size and place, so it can write the reasoning a careful guide
# would do before answering: which objects the answer rests on, and where they stand. The answer
# becomes `[THOUGHT] … [ANSWER] …`. Whether the thought is *learned* is a choice: with its labels
# at −100 the guide sees the reasoning in the context but is only graded on the answer.

# %%
# NBVAL_CHECK_OUTPUT
i1, qa1 = next((i, q) for i, q in train.items if len(q.objects) >= 2)
thought, answer = chain_of_thought(train.scenes[i1], qa1, cfg.grid)
print("question:", qa1.question)
print("thought: ", textwrap.fill(thought, 96, subsequent_indent=" " * 10))
print("answer:  ", answer)
t_seg, a_seg = cot_text(thought, answer)
for learn_thought in (True, False):
    e = base.chat(qa1.question, [(t_seg, learn_thought), (base.answer_tokens(answer), True)], i1)
    print(f"thought {'learned' if learn_thought else 'shown only'}: "
          f"{sum(lab != IGNORE for lab in e.labels)} learned tokens of {len(e.ids)}")

# %% [markdown]
# ### A curriculum
#
# `difficulty` counts a question's objects and adds 2 for a relational question. The curriculum
# samples the first batches from the easiest 30 % of the questions and widens the pool until,
# halfway through training, it covers all of them. Batches are a pure function of the step, so a
# resumed run draws the same ones.

# %%
# NBVAL_CHECK_OUTPUT
diffs = [difficulty(train.scenes[i], q) for i, q in train.items]
cur = Curriculum(diffs, steps=40, start=0.3, ramp=0.5)
for s in (0, 10, 20, 39):
    pool = cur.pool_size(s)
    picked = cur.indices(s, 8)
    print(f"step {s:2d}: pool {pool:3d} of {len(diffs)} questions, "
          f"mean difficulty of a batch {sum(diffs[k] for k in picked) / 8:.2f}")

# %% [markdown]
# ### LoRA and learning rates per group
#
# LoRA {cite:p}`hu2022lora` freezes a weight matrix $W$ and learns a low-rank update
# $W + \frac{\alpha}{r} BA$ with $B \in \mathbb{R}^{d \times r}$, $A \in \mathbb{R}^{r \times k}$
# and $r \ll d$. `VLMPolicy.add_lora` puts `peft`'s adapters on the language model only, never on
# the vision tower; the projector may keep training at its own rate. Without LoRA, `param_groups`
# gives each part its own learning rate — a common recipe trains the projector faster than the
# pretrained language model.

# %%
# NBVAL_CHECK_OUTPUT
lora = guide()
handle = lora.add_lora(r=4, alpha=8, targets=("q_proj", "v_proj"))
adapters = sum(p.numel() for n, p in lora.module.named_parameters() if p.requires_grad and "lora_" in n)
print(f"LoRA r=4 on q_proj, v_proj: {adapters:,} adapter weights; "
      f"{100 * trainable_fraction(lora.module):.1f} % of the VLM trains (adapters + projector)")
full = guide()
for g in param_groups(full.module, {**vlm_lrs(full.module, 1e-3), "lm": 3e-4}):
    print(f"group {g['name']:10s} lr {g['lr']:.0e}  {sum(p.numel() for p in g['params']):7,d} weights")

# %% [markdown]
# ### Supervised fine-tuning with noisy citations
#
# Human annotators make mistakes, and a guide's citations are the kind of detail they get wrong.
# We fine-tune the guide on the training exhibits' answers with half of the citations dropped or
# replaced by random patches (`citation_noise=0.5`): the answers stay right, the evidence does
# not. Section 6.3 then asks preference tuning to repair the damage.

# %%
sft = guide()
noisy = st.sft_examples(sft, train, cite=True, citation_noise=0.5, seed=0)
hist_sft = st.train_sft(sft, noisy, train.images, steps=40, batch_size=16, seed=0)
results["SFT (noisy)"] = st.evaluate(sft, test)["all"]
for k, v in results.items():
    print(f"{k:12s} {v}")

# %% [markdown]
# ## 6.3 Preferences
#
# The museum writes preference pairs from its ground truth: for a question, a **chosen** answer
# and a **rejected** one that is wrong in one known way (a wrong answer, a wrong citation, a
# missing one). Real pipelines get such pairs from human raters or from a stronger model.

# %%
# NBVAL_CHECK_OUTPUT
pairs_tr = st.preference_data(sft, train)
pairs_te = st.preference_data(sft, test)
kinds = sorted({k for _, _, k in pairs_tr})
print(f"{len(pairs_tr)} training pairs, {len(pairs_te)} test pairs; kinds: {kinds}")

# %% [markdown]
# ### A Bradley–Terry reward model
#
# Bradley and Terry {cite:p}`bradley1952rank` model the probability that $a$ is preferred to $b$
# as $\sigma(r_a - r_b)$. A reward model is the VLM with a scalar head read at the end of the
# answer, trained to maximise that probability for the chosen answer
# {cite:p}`ouyang2022instructgpt`:
#
# $$
# \mathcal{L}_\text{RM} = -\log \sigma\big(r(x, y_c) - r(x, y_r)\big).
# $$

# %%
rm, hist_rm = st.train_reward_model(VLMPolicy(copy.deepcopy(sft.module)), pairs_tr, train.images, steps=30,
                                    batch_size=16, seed=0)
rm_acc = st.reward_accuracy(rm, pairs_te, test.images)
for kind, acc in rm_acc.items():
    print(f"held-out pairwise accuracy, {kind:16s} {acc:5.1f} %")

# %% [markdown]
# A scalar head on a small model, read at the last token after 30 steps, learns the easy flaw (a
# missing citation) and not the hard one: whether the answer is *right* for this image. Yet the
# guide already knows something about that — the log-probability it gives an answer. A reward
# model can start from that judgement, $r(x, y) = w^	op h_	ext{end} + a \log \pi(y \mid x)$,
# with $a$ learned (starting at 1) and the head learning what the likelihood misses
# (`logprob_prior=True`). Built on the guide before the noisy fine-tuning, which answers more
# questions right, and trained for the same 30 steps:

# %%
rm2, _ = st.train_reward_model(VLMPolicy(copy.deepcopy(guide().module)), pairs_tr, train.images, steps=30,
                               batch_size=16, seed=0, logprob_prior=True)
for kind, acc in st.reward_accuracy(rm2, pairs_te, test.images).items():
    print(f"held-out pairwise accuracy, {kind:16s} {acc:5.1f} %   (head + log-likelihood)")

# %% [markdown]
# ### DPO
#
# Direct preference optimisation {cite:p}`rafailov2023dpo` skips the reward model. Its loss is
# the Bradley–Terry loss applied to an *implicit* reward, $\beta$ times the log-ratio of the
# policy to a frozen reference (the SFT model):
#
# $$
# \mathcal{L}_\text{DPO} = -\log \sigma\Big(\beta \log\frac{\pi(y_c|x)}{\pi_\text{ref}(y_c|x)}
# - \beta \log\frac{\pi(y_r|x)}{\pi_\text{ref}(y_r|x)}\Big).
# $$
#
# The identity is exact, as the cell shows on random numbers; `tests/test_train_reference.py`
# also checks `dpo_loss` against TRL's `DPOTrainer` on the same numbers.
#
# DPO only widens the *margin* between the chosen and the rejected answer; it can do so by making
# both less likely, and then the right answers themselves slip. Pang et al. {cite:p}`pang2024irpo`
# add the chosen answers' negative log-likelihood per token to the loss, and the run below does the
# same (`nll_weight=1.0`); without it DPO can pay for better citations with right answers
# (Exercise 3 measures both).

# %%
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(0)
pc, pr, rc, rr = (-10 * torch.rand(6, generator=g) for _ in range(4))
beta = 0.1
print(f"dpo_loss                         {float(dpo_loss(pc, pr, rc, rr, beta)):.6f}")
print(f"reward_loss on beta * log-ratios {float(reward_loss(beta * (pc - rc), beta * (pr - rr))):.6f}")

# %%
ref = VLMPolicy(copy.deepcopy(sft.module))
dpo = VLMPolicy(copy.deepcopy(sft.module))
hist_dpo = st.train_dpo(dpo, ref, pairs_tr, train.images, steps=40, beta=0.1, batch_size=16, seed=0,
                        nll_weight=1.0)
results["DPO"] = st.evaluate(dpo, test)["all"]
kl = st.kl_to_reference(dpo, ref, [c for c, _, _ in pairs_te[:64]], test.images)
for k in ("SFT (noisy)", "DPO"):
    print(f"{k:12s} {results[k]}")
print(f"DPO - SFT: accuracy {results['DPO']['accuracy'] - results['SFT (noisy)']['accuracy']:+.1f} points, "
      f"citation precision {results['DPO']['citation_precision'] - results['SFT (noisy)']['citation_precision']:+.1f}"
      " points")
print(f"KL(DPO || SFT) per answer token: {kl:.4f} nats")

# %% mystnb={"figure": {"caption": "Training loss of each stage on the guide, one point per logged batch: stage 0's caption loss (projector only), supervised fine-tuning on noisy citations, the Bradley\u2013Terry reward model and DPO. Each stage runs 30\u201340 steps on 40 training exhibits; single batches of 16 make the curves noisy.", "name": "fig-ch6-losses"}, "image": {"alt": "Four training-loss curves against the step. The stage-0 caption curve lies far above the others and falls over its 30 steps; the SFT, reward-model and DPO curves lie close together near the bottom, the SFT one jumping up and down."}}
show(line_plot({name: ([r["step"] for r in h], [r["loss"] for r in h])
                for name, h in (("stage 0 (captions)", hist0), ("SFT", hist_sft), ("reward model", hist_rm),
                                ("DPO", hist_dpo))},
               xlabel="step", ylabel="training loss", title="the stages at toy scale"))

# %% [markdown]
# {numref}`fig-ch6-losses` shows the four losses. The caption loss is
# far above the others: describing an exhibit is a new task for a guide that answers questions. DPO starts at $\log 2 \approx 0.69$: policy and
# reference are the same model, so every margin is zero.
#
# ### PPO, piece by piece
#
# Before DPO, preferences were learned online with PPO {cite:p}`schulman2017ppo`, as in
# InstructGPT {cite:p}`ouyang2022instructgpt`: the guide answers, the reward model scores the
# answer, every generated token pays $\beta \cdot \mathrm{KL}$ to the reference, and generalised
# advantage estimation {cite:p}`schulman2016gae` turns those per-token rewards into advantages,
#
# $$
# \delta_t = r_t + \gamma V_{t+1} - V_t, \qquad A_t = \delta_t + \gamma\lambda A_{t+1}.
# $$
#
# On a three-token answer with reward 1 at its end and a value head that predicts 0.5 everywhere:

# %%
# NBVAL_CHECK_OUTPUT
rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
values = torch.full((1, 4), 0.5)
mask = torch.tensor([[1, 1, 1, 0]])
adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
print("advantages", [round(x, 4) for x in adv[0].tolist()], " returns", [round(x, 4) for x in ret[0].tolist()])
# the clipped objective: a ratio far from 1 earns no more than a ratio of 1 ± 0.2
old = torch.zeros(1, 3)
for shift in (0.1, 0.5):
    loss, stats = ppo_policy_loss(old + shift, old, torch.ones(1, 3), torch.ones(1, 3), clip=0.2)
    print(f"ratio {float(torch.exp(torch.tensor(shift))):.3f}: loss {float(loss):+.4f}, "
          f"clipped fraction {stats['clipfrac']:.2f}")
# the adaptive KL coefficient grows while the measured KL is above its target, shrinks below it
ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=100)
print("beta:", [round(ctl.update(kl_, 10), 4) for kl_ in (12.0, 12.0, 3.0, 6.0)])

# %% [markdown]
# GRPO {cite:p}`shao2024deepseekmath` drops the value head: it samples a *group* of answers to
# the same question and uses each answer's reward relative to its group, $(r - \bar r)/s$.
# A group whose answers all score the same teaches nothing.

# %%
# NBVAL_CHECK_OUTPUT
group_rewards = torch.tensor([[1.5, 0.0, 1.0, 0.5], [1.0, 1.0, 1.0, 1.0]])
print(group_relative_advantages(group_rewards).round(decimals=3))

# %% [markdown]
# PPO runs here on the noisy-citation SFT model for 20 iterations (`train_ppo`): each samples
# answers to 16 training questions, scores them with the museum's reward (1 for a right answer,
# plus half its {term}`citation precision`), shapes the score with the KL to the SFT reference, and takes
# two clipped updates with a fresh value head; the adaptive controller moves β towards a target KL.
# Unlike DPO, PPO learns from the guide's own samples: any answer that cites the right patch earns
# more than one that does not, whatever the noisy annotators wrote.

# %%
ppo = VLMPolicy(copy.deepcopy(sft.module))
hist_ppo = st.train_ppo(ppo, VLMPolicy(copy.deepcopy(sft.module)), train, steps=20, batch_items=16, lr=1e-4,
                        seed=0)
results["PPO"] = st.evaluate(ppo, test)["all"]
for r in (hist_ppo[0], hist_ppo[-1]):
    print(f"iteration {r['step']:2d}: mean reward {r['score']:.3f}, KL to SFT {r['kl']:.3f} nats, beta {r['beta']:.4f}")
print(f"PPO - SFT: accuracy {results['PPO']['accuracy'] - results['SFT (noisy)']['accuracy']:+.1f} points, "
      f"citation precision {results['PPO']['citation_precision'] - results['SFT (noisy)']['citation_precision']:+.1f}"
      " points")

# %% [markdown]
# The group-relative variant needs no value head; one step on four questions, four samples each,
# shows its pieces at work (the step's KL is zero: its answers were sampled from a policy still
# identical to the reference).

# %%
torch.manual_seed(0)
pol, ref_p = VLMPolicy(copy.deepcopy(sft.module)), VLMPolicy(copy.deepcopy(sft.module))
opt = torch.optim.AdamW(pol.module.lm.parameters(), lr=1e-4)
out = st.grpo_step(pol, ref_p, opt, test, test.items[:4], torch.Generator().manual_seed(1), group=4)
print("GRPO step:", {k: round(v, 4) for k, v in out.items()})

# %% [markdown]
# ## 6.4 Self-consistency and distillation
#
# **Self-consistency** {cite:p}`wang2023selfconsistency` spends compute at answer time: sample $K$
# answers at temperature 0.7 and return the most frequent one (answers are compared without
# their citations, so `[CITE:<p_3>] red` and `red` vote together). {numref}`fig-ch6-self-consistency`
# shows the DPO guide's accuracy against $K$.

# %% mystnb={"figure": {"caption": "Held-out accuracy of the DPO guide when it samples K answers at temperature 0.7 and returns the majority; K = 1 is a single sampled answer.", "name": "fig-ch6-self-consistency"}, "image": {"alt": "A line with markers rising or levelling off from K equals 1 to K equals 9 sampled answers, accuracy in percent on the vertical axis."}}
sc = st.self_consistency_accuracy(dpo, test, ks=(1, 3, 5, 9), temperature=0.7, seed=0)
print("accuracy by K:", sc, "| greedy:", results["DPO"]["accuracy"])
show(tplot.self_consistency_figure(sc, title="majority vote over K samples"))

# %% [markdown]
# Compare the vote with the greedy answer printed beside it. Sampling at temperature 0.7 trades
# the greedy answer's certainty for diversity, and on a guide this small the votes and the greedy
# answer stay within a point or two of each other — about the noise of 205 questions (Chapter 7
# shows how to test that). Voting helps most where the model's errors are spread over many wrong
# answers and its right answer is the most frequent one.
#
# **Distillation** {cite:p}`hinton2015distilling` trains a smaller student on the teacher's
# *softened* distribution: both logits are divided by a temperature $T$, and the KL between them
# is multiplied by $T^2$ so that its gradient keeps its size as $T$ grows.

# %%
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(0)
s_log, t_log = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
for T in (1.0, 2.0, 4.0):
    s_ = s_log.clone().requires_grad_(True)
    distill_loss(s_, t_log, temperature=T).backward()
    print(f"T = {T}: T^2-scaled KL {float(distill_loss(s_log, t_log, T)):.4f}, gradient norm {float(s_.grad.norm()):.4f}")

# %% [markdown]
# Which half of the teacher should the student keep? DistilBERT {cite:p}`sanh2019distilbert`
# keeps every other layer and starts from the teacher's weights. Our guide has two layers, and the
# two-step look-up of Chapter 5 — image tokens read the question, then the answer reads the image
# tokens — needs both. The first experiment halves the depth anyway: the student has the teacher's
# image side, embeddings and head and its first layer, and trains for 150 steps either on the right
# answers alone ($\alpha = 0$) or on an even mix of them and the DPO guide's distribution
# ($\alpha = 0.5$).

# %%
student = st.half_size_student(dpo, seed=0)
clean = st.sft_examples(dpo, train, cite=True)
n_t = sum(p.numel() for p in dpo.module.lm.parameters())
n_s = sum(p.numel() for p in student.module.lm.parameters())
results["student, untrained"] = st.evaluate(student, test)["all"]
for name, alpha in (("half depth, CE only", 0.0), ("half depth, distilled", 0.5)):
    s_pol = st.half_size_student(dpo, seed=0)
    st.distill(s_pol, dpo, clean, train.images, steps=150, temperature=2.0, alpha=alpha, batch_size=16, lr=1e-2,
               seed=0)
    results[name] = st.evaluate(s_pol, test)["all"]
print(f"language model: teacher {n_t:,} weights, half-depth student {n_s:,} ({n_s / n_t:.0%})")
for k in ("DPO", "student, untrained", "half depth, CE only", "half depth, distilled"):
    print(f"{k:22s} {results[k]}")

# %% [markdown]
# One layer, copied, is not half of the skill: 150 steps bring the half-depth student only part of
# the way back, and a layer cannot learn a look-up that needs two. The book's student therefore
# keeps the depth and narrows the width: `half_width_config` takes the widest language model with
# the teacher's layers and heads that has at most half its weights. It starts fresh, shares the
# teacher's frozen image side, and trains with Chapter 5's whole recipe (the curriculum and the
# 3,000 steps) against `vlm-tiny` (`vlmbook.train.student`) on
#
# $$
# 0.5\,T^2\,\mathrm{KL}\big(p_T^\text{teacher} \,\|\, p_T^\text{student}\big) + 0.5\,\mathrm{CE}
# + \big\lVert h^\text{student} - P^\top h^\text{teacher} \big\rVert^2 .
# $$
#
# The last term is a *hint* in the sense of FitNets {cite:p}`romero2015fitnets`: at every position,
# image tokens included, the student's last hidden state is pulled towards the teacher's, projected
# to the student's width by a fixed matrix $P$ with orthonormal columns. The logits say what the
# teacher answers; the hidden states also say where it looked. Training takes minutes, so it ran
# offline — `python -m vlmbook.train.student SEED --out bench/results/student.jsonl`, with
# `--hidden-weight 0` for logits alone — and seed 0 is committed as the artifact `vlm-student-tiny`
# (`vlmbook artifacts build vlm-student-tiny`). Here it is scored on this chapter's test exhibits
# beside its teacher, and the records give every seed on Chapter 5's 200 test exhibits.

# %%
from vlmbook.train.student import lm_parameters, summarise_students  # noqa: E402

student_w = VLMPolicy(load_artifact("vlm-student-tiny", VisionLanguageModel))
results["half width, distilled"] = st.evaluate(student_w, test)["all"]
c = student_w.module.config
ratio = lm_parameters(student_w.module) / lm_parameters(base.module)
print(f"half-width student: width {c.hidden}, {c.layers} layers, {c.heads} heads; "
      f"{lm_parameters(student_w.module):,} LM weights ({ratio:.0%} of the teacher's)")
for k in ("vlm-tiny", "half width, distilled"):
    print(f"{k:22s} {results[k]}")
retention = results["half width, distilled"]["accuracy"] / results["vlm-tiny"]["accuracy"]
print(f"retention on these exhibits: {retention:.1%}")
for name, row in summarise_students().items():
    n = len(row["seeds"])
    print(f"{name:23s} {n} seed{'s' * (n > 1)}: accuracy {row['accuracy']['mean']:.1f} % "
          f"({row['accuracy']['min']:.1f}-{row['accuracy']['max']:.1f}), retention {row['retention']['mean']:.1%} "
          f"(teacher {row['teacher_accuracy']:.1f} %)")
glue("ch6-student-retention", 100 * retention, display=False)

# %% [markdown]
# Kept at full depth, half the weights reach {glue:text}`ch6-student-retention:.0f` % of the
# teacher's accuracy on these exhibits. Depth was what the guide could not spare; width it could —
# once the student learns from the teacher's hidden states as well. From the logits alone (the
# `logits` record: one seed, the same steps), the same student stays far below its teacher: the
# answers say *what* to say, the hidden states also show *where* the teacher found it.
#
# ## 6.5 Post-training: int8 weights, a compressed KV cache and prompt caching
#
# **Weight quantisation** stores each linear layer's weight as int8 with one float scale per
# output row, $w \approx s\,q$, $q \in \{-127,\dots,127\}$: a quarter of the bytes of float32.
# The embedding table is quantised the same way, one scale per token row, and the output head,
# which shares its weight with the embeddings, reads that same int8 table: quantising the head on
# its own would add a copy of a shared tensor instead of removing one.

# %%
q8, sizes = st.int8_language_model(dpo)
results["DPO, int8"] = st.evaluate(q8, test)["all"]
print(f"{sizes['quantised_layers']} linear layers quantised: {sizes['quantised_bytes_fp32']:,} -> "
      f"{sizes['quantised_bytes_int8']:,} bytes "
      f"({sizes['quantised_bytes_fp32'] / sizes['quantised_bytes_int8']:.2f}x); whole LM {sizes['lm_bytes_fp32']:,} -> "
      f"{sizes['lm_bytes_int8']:,} bytes ({sizes['lm_bytes_fp32'] / sizes['lm_bytes_int8']:.2f}x)")
for k in ("DPO", "DPO, int8"):
    print(f"{k:10s} {results[k]}")

# %% [markdown]
# **KV-cache compression.** While the guide writes an answer, every layer keeps the keys and
# values of all earlier tokens; with long prompts or many visitors at once this cache, not the
# weights, is what fills memory. `vlmbook.train.kvcache` stores each cached key and value vector
# as int8 with its own absmax scale — the same per-row rule as the weights above, applied to the
# activations as they arrive — while the tokens of the current step are used exactly. Beside it,
# the reference is `transformers`' own `QuantizedCache` with its float8 backend, which keeps one
# scale per tensor. Each cache is measured on the DPO guide: held-out accuracy, the bytes held
# after the first question's prompt, and the time to generate one answer.

# %%
kv = st.kv_cache_compression(dpo, test, repeats=5)
for kind in ("fp32", "int8", "fp8"):
    r = kv[kind]
    print(f"{kind}: accuracy {r['accuracy']:5.2f} %, citation precision {r['citation_precision']:5.2f} %, "
          f"cache {r['stored_bytes']:,} bytes ({r['ratio']:.2f}x smaller), answer {r['answer_ms']:.1f} ms")
glue("ch6-kv-head", dpo.module.text.config.hidden_size // dpo.module.text.config.num_attention_heads, display=False)
glue("ch6-kv-int8-ratio", kv["int8"]["ratio"], display=False)
glue("ch6-kv-int8-loss", kv["fp32"]["accuracy"] - kv["int8"]["accuracy"], display=False)

# %% [markdown]
# The int8 cache is {glue:text}`ch6-kv-int8-ratio:.2f`× smaller — not 4×, because each
# key or value vector of {glue:text}`ch6-kv-head` numbers carries a 4-byte scale — and its answers
# score {glue:text}`ch6-kv-int8-loss:.2f` points below the fp32 cache's here. What it saves is
# memory, and the saving grows with the context: at a prompt this short the whole cache is a few
# kilobytes, and the answer time is set by the layers' arithmetic, not by the cache; a cache that
# would not fit in memory in fp32 fits in int8.
#
# **Prompt caching** reuses the work that many requests share. A museum guide sees the same
# exhibit again and again. An image-first guide could keep the keys and values of its image
# prefix. Ours is *question-first* (Chapter 5 chose that layout so that the image tokens can attend
# to the question), so the keys and values of its image tokens depend on the question and cannot
# be reused. What stays the same is everything before the language model: the ViT's patch
# features of the exhibit. The guide caches those once per exhibit and runs only the compressor,
# projector and language model for each new question.

# %%
ttft = st.prompt_cache_ttft(dpo, test.images[0], test.items[0][1].question, repeats=7)
print(f"cache: {ttft['cache']} (layout {cfg.layout!r})")
print(f"time to first token: {ttft['ttft_ms']:.2f} ms from pixels, {ttft['ttft_cached_ms']:.2f} ms from the cached "
      f"features ({1 - ttft['ttft_cached_ms'] / ttft['ttft_ms']:.0%} less)")
img0 = test.images[:1]
q0 = torch.tensor([dpo.encode(test.items[0][1].question) + [dpo.module.ids["assistant"]]])
with torch.no_grad():
    same = torch.equal(dpo.module.generate(img0, q0), dpo.module.generate(None, q0, features=dpo.module.encoder(img0)))
print("same answer from cached features:", same)

# %% [markdown]
# All stages side by side ({numref}`fig-ch6-stages`). Citation precision here is the reward's:
# an answer that cites nothing scores 0 when there was evidence to cite.

# %% mystnb={"figure": {"caption": "Held-out answer accuracy and citation precision of the committed guide and of each stage of this chapter, on the same 30 test exhibits: supervised fine-tuning on noisy citations, DPO on the museum's preference pairs, PPO on the guide's own samples, the DPO guide with int8 language-model weights, the half-depth student distilled from the DPO guide for 150 steps, and the committed half-width student distilled from vlm-tiny for 3,000 steps.", "name": "fig-ch6-stages"}, "image": {"alt": "Paired bars for seven models: vlm-tiny, SFT with noisy citations, DPO, PPO, DPO int8, the half-depth and the half-width students; blue bars show answer accuracy and orange bars citation precision, in percent."}}
order = ("vlm-tiny", "SFT (noisy)", "DPO", "PPO", "DPO, int8", "half depth, distilled", "half width, distilled")
show(tplot.stages_figure({k.replace(", ", "\n"): results[k] for k in order}, title="held-out, 30 test exhibits"))

# %% [markdown]
# ## 6.6 Several GPUs
#
# Nothing above assumes one device. `vlmbook.train.distributed` wraps the SFT and DPO steps for
# Hugging Face `accelerate`: each process holds a copy of the model, takes its own slice of every
# batch, and gradients are averaged over the workers before each update. One detail matters for
# SFT: its loss is a mean over *tokens*, and the workers' shares hold different numbers of answer
# tokens. Each worker therefore divides its summed token loss by the *global* token count
# (all-reduced first) divided by the number of workers, not by its own count; the average of the
# workers' losses is then exactly the loss of the whole batch on one device. The test
# `tests/test_train_distributed.py` (run with `VLMBOOK_SLOW=1`) launches two CPU processes and
# checks that their update equals one process's update on the whole batch. On a machine with
# eight GPUs, one process per GPU:
#
# ```bash
# accelerate launch --num_processes 8 -m vlmbook.train.distributed --vlm-tiny --task sft --steps 100 --out run/
# accelerate launch --num_processes 8 -m vlmbook.train.distributed --vlm-tiny --task dpo --steps 100 --out run/
# ```
#
# and on two CPU processes, as the test does (`--multi_gpu` only selects `accelerate`'s launcher;
# the script joins the processes over gloo):
#
# ```bash
# accelerate launch --multi_gpu --num_processes 2 -m vlmbook.train.distributed --task sft,dpo --out run/
# ```
#
# ## Summary
#
# - A VLM is trained in stages. Alignment moves only the projector; instruction tuning trains on
#   conversations whose labels are −100 everywhere except the assistant's tokens; a chain of
#   thought can be shown without being graded; a curriculum starts easy; LoRA and per-group
#   learning rates decide how much of which part moves.
# - Preferences are pairs. A Bradley–Terry reward model learns to rank them — on a model this
#   small, whether an answer is right only once it starts from the guide's own log-likelihood; DPO is the same loss
#   on the policy's log-ratio to a frozen reference and needs no reward model; PPO learns online
#   from the guide's own samples with GAE, a clipped ratio and a KL penalty whose weight adapts;
#   GRPO replaces the value head by comparing answers within a group.
# - At answer time, sampling several answers and voting can trade compute for accuracy — it did
#   not here, where the votes stayed level with the greedy answer. Offline, a student with half the
#   weights learns from the teacher's softened distribution — if it keeps the depth the task needs.
# - After training, int8 weights shrink the language model almost four-fold (the per-row scales,
#   norms and biases stay in float), and an int8 KV cache shrinks what generation keeps in memory;
#   a question-first guide cannot reuse its image tokens' keys and values, but it can cache the
#   exhibit's encoder features.
#
# ## Exercises
#
# 1. Train the SFT stage with `citation_noise=0` and with `0.5`, then DPO on both. Does DPO close
#    the gap in citation precision? Use Chapter 7's paired tests on more test exhibits to decide.
# 2. Train SFT with the chain of thought learned and with it only shown. Which answers better, and
#    which writes longer answers? Measure the answer length in tokens.
# 3. Sweep DPO's $\beta$ over 0.01, 0.1 and 1, with `nll_weight=0` and `1`. Plot the KL to the
#    reference against the change in citation precision, and the change in answer accuracy beside it.
# 4. Distil the half-depth student from 10 training exhibits instead of 40, with $\alpha = 0$ and
#    $0.5$. Does the teacher's distribution help more when the right answers are few? Then train the
#    half-width student with `python -m vlmbook.train.student 0 --alpha 0` and compare its record
#    with the distilled one.
# 5. Replace the SFT stage by LoRA (r = 4, 8, 16) on the language model. How many weights train,
#    and how close does each rank get to full fine-tuning after the same number of steps?
# 6. Run `grpo_step` for 50 steps on the training exhibits with groups of 4 and 8. Plot the mean
#    reward against the step. What happens with groups whose answers all score the same?
# 7. Build an image-first guide in Chapter 5 (`layout="image_first"`) and measure
#    `prompt_cache_ttft` with and without the cached prefix. How does its saving compare with the
#    question-first guide's cached features?
#
# Worked solutions, with the training exercises shortened to run in about a minute on a CPU (they
# are partial and say so): {doc}`solutions/06_alignment_solutions`.

# %%
nb.report_runtime()
