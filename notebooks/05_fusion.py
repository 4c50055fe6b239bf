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
# # Chapter 5 — Fusion: putting image tokens into a language model
#
# The museum guide has an image tokenizer (Chapter 2) and an image encoder (Chapter 4). Now it
# needs a language model that *reads* those tokens next to a visitor's question and writes an
# answer — and points at the patches that prove it. This chapter builds that model from
# `transformers` parts and trains it on the museum.
#
# **What you will build and measure**
#
# - a BPE tokenizer trained on the museum's captions and questions, wrapped as a `transformers`
#   fast tokenizer with `<image>`, `</image>`, `<v_0>…<v_{K-1}>`, citation markers and chat roles;
# - a small Llama-architecture language model built from a config;
# - the **discrete route** (image codes become `<v_k>` words) and the **continuous route**
#   (`<image>` placeholders replaced by projected features), and their prompt templates;
# - attention masks — causal, prefix-LM, interleaved multi-image, Flamingo media masks — as
#   pictures and as the 4-D tensors Hugging Face models accept;
# - **gated cross-attention** hooked into an unmodified LM, with the LM unchanged at initialisation;
# - a `VisionLanguageModel` with greedy and sampled generation, a KV cache and prompt caching;
# - a training run in which each route learns to answer museum questions, scored per question type;
# - citations `[CITE:<v_k>]` mapped back to boxes, and a JSON audit record per answer;
# - the FLOP cost of prefix versus gated fusion, checked against measured time.

# %%
from vlmbook import nb; nb.start_chapter(5)

import inspect

import torch

from vlmbook import fusion
from vlmbook.data import Museum, SINGLE_OBJECT_TYPES, RELATIONAL_TYPES, cite, patch_box, support_patches
from vlmbook.fusion import cost, grounding, train as ftrain
from vlmbook.plot import image_grid, show
from vlmbook.plot import fusion as pf

# %% [markdown]
# ## 5.1 The text side: a tokenizer and a language model
#
# A language model reads integers. Byte-pair encoding {cite:p}`sennrich2016bpe` learns those
# integers from text: it starts from the 256 bytes and repeatedly merges the most frequent
# adjacent pair until the vocabulary is full. We train it on the museum's own corpus — captions,
# questions and answers of training exhibits — so that every colour and shape name becomes a
# single token. Then we add the tokens this book needs on top.

# %%
# NBVAL_CHECK_OUTPUT
tok = fusion.museum_tokenizer(vocab_size=512, codebook_size=16, n_scenes=1000)
ids = tok("What colour is the star? red", add_special_tokens=False)["input_ids"]
print("vocabulary:", len(tok), "tokens")
print(tok.convert_ids_to_tokens(ids))
print("special:", fusion.text.SPECIAL_TOKENS)
print("visual:", tok.convert_ids_to_tokens(tok.convert_tokens_to_ids(["<v_0>", "<v_15>"])))

# %% [markdown]
# The language model is `transformers.LlamaForCausalLM` {cite:p}`touvron2023llama` built from a
# small config: RMSNorm, rotary positions, SwiGLU MLP and grouped-query attention, the same code
# that runs billion-parameter checkpoints. `fusion.load_causal_lm(path)` loads any local Hugging
# Face causal-LM checkpoint and its tokenizer instead, when a reader has one on disk.

# %%
# NBVAL_CHECK_OUTPUT
lm_cfg = fusion.LMConfig.tiny().replace(vocab_size=len(tok))
lm = fusion.build_lm(lm_cfg, seed=0)
print(lm_cfg)
print("parameters:", sum(p.numel() for p in lm.parameters()))
print(type(lm).__name__, lm.config.num_hidden_layers, "layers, width", lm.config.hidden_size)

# %% [markdown]
# ## 5.2 The discrete route: image codes become words
#
# An image tokenizer turns an image into integer codes `(B, h, w)` from a codebook of size $K$.
# The discrete route adds $K$ new words `<v_0> … <v_{K-1}>` to the vocabulary (the embedding
# table grows by $K$ rows) and writes code $k$ as word `<v_k>`. Chapter 2's VQ tokenizer plugs in
# here; this chapter's default is deliberately simple and fixed — k-means over the colour of each
# patch's sub-blocks — so that all learning happens in the language model.

