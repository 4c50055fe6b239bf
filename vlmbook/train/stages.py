"""The stages at toy scale on one ``VisionLanguageModel``: data, drivers and measurements (Chapter 6).

Each driver takes a :class:`~vlmbook.train.policy.VLMPolicy` and plain data, trains with the
losses of this package, and returns numbers measured on held-out exhibits: answer accuracy,
citation precision, reward-model pairwise accuracy, KL to the reference, sizes and latencies.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from collections import defaultdict
from typing import Sequence

import torch

from ..data.museum import Museum, QA, Scene, preference_pairs, questions, support_patches
from ..fusion.grounding import format_citation, parse_citations
from ..loop import LoopConfig
from ..util import median_seconds_each, step_generator
from .consistency import majority_vote, normalise_answer
from .losses import distill_loss, dpo_loss, pairwise_accuracy, reward_loss, sft_loss
from .policy import Example, VLMPolicy, freeze
from .ppo import (ValueHead, citation_precision_of, gae, group_relative_advantages, kl_penalty, masked_mean,
                  ppo_policy_loss, ppo_value_loss, shaped_rewards, shaped_score, whiten)
from .quant import linear_bytes, model_bytes, quantize_embeddings, quantize_linear_layers
from .reward import RewardModel
from .runner import fit_groups
from .sft import freeze_all_but, param_groups, vlm_lrs

EXCLUDED = ("plaque",)  # plaque digits are unreadable at 72 px (as in Chapter 5)


@dataclasses.dataclass
class Exhibits:
    """Images (n, 3, H, W), their scenes and captions, and the QA items ``(image index, QA)``."""

    images: torch.Tensor
    scenes: list[Scene]
    captions: list[str]
    items: list[tuple[int, QA]]


def exhibits(split: str, n_scenes: int, size: int, start: int = 0) -> Exhibits:
    """``n_scenes`` museum exhibits of ``split`` with every question except plaque ones."""
    if n_scenes < 1:
        raise ValueError(f"n_scenes must be >= 1, got {n_scenes}")
    m = Museum(split, size=size, length=start + n_scenes)
    scenes, caps, items = [], [], []
    for i in range(n_scenes):
        s = m[start + i]
        scenes.append(s.scene)
        caps.append(s.caption)
        items += [(i, qa) for qa in s.qas if qa.qtype not in EXCLUDED]
    return Exhibits(m.tensors(start, n_scenes), scenes, caps, items)


# -- evaluation -------------------------------------------------------------------------------
@torch.no_grad()
def answer_all(policy: VLMPolicy, ex: Exhibits, items: Sequence[tuple[int, QA]] | None = None,
               do_sample: bool = False, temperature: float = 1.0, generator: torch.Generator | None = None,
               max_new_tokens: int = 16) -> list[str]:
    """One generated answer text per item, batched by question length (the model's generate needs one)."""
    items = ex.items if items is None else items
    groups: dict[int, list[int]] = defaultdict(list)
    for k, (_, qa) in enumerate(items):
        groups[len(policy.encode(qa.question))].append(k)
    out: list[str] = [""] * len(items)
    policy.module.eval()
    for ks in groups.values():
        for s in range(0, len(ks), 128):
            chunk = ks[s:s + 128]
            imgs = ex.images[torch.tensor([items[k][0] for k in chunk])]
            texts = policy.sample(imgs, [items[k][1].question for k in chunk], max_new_tokens, do_sample,
                                  temperature, generator)
            for k, t in zip(chunk, texts):
                out[k] = t
    return out


def score_answers(answers: Sequence[str], ex: Exhibits, grid: int, items: Sequence[tuple[int, QA]] | None = None) -> dict:
    """Answer texts -> accuracy (%), citation precision (%) and the share of answers that cite (%), by type too.

    Citation precision here is the reward's (:func:`~vlmbook.train.ppo.citation_precision_of`): an
    answer that cites nothing scores 0 when its evidence exists, 1 when there is none.
    """
    items = ex.items if items is None else items
    rows = defaultdict(list)
    for a, (i, qa) in zip(answers, items):
        text, cited = parse_citations(a)
        ok = normalise_answer(text) == qa.answer.lower()
        truth = support_patches(ex.scenes[i], qa, grid)
        prec = citation_precision_of([c for c in cited if c < grid * grid], truth)
        for key in ("all", qa.qtype):
            rows[key].append((ok, prec, bool(cited)))
    return {k: {"accuracy": _pct([r[0] for r in v]), "citation_precision": _pct([r[1] for r in v]),
                "cites": _pct([r[2] for r in v]), "n": len(v)} for k, v in rows.items()}


def evaluate(policy: VLMPolicy, ex: Exhibits, **kw) -> dict:
    """Greedy answers to every held-out question, scored (see :func:`score_answers`)."""
    return score_answers(answer_all(policy, ex, **kw), ex, policy.module.config.grid)


def _pct(xs) -> float:
    return round(100.0 * sum(float(x) for x in xs) / max(len(xs), 1), 2)


# -- stage 0 and 1 ------------------------------------------------------------------------------
def sft_examples(policy: VLMPolicy, ex: Exhibits, cite: bool = True, citation_noise: float = 0.0,
                 seed: int = 0) -> list[Example]:
    """Chapter 5's answers as SFT examples; ``citation_noise`` drops or swaps citations, as imperfect annotators do."""
    g = torch.Generator().manual_seed(seed)
    grid = policy.module.config.grid
    out = []
    for i, qa in ex.items:
        patches = support_patches(ex.scenes[i], qa, grid) if cite else []
        if patches and float(torch.rand(1, generator=g)) < citation_noise:
            patches = [] if float(torch.rand(1, generator=g)) < 0.5 else \
                sorted(torch.randperm(grid * grid, generator=g)[:len(patches)].tolist())
        ans = f"{format_citation(patches)} {qa.answer}" if patches else qa.answer
        out.append(policy.response(qa.question, ans, i))
    return out


def train_sft(policy: VLMPolicy, examples: Sequence[Example], images: torch.Tensor, steps: int, batch_size: int = 32,
              lrs: dict[str, float] | None = None, seed: int = 0) -> list[dict]:
    """Supervised fine-tuning on ``examples`` (answer tokens only) with per-group learning rates. §6.2."""
    vlm = policy.module
    lrs = lrs or vlm_lrs(vlm, 1e-3)
    groups = param_groups(vlm, lrs)

    def batch(step):
        g = step_generator(seed, step)
        return policy.collate([examples[k] for k in torch.randint(len(examples), (batch_size,), generator=g).tolist()],
                              images)

    def loss_fn(model, b, step):
        logits, labels = policy.logits(b)
        return sft_loss(logits, labels)

    return fit_groups(vlm, loss_fn, batch, LoopConfig(steps=steps, lr=1e-3, seed=seed, log_every=max(1, steps // 10)),
                      groups, desc="sft")


def align_projector(policy: VLMPolicy, ex: Exhibits, steps: int, batch_size: int = 32, lr: float = 1e-3,
                    seed: int = 0) -> list[dict]:
    """Stage 0 (LLaVA's first stage): LM and encoder frozen, the projector learns to caption. §6.1."""
    vlm = policy.module
    freeze_all_but(vlm, ["projector"])
    examples = [policy.response("Describe the exhibit.", c, i) for i, c in enumerate(ex.captions)]
    return train_sft(policy, examples, ex.images, steps, batch_size, {**vlm_lrs(vlm, 0.0), "projector": lr}, seed)


# -- stage 2 ------------------------------------------------------------------------------------
def preference_data(policy: VLMPolicy, ex: Exhibits, kinds: Sequence[str] | None = None) -> list[tuple]:
    """(chosen, rejected, kind) example pairs from the museum's preference pairs of every item."""
    grid = policy.module.config.grid
    out = []
    for i, qa in ex.items:
        for p in preference_pairs(ex.scenes[i], qa, grid):
            if kinds is None or p.kind in kinds:
                c, r = policy.pair(p.question, patch_citations(p.chosen), patch_citations(p.rejected), i)
                out.append((c, r, p.kind))
    if not out:
        raise ValueError("no preference pairs of the requested kinds")
    return out


_LEGACY_CITE = re.compile(r"\[CITE:\s*<v_(\d+)>\s*\]")


def patch_citations(text: str) -> str:
    """``'red [CITE:<v_3>] [CITE:<v_4>]'`` (the museum's preference texts) -> ``'red [CITE:<p_3>] [CITE:<p_4>]'``.

    :func:`vlmbook.data.museum.cite` still writes a cited patch as ``<v_k>``; Chapter 5 names
    patches ``<p_k>`` (``<v_k>`` is a codebook word), so the pairs are rewritten before tokenising.
    """
    return _LEGACY_CITE.sub(lambda m: f"[CITE:<p_{m.group(1)}>]", text)


def _pair_batch(policy, pairs, idx, images):
    return policy.collate([pairs[k][0] for k in idx] + [pairs[k][1] for k in idx], images)


def train_reward_model(policy: VLMPolicy, pairs: list[tuple], images: torch.Tensor, steps: int,
                       batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
                       logprob_prior: bool = False) -> tuple[RewardModel, list[dict]]:
    """Bradley–Terry reward model on (chosen, rejected) pairs; the VLM body trains with the head
    (and, with ``logprob_prior``, the weight of the body's answer log-probability). §6.3."""
    rm = RewardModel(policy, logprob_prior=logprob_prior)
    extra = ["logprob_weight"] if logprob_prior else []
    freeze_all_but(rm, ["head", *extra, "body.lm", "body.projector"])

    def batch(step):
        g = step_generator(seed, step)
        return _pair_batch(policy, pairs, torch.randint(len(pairs), (batch_size,), generator=g).tolist(), images)

    def loss_fn(model, b, step):
        s = model(b)
        B = s.shape[0] // 2
        return reward_loss(s[:B], s[B:]), {"acc": pairwise_accuracy(s[:B].detach(), s[B:].detach())}

    groups = param_groups(rm, {"head": lr, **{k: lr for k in extra}, "body.lm": lr, "body.projector": lr,
                               "body.encoder": 0.0})
    hist = fit_groups(rm, loss_fn, batch, LoopConfig(steps=steps, lr=lr, seed=seed, log_every=max(1, steps // 10)),
                      groups, desc="reward")
    return rm, hist


@torch.no_grad()
def reward_accuracy(rm: RewardModel, pairs: list[tuple], images: torch.Tensor, batch_size: int = 64) -> dict:
    """Held-out pairwise accuracy (%) of a reward model, overall and per kind of flaw."""
    rm.eval()
    hits = defaultdict(list)
    for s in range(0, len(pairs), batch_size):
        idx = list(range(s, min(s + batch_size, len(pairs))))
        sc = rm(_pair_batch(rm.policy, pairs, idx, images))
        B = len(idx)
        for k, ok in zip(idx, (sc[:B] > sc[B:]).tolist()):
            hits["all"].append(ok)
            hits[pairs[k][2]].append(ok)
    return {k: _pct(v) for k, v in hits.items()}


def train_dpo(policy: VLMPolicy, ref: VLMPolicy, pairs: list[tuple], images: torch.Tensor, steps: int,
              beta: float = 0.1, batch_size: int = 16, lr: float = 3e-4, seed: int = 0,
              nll_weight: float = 0.0) -> list[dict]:
    """DPO against a frozen reference (same vocabulary) on (chosen, rejected) pairs. §6.3.

    ``nll_weight`` adds that weight times the chosen answers' per-token negative log-likelihood (the
    RPO form of Pang et al., 2024): DPO only widens the margin between chosen and rejected, and
    can lower both; the extra term keeps the chosen answers likely.
    """
    if nll_weight < 0:
        raise ValueError(f"nll_weight must be >= 0, got {nll_weight}")
    policy.check_compatible(ref)
    freeze(ref.module)
    vlm = policy.module
    groups = param_groups(vlm, vlm_lrs(vlm, lr))

    def batch(step):
        g = step_generator(seed, step)
        return _pair_batch(policy, pairs, torch.randint(len(pairs), (batch_size,), generator=g).tolist(), images)

    def loss_fn(model, b, step):
        tok, mask = policy.token_logprobs(b)
        lp = (tok * mask).sum(1)
        with torch.no_grad():
            rl = ref.sequence_logprobs(b)
        B = lp.shape[0] // 2
        margin = ((lp[:B] - rl[:B]) - (lp[B:] - rl[B:])).detach()
        loss = dpo_loss(lp[:B], lp[B:], rl[:B], rl[B:], beta)
        if nll_weight:
            loss = loss - nll_weight * lp[:B].sum() / mask[:B].sum()
        return loss, {"reward_acc": float((margin > 0).float().mean())}

    return fit_groups(vlm, loss_fn, batch, LoopConfig(steps=steps, lr=lr, seed=seed, log_every=max(1, steps // 10)),
                      groups, desc="dpo")


@torch.no_grad()
def kl_to_reference(policy: VLMPolicy, ref: VLMPolicy, examples: Sequence[Example], images: torch.Tensor) -> float:
    """Mean per-token KL(π ‖ π_ref) over the answer positions of ``examples`` (teacher-forced)."""
    policy.check_compatible(ref)
    b = policy.collate(list(examples), images)
    lp, labels = policy.logits(b)
    lr_, _ = ref.logits(b)
    m = labels != -100
    p = lp.float().log_softmax(-1)
    q = lr_.float().log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1)[m].mean())


# -- stage 3 ------------------------------------------------------------------------------------
@torch.no_grad()
def self_consistency_accuracy(policy: VLMPolicy, ex: Exhibits, ks: Sequence[int] = (1, 5, 9),
                              temperature: float = 0.7, seed: int = 0) -> dict:
    """Accuracy (%) of the majority vote over K sampled answers, for each K (the first K of max(ks) draws). §6.4."""
    g = torch.Generator().manual_seed(seed)
    draws = [answer_all(policy, ex, do_sample=True, temperature=temperature, generator=g) for _ in range(max(ks))]
    out = {}
    for k in ks:
        votes = [majority_vote([draws[j][n] for j in range(k)])[0] for n in range(len(ex.items))]
        out[k] = score_answers(votes, ex, policy.module.config.grid)["all"]["accuracy"]
    return out


# -- stage 4 ------------------------------------------------------------------------------------
def int8_language_model(policy: VLMPolicy, embeddings: bool = True) -> tuple[VLMPolicy, dict]:
    """A copy whose LM linear layers (and, with ``embeddings``, its embedding table and the head tied to
    it) are int8 per row; returns it and the sizes (bytes). §6.5."""
    vlm = copy.deepcopy(policy.module)
    before = linear_bytes(vlm.lm)
    whole_before = model_bytes(vlm.lm)
    # the tied head is skipped by quantize_linear_layers; quantize_embeddings gives it the int8 table
    vlm.lm, names = quantize_linear_layers(vlm.lm, inplace=True)
    orig = dict(policy.module.lm.named_modules())
    q_before = sum(model_bytes(orig[n]) for n in names)
    q_after = sum(model_bytes(vlm.lm.get_submodule(n)) for n in names)
    emb_names: list[str] = []
    if embeddings:
        _, emb_names = quantize_embeddings(vlm.lm)
    return VLMPolicy(vlm), {"lm_linear_bytes_fp32": before, "lm_linear_bytes_int8": linear_bytes(vlm.lm),
                            "quantised_bytes_fp32": q_before, "quantised_bytes_int8": q_after,
                            "lm_bytes_fp32": whole_before, "lm_bytes_int8": model_bytes(vlm.lm),
                            "quantised_layers": len(names), "quantised_embeddings": emb_names}


@torch.no_grad()
def kv_cache_compression(policy: VLMPolicy, ex: Exhibits, kinds: Sequence[str] = ("fp32", "int8", "fp8"),
                         repeats: int = 5) -> dict:
    """Per KV-cache kind: held-out accuracy and citation precision, the bytes the cache holds after the
    first question's prompt (and the same keys and values in fp32), and the median time to generate
    its answer (ms). §6.5."""
    from .kvcache import cache_bytes, kv_cache

    vlm = policy.module
    i, qa = ex.items[0]
    img = ex.images[i:i + 1].to(policy.device)
    q = torch.tensor([policy.encode(qa.question) + [vlm.ids["assistant"]]])
    out: dict = {}
    fns = {}
    for kind in kinds:
        with kv_cache(vlm, kind):
            scores = evaluate(policy, ex)["all"]
            cache = vlm.text.new_cache()
        prompt = vlm.question_prompt(q)
        embeds, media, lm_ids = vlm.embed(prompt, img)
        _, cache = vlm._run_lm(embeds, media, lm_ids, cache)
        out[kind] = {"accuracy": scores["accuracy"], "citation_precision": scores["citation_precision"],
                     **cache_bytes(cache)}

        def gen(kind=kind):
            with kv_cache(vlm, kind):
                vlm.generate(img, q, max_new_tokens=16)
        fns[kind] = gen
    med = median_seconds_each(fns, repeats, warmup=1)  # interleaved: every kind sees the same load
    for kind in kinds:
        out[kind]["answer_ms"] = round(1000 * med[kind], 3)
        out[kind]["ratio"] = round(out[kind]["fp32_bytes"] / out[kind]["stored_bytes"], 2)
    out["prompt_tokens"] = int(vlm.question_prompt(q).shape[1])
    return out


@torch.no_grad()
def prompt_cache_ttft(policy: VLMPolicy, image: torch.Tensor, question: str, repeats: int = 5) -> dict:
    """Time to first token (ms, median) for a repeated exhibit, without and with what can be cached. §6.5.

    An image-first model (mask other than ``full_prefix``) keeps the KV cache of its image prefix
    (``cache="kv-prefix"``). In a question-first model the image tokens follow the question, so
    their keys and values depend on it; what stays the same is the image encoder's output, which
    is cached instead (``cache="image-features"``). Models without an encoder cache nothing
    (``ttft_cached_ms`` is ``None``).
    """
    vlm = policy.module
    q = torch.tensor([policy.encode(question) + [vlm.ids["assistant"]]])
    img = image[None].to(policy.device)
    fns = {"cold": lambda: vlm.generate(img, q, max_new_tokens=1)}
    if vlm.config.layout == "image_first" and vlm.config.mask != "full_prefix":
        kind, prefix = "kv-prefix", vlm.cache_prefix(img)
        fns["warm"] = lambda: vlm.generate(img, q, max_new_tokens=1, prefix=prefix)
    elif vlm.encoder is not None and vlm.config.route != "discrete":
        kind, feats = "image-features", vlm.encoder(img)
        fns["warm"] = lambda: vlm.generate(None, q, max_new_tokens=1, features=feats)
    else:
        kind = None
    med = median_seconds_each(fns, repeats, warmup=1)  # interleaved, so both see the same machine load
    return {"ttft_ms": round(1000 * med["cold"], 3),
            "ttft_cached_ms": round(1000 * med["warm"], 3) if "warm" in med else None,
            "cache": kind, "cacheable": kind is not None, "repeats": repeats}


# -- stage 2, online: PPO and the group-relative variant ----------------------------------------------
def _answer_rewards(policy: VLMPolicy, ex: Exhibits, items: Sequence[tuple[int, QA]], answers: Sequence[str],
                    precision_weight: float) -> torch.Tensor:
    grid = policy.module.config.grid
    out = []
    for (i, qa), a in zip(items, answers):
        text, cited = parse_citations(a)
        ok = normalise_answer(text) == qa.answer.lower()
        out.append(shaped_score(ok, [c for c in cited if c < grid * grid], support_patches(ex.scenes[i], qa, grid),
                                precision_weight))
    return torch.tensor(out)


def ppo_step(policy: VLMPolicy, ref: VLMPolicy, value_head: ValueHead, opt: torch.optim.Optimizer, ex: Exhibits,
             items: Sequence[tuple[int, QA]], kl_ctl, generator: torch.Generator, epochs: int = 2,
             precision_weight: float = 0.5, vf_coef: float = 0.5, temperature: float = 1.0) -> dict:
    """One PPO iteration: sample answers, score them, KL-shape, GAE, ``epochs`` clipped updates. §6.3."""
    answers = answer_all(policy, ex, items, do_sample=True, temperature=temperature, generator=generator)
    score = _answer_rewards(policy, ex, items, answers, precision_weight)
    batch = policy.collate([policy.response(qa.question, a, i) for (i, qa), a in zip(items, answers)], ex.images)
    with torch.no_grad():
        old_lp, mask = policy.token_logprobs(batch)
        ref_lp, _ = ref.token_logprobs(batch)
        old_v = value_head(policy.hidden(batch)[:, :-1])
        rewards, kl = shaped_rewards(score, old_lp, ref_lp, mask, kl_ctl.value)
        adv, ret = gae(rewards, old_v, mask, gamma=1.0, lam=0.95)
        adv = whiten(adv, mask)
    policy.module.train()
    stats = {}
    for _ in range(epochs):
        lp, _ = policy.token_logprobs(batch)
        v = value_head(policy.hidden(batch)[:, :-1])
        pl, stats = ppo_policy_loss(lp, old_lp, adv, mask)
        loss = pl + vf_coef * ppo_value_loss(v, old_v, ret, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    policy.module.eval()
    seq_kl = float((kl * mask).sum(1).mean())
    kl_ctl.update(seq_kl, len(items))
    return {"score": float(score.mean()), "kl": seq_kl, "beta": kl_ctl.value, **stats}


def train_ppo(policy: VLMPolicy, ref: VLMPolicy, ex: Exhibits, steps: int, batch_items: int = 32,
              lr: float = 1e-4, seed: int = 0, kl_ctl=None, precision_weight: float = 0.5,
              temperature: float = 1.0, progress: bool = True) -> list[dict]:
    """``steps`` PPO iterations (:func:`ppo_step`) on questions drawn from ``ex``, with a fresh value head
    and an adaptive KL controller (target 1 nat per answer) unless ``kl_ctl`` is given. §6.3."""
    from tqdm.auto import tqdm

    from .ppo import AdaptiveKLController

    if steps < 1 or batch_items < 1:
        raise ValueError(f"steps and batch_items must be >= 1, got {steps}, {batch_items}")
    policy.check_compatible(ref)
    freeze(ref.module)
    kl_ctl = kl_ctl if kl_ctl is not None else AdaptiveKLController(0.1, target=1.0, horizon=steps * batch_items)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = ValueHead(policy.hidden_size).to(policy.device)
    params = [p for p in policy.module.lm.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    log = []
    bar = tqdm(range(steps), desc="ppo", disable=not progress)
    for step in bar:
        g = step_generator(seed, step)
        items = [ex.items[k] for k in torch.randint(len(ex.items), (batch_items,), generator=g).tolist()]
        row = {"step": step, **ppo_step(policy, ref, head, opt, ex, items, kl_ctl, gen,
                                        precision_weight=precision_weight, temperature=temperature)}
        bar.set_postfix(score=f"{row['score']:.3f}", kl=f"{row['kl']:.3f}")
        log.append(row)
    return log


def grpo_step(policy: VLMPolicy, ref: VLMPolicy, opt: torch.optim.Optimizer, ex: Exhibits,
              items: Sequence[tuple[int, QA]], generator: torch.Generator, group: int = 4, beta: float = 0.04,
              precision_weight: float = 0.5, temperature: float = 1.0) -> dict:
    """One group-relative step (GRPO-style): G answers per question, advantages within the group, k3 KL. §6.3."""
    rep = [it for it in items for _ in range(group)]
    answers = answer_all(policy, ex, rep, do_sample=True, temperature=temperature, generator=generator)
    score = _answer_rewards(policy, ex, rep, answers, precision_weight)
    adv = group_relative_advantages(score.view(len(items), group)).reshape(-1)
    batch = policy.collate([policy.response(qa.question, a, i) for (i, qa), a in zip(rep, answers)], ex.images)
    with torch.no_grad():
        old_lp, mask = policy.token_logprobs(batch)
        ref_lp, _ = ref.token_logprobs(batch)
    policy.module.train()
    lp, _ = policy.token_logprobs(batch)
    pl, stats = ppo_policy_loss(lp, old_lp, adv[:, None].expand_as(lp), mask)
    kl = masked_mean(kl_penalty(lp, ref_lp, "k3"), mask)
    loss = pl + beta * kl
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    policy.module.eval()
    return {"score": float(score.mean()), "kl": float(kl.detach()), **stats}


# -- stage 3: distillation -------------------------------------------------------------------------
def half_size_student(teacher: VLMPolicy, seed: int = 0, from_teacher: bool = True) -> VLMPolicy:
    """A VLM with half the teacher's LM layers (same tokenizer, so the logits are comparable). §6.4.

    The image side (encoder, compressor, projector or quantizer, cell embeddings) is the teacher's:
    it is not what distillation studies. With ``from_teacher`` the language model starts from the
    teacher's too, DistilBERT-style: embeddings, final norm and head copied, and student layer i
    from teacher layer 2i; otherwise it starts from a fresh initialisation.
    """
    from ..fusion.model import VisionLanguageModel

    cfg = teacher.module.config.replace(layers=max(1, teacher.module.config.layers // 2), seed=seed)
    student = VLMPolicy(VisionLanguageModel(cfg).eval())
    teacher.check_compatible(student)
    t_state = teacher.module.state_dict()
    own = student.module.state_dict()
    copied = {}
    for key, value in own.items():
        if key.startswith("lm."):
            if not from_teacher:
                continue
            # "...layers.<i>." (Llama, Qwen, OPT) or "...h.<i>." (GPT-2): take the teacher's layer 2i
            src = _LAYER.sub(lambda m: f"{m.group(1)}{2 * int(m.group(2))}.", key, count=1)
        else:
            src = key
        if src in t_state and t_state[src].shape == value.shape:
            copied[key] = t_state[src]
    missing = [k for k in own if not k.startswith("lm.") and k not in copied]
    if missing:
        raise ValueError(f"the student's image side has parts the teacher lacks: {missing[:4]}")
    student.module.load_state_dict(copied, strict=False)
    return student


_LAYER = re.compile(r"(\.(?:layers|h)\.)(\d+)\.")


def distill(student: VLMPolicy, teacher: VLMPolicy, examples: Sequence[Example], images: torch.Tensor, steps: int,
            temperature: float = 2.0, alpha: float = 0.5, batch_size: int = 32, lr: float = 1e-3,
            seed: int = 0) -> list[dict]:
    """Train ``student`` on ``alpha``·T²·KL(teacher‖student) + (1−alpha)·CE at answer positions. §6.4."""
    teacher.check_compatible(student)
    freeze(teacher.module)
    vlm = student.module
    groups = param_groups(vlm, vlm_lrs(vlm, lr))

    def batch(step):
        g = step_generator(seed, step)
        return student.collate([examples[k] for k in torch.randint(len(examples), (batch_size,), generator=g).tolist()],
                               images)

    def loss_fn(model, b, step):
        logits, labels = student.logits(b)
        with torch.no_grad():
            t_logits, _ = teacher.logits(b)
        m = labels != -100
        kd = distill_loss(logits, t_logits, temperature, m)
        return alpha * kd + (1 - alpha) * sft_loss(logits, labels), {"kd": float(kd.detach())}

    return fit_groups(vlm, loss_fn, batch, LoopConfig(steps=steps, lr=lr, seed=seed, log_every=max(1, steps // 10)),
                      groups, desc="distill")