# %%
# NBVAL_CHECK_OUTPUT
museum = Museum("train", size=64)
imgs = museum.tensors(0, 400)
quant = fusion.PatchQuantizer(codebook_size=16, grid=4, sub=2).fit(imgs, iters=10, seed=0)
codes = quant.encode(imgs[:2])
print("codes", tuple(codes.shape), codes[0].tolist())
v0 = tok.convert_tokens_to_ids("<v_0>")
print("token ids", fusion.codes_to_token_ids(codes, v0, 16)[0, :8].tolist())
try:
    fusion.codes_to_token_ids(codes + 16, v0, 16)
except ValueError as e:
    print("ValueError:", e)

# %% [markdown]
# What does the language model "see" through 16 codes? Decoding each code back to its centroid
# shows the price of a fixed, tiny codebook: colours survive, shapes mostly do not.

# %%
show(image_grid([imgs[0], quant.decode(codes)[0], imgs[1], quant.decode(codes)[1]],
                titles=["exhibit", "16 codes", "exhibit", "16 codes"], ncols=4))

# %% [markdown]
# Prompts are written once as a Jinja2 chat template and filled with image-token strings and
# question turns; several images and several questions are just loops in the template.

# %%
# NBVAL_CHECK_OUTPUT
print(fusion.PROMPT_TEMPLATE)
prompt = fusion.render_prompt([fusion.image_string(codes[0]), fusion.image_string(n_placeholders=4)],
                              ["What colour is the star?", "How many objects are there?"], ["red", None])
print(prompt)
print(len(tok(prompt, add_special_tokens=False)["input_ids"]), "tokens")

# %% [markdown]
# ## 5.3 The continuous route: placeholders and masked scatter
#
# The continuous route keeps the image as vectors. The prompt holds $M$ copies of `<image>`; the
# encoder (and any compressor) produces $M$ feature vectors, a projector maps them to the LM's
# width, and `masked_scatter` writes them into `inputs_embeds` at the placeholder positions — the
# recipe of LLaVA {cite:p}`liu2023llava`. The count must match exactly, or every later feature
# would shift; `merge_image_features` checks it.

# %%
print(inspect.getsource(fusion.merge_image_features))

# %%
# NBVAL_CHECK_OUTPUT
emb = torch.zeros(1, 7, 4)
ph = torch.tensor([[1, 9, 9, 9, 2, 3, 4]])  # 9 plays <image>
out = fusion.merge_image_features(emb, ph, torch.ones(1, 3, 4), image_token_id=9)
print(out[0, :, 0].tolist())
try:
    fusion.merge_image_features(emb, ph, torch.ones(1, 2, 4), image_token_id=9)
except ValueError as e:
    print("ValueError:", e)

# %% [markdown]
# Truncating a long conversation must never cut an image in half: `truncate_ids` drops a whole
# image block when the limit falls inside it.

# %%
# NBVAL_CHECK_OUTPUT
seq = [1, 2, 9, 9, 9, 9, 3, 4, 5]
for n in (9, 7, 4):
    print(n, fusion.truncate_ids(seq, n, image_ids=[9]))

# %% [markdown]
# ## 5.4 Attention masks
#
# A causal mask lets each token see itself and the past. Image tokens have no natural order,
# so a **prefix-LM** mask {cite:p}`raffel2020t5` makes the image block bidirectional while text
# stays causal. With several images, each gets its own bidirectional block (**interleaved**
# mask). Flamingo {cite:p}`alayrac2022flamingo` instead keeps images out of the sequence: its
# **media mask** lets each text token attend to the most recent image only, and tokens before
# the first image see none. All are boolean matrices; `to_4d` turns them into the additive
# `(B, 1, T, S)` masks that `LlamaForCausalLM` accepts as-is with `eager` or `sdpa` attention.

# %%
labels = ["<bos>", "I1", "I1", "I1", "t", "t", "I2", "I2", "I2", "t", "t"]
masks = {
    "causal": fusion.causal_mask(11),
    "prefix-LM (image 1)": fusion.prefix_lm_mask(11, 1, 4),
    "interleaved, 2 images": fusion.block_mask(11, [(1, 4), (6, 9)]),
    "Flamingo media mask": fusion.media_mask(6, [1, 3], tokens_per_image=3),
}
show(pf.masks_figure(masks))

# %%
# NBVAL_CHECK_OUTPUT
m4 = fusion.to_4d(fusion.prefix_lm_mask(5, 1, 3))
print(tuple(m4.shape), m4.dtype)
print((m4[0, 0] == 0).int())
x = torch.arange(3, 12)[None]
same = torch.allclose(lm(x).logits, lm(x, attention_mask=fusion.to_4d(fusion.causal_mask(9))).logits, atol=1e-5)
print("4-D causal mask reproduces the built-in causal mask:", same)

# %% [markdown]
# ## 5.5 Gated cross-attention
#
# Flamingo adds new cross-attention blocks in front of the frozen LM's layers and multiplies
# their output by $\tanh(\alpha)$ with $\alpha = 0$ at initialisation:
#
# $$ h \leftarrow h + \tanh(\alpha_{\text{attn}})\,\mathrm{XAttn}(h, \text{media}), \qquad
#    h \leftarrow h + \tanh(\alpha_{\text{ffn}})\,\mathrm{FFN}(h). $$
#
# At the start the LM therefore computes exactly what it did before, and training opens the
# gates gradually. `GatedAdapter` inserts the blocks every $k$ layers with forward pre-hooks:
# not a line of `transformers` is edited.

# %%
# NBVAL_CHECK_OUTPUT
x = torch.arange(3, 15).view(2, 6)
before = lm(x).logits
adapter = fusion.GatedAdapter(lm.model.layers, lm_cfg.hidden, every=2, heads=lm_cfg.heads)
with adapter.media(torch.randn(2, 16, lm_cfg.hidden)):
    after = lm(x).logits
print("blocks before layers", adapter.positions)
print("logits unchanged at init:", torch.equal(before, after))
adapter.remove()

# %% [markdown]
# ## 5.6 One model, three routes
#
# `VisionLanguageModel` ties image → (compressor) → fusion → LM. All routes share one prompt
# layout, `<bos><|user|>[image]</image>question<|assistant|> answer<|end|>`; the discrete and
# continuous routes put $M$ image tokens in the sequence, the gated route a single `<image>`
# marker. The `tiny` preset draws exhibits at 72 px and reads them as a 3 × 3 grid, so each image
# token covers exactly one exhibit cell ($M = 9$). The default image side is a small
# convolutional patch encoder; `replace_encoder` and `replace_quantizer` accept Chapter 4's
# encoders and compressors and Chapter 2's tokenizer through the same two interfaces.

# %%
# NBVAL_CHECK_OUTPUT
cfg = fusion.VLMConfig.tiny()
print(cfg)
for route in fusion.ROUTES:
    m = fusion.VisionLanguageModel(cfg.replace(route=route))
    n = sum(p.numel() for p in m.parameters())
    print(f"{route:10s} params {n:7d}  tokens in LM sequence per image: {m.image_slots}")

# %% [markdown]
# Generation runs the prompt once (prefill) and then one token at a time, keeping each layer's
# keys and values in a `DynamicCache`. For a museum guide the image is static while visitors ask
# many questions, so `cache_prefix` computes the image prefix once and every question starts
# from a copy of its cache. Caching must not change a single token (tested in
# `tests/test_fusion_model.py`).

# %% [markdown]
# ## 5.7 Learning to answer
#
# Training minimises the next-token loss on the answer tokens only. Held-out accuracy is the
# exact match of the greedy answer, computed in one teacher-forced pass: greedy decoding returns
# exactly the reference iff the arg-max at every answer position equals the reference token.
# Plaque questions are left out: at this resolution the digits are a few pixels tall.
#
# The recipe follows LLaVA's first stage {cite:p}`liu2023llava`: the image encoder is trained
# first and then **frozen**. Here it is warmed up on per-patch labels (the colour, shape and size
# of the object in each cell; `train.warm_encoder`), standing in for a pretrained encoder. A frozen
# encoder's features are computed once for the whole training set, so every step pays only for
# the projector and the language model. The discrete route keeps its fixed k-means tokenizer.

# %%
demo = ftrain.DemoConfig.tiny()
print(demo)
results = ftrain.run_demo(cfg, demo)
baseline = results.pop("baseline")["accuracy"]
print(f"encoder warm-up: {results.pop('encoder_seconds'):.0f} s")
for r, v in results.items():
    print(f"{r:10s} {demo.steps} steps in {v['seconds']:.0f} s")

# %%
show(pf.loss_curves({r: v["history"] for r, v in results.items()}))

# %%
types = [t for t in ("colour", "shape", "count", "exists", "locate", "spatial", "compare")]
show(pf.accuracy_bars({**{r: v["accuracy"] for r, v in results.items()}, "no image (majority)": baseline}, types,
                      title="held-out museum-QA accuracy per question type"))
for r, v in results.items():
    print(f"{r:10s} answer loss {v['history'][0]['loss']:.2f} -> {v['history'][-1]['loss']:.2f} nats/token")
for r, a in [*((r, v["accuracy"]) for r, v in results.items()), ("no image", baseline)]:
    print(f"{r:10s} all {a['all']:5.1f} %  single-object {a['single']:5.1f} %  relational {a['relational']:5.1f} %")
best = max(results, key=lambda r: results[r]["accuracy"]["all"])
gain = {t: results[best]["accuracy"][t] - baseline[t] for t in types}
print(f"best route: {best}; points above the image-blind baseline per type:",
      {t: round(g, 1) for t, g in gain.items()})

# %% [markdown]
# **What the tiny run does and does not reach.** In well under a minute of CPU per route, every
# route learns the answer format and each question type's answer distribution, and the
# continuous and gated routes climb above the image-blind baseline on several question types
# (the gains printed above), while others stay at the baseline. The chapter aims at 80 %; this
# run is far from it, and we say so plainly. The hard part is *binding*: "What colour is the
# star?" needs a two-step circuit (find the token that holds the star, then copy its colour).
#
# Is the bottleneck the image features or the language model? When we replaced the encoder's
# features by perfect one-hot attributes per cell (colour, shape, size, position), the same
# 1,200 steps scored no better (Exercise 7): the encoder already tells the LM what is in each
# cell; what takes time is learning to *look up* the cell a question is about.
#
# ### Training longer
#
# The committed artifact `vlm-tiny` is the same model and recipe — continuous route, frozen
# warmed-up encoder, loss on answers only — trained for 15,000 steps instead of 1,200
# (`DemoConfig.offline()`; `vlmbook artifacts build vlm-tiny` rebuilds it in about ten minutes of
# one core). Its builder scored the held-out exhibits every 1,500 steps, and the log travels with
# the model (`training_log.json`):

# %%
from vlmbook.hub import load_artifact  # noqa: E402

guide = load_artifact("vlm-tiny", fusion.VisionLanguageModel)
log = guide.training_log
show(pf.line_plot({t: ([e["step"] for e in log], [e[t] for e in log]) for t in ["all", *types]},
                  xlabel="LM training steps", ylabel="held-out accuracy (%)",
                  title="vlm-tiny: accuracy per question type during training"))
test = ftrain.museum_qa("test", demo.test_scenes, cfg.image_size)
acc_long = ftrain.evaluate(guide, test)
print(f"vlm-tiny now: all {acc_long['all']:.1f} %  single-object {acc_long['single']:.1f} %  "
      f"relational {acc_long['relational']:.1f} %  (its log's last entry: {log[-1]['all']:.1f} %)")
print({t: round(acc_long[t], 1) for t in types})

# %% [markdown]
# The curves show binding as it happens: question types jump one at a time, and at different
# steps, instead of rising together. Types that need a lookup by one attribute and a readout of
# another (colour, shape) are the last and least reliable, and *when* each one appears depends on
# the seed: in our runs another seed learned colour and shape and missed others (Exercise 6).
# Ten minutes of one core is not enough for all of them; Chapter 6 starts from this model, and
# the `base` presets are sized for a GPU.
#
# The guide can now be asked about an exhibit it has never seen:

# %%
val = Museum("val", size=cfg.image_size)
exhibit, image = val[5], val.tensors(5, 1)[0]
for qa in [q for q in exhibit.qas if q.qtype in types]:
    said = guide.ask(image, qa.question)
    print(f"{qa.question:55s} -> {said:14s} ({'right' if said == qa.answer else 'wrong: ' + qa.answer})")

# %% [markdown]
# ## 5.8 Grounding and audit
#
# A guide should show where it looked. An answer cites patches as `[CITE:<v_k>]`, where `k` is the
# patch index in the image's grid (the convention of `vlmbook.data.cite`). Citations map back to
# pixel boxes, and because the museum knows which patches prove each answer, citation precision is
# measurable. Every answer can be logged as a JSON audit record.

# %%
# NBVAL_CHECK_OUTPUT
sample = Museum("val", size=cfg.image_size)[3]
qa = next(q for q in sample.qas if q.qtype == "colour")
truth = support_patches(sample.scene, qa, cfg.grid)
answer = cite(qa.answer, truth[:1] + [0])  # one right patch, one wrong one
text, cited = grounding.parse_citations(answer)
print(qa.question, "->", answer)
print("cited", cited, "true", truth, grounding.citation_scores(cited, sample.scene, qa, cfg.grid))
rec = grounding.audit_record("val/3", qa.question, answer, tok(answer, add_special_tokens=False)["input_ids"],
                             grid=cfg.grid, size=cfg.image_size, timestamp="2026-01-01T00:00:00+00:00")
print(grounding.audit_json(rec))

# %%
show(pf.citations_figure(sample.image, grounding.citation_boxes(cited, cfg.grid, cfg.image_size),
                         grounding.citation_boxes(truth, cfg.grid, cfg.image_size), title="cited (solid) vs true (dashed)"))

# %% [markdown]
# ## 5.9 What fusion costs
#
# Prefix fusion runs every layer over $M + L$ tokens: projections and MLP cost $\propto (M+L)d^2$
# and self-attention $\propto (M+L)^2 d$. Gated fusion runs the LM over the $L$ text tokens and adds
# cross-attention blocks costing $\propto (L + M)d^2 + LMd$ every $k$ layers — linear in $M$.

# %%
# NBVAL_CHECK_OUTPUT
Ms = [16, 64, 256, 1024]
d, layers, L = 128, 4, 32
for M in Ms:
    p, g = cost.prefix_flops(M, L, d, layers), cost.gated_flops(M, L, d, layers, every=2)
    print(f"M={M:5d}  prefix {p / 1e6:8.1f} MFLOP  gated {g / 1e6:7.1f} MFLOP  ratio {p / g:5.2f}")

# %%
Ms_t = [16, 64, 256]
meas = {r: [cost.measure_forward(r, M, L, every=2, repeats=3, batch=4) for M in Ms_t] for r in ("prefix", "gated")}
flops = {"prefix": [cost.prefix_flops(M, L, d, layers) for M in Ms_t],
         "gated": [cost.gated_flops(M, L, d, layers, every=2) for M in Ms_t]}
show(pf.cost_figure(Ms_t, {f"{r} (measured s)": meas[r] for r in meas}, ylabel="seconds per forward (batch 4)"))
for r in meas:
    print(r, "FLOP ratio 256/16:", round(flops[r][-1] / flops[r][0], 1), " time ratio:", round(meas[r][-1] / meas[r][0], 1))

# %% [markdown]
# ## Summary
#
# - A tokenizer and a language model from `transformers` parts: BPE trained on the museum, special
#   and visual tokens added, a Llama model from a config (or any local checkpoint).
# - Discrete fusion turns codes into words; continuous fusion scatters projected features into
#   placeholders with a strict count check; gated fusion reads images through tanh-gated
#   cross-attention that leaves the LM untouched at initialisation.
# - A frozen, warmed-up encoder lets training pay only for the projector and the LM; binding a
#   question's words to the right image token is what takes a small model thousands of steps.
# - Masks are just boolean matrices — causal, prefix-LM, interleaved, media — passed as 4-D masks.
# - Generation uses a KV cache, and a static image prefix can be cached once per exhibit.
# - Answers can cite patches, and citations are checked against the museum's ground truth.
# - Prefix fusion costs grow quadratically with image tokens $M$; gated fusion grows linearly.
#
# ## Exercises
#
# 1. Switch `VLMConfig.mask` to `"causal"` and retrain the continuous route. Which question types
#    lose accuracy, and why might a bidirectional image block help?
# 2. Replace the k-means quantizer by one with `sub=4` (48 numbers per patch). Does the discrete
#    route improve on shape questions?
# 3. Train with `gate_every=2` and compare the gated route's accuracy and cost.
# 4. Add citation targets (`vlmbook.data.cite`) to the answers and measure citation precision of
#    the generated answers with `grounding.citation_scores`.
# 5. Using `cost.prefix_flops` and `cost.gated_flops`, find the $M$ at which gated fusion becomes
#    cheaper than prefix fusion for $L = 32$, $d = 128$, four layers.
# 6. Rebuild `vlm-tiny` with another seed (`ftrain.build_vlm_tiny(1)`, about ten minutes of one
#    core) and plot its `training_log` beside the committed one. Which question types jump first,
#    and how far does the final accuracy move? Then try `train_scenes=20000`.
# 7. Replace the image features by perfect ones: one-hot colour, shape and size of each cell from
#    `ftrain.patch_labels`, plus a one-hot position, padded to `cfg.hidden` numbers. Set them as
#    `train.features` and swap `vlm.encoder` for a module that returns them, then train the
#    continuous route for 1,200 steps. Does it beat the learned features, and on which types?

# %%
nb.report_runtime()
