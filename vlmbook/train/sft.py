"""Stages 0 and 1: alignment and instruction tuning (Chapter 6 §6.1–6.2).

* a chat template with roles, rendered to ids *and* labels: only assistant tokens are learned
  (label −100 elsewhere);
* chain-of-thought answers written from a scene's ground truth, ``[THOUGHT] … [ANSWER] …``, with
  the thought either learned or only shown (its labels −100);
* a curriculum that starts with the easiest questions and widens the pool as training proceeds;
* LoRA through ``peft`` on the language model only, and learning rates per parameter group.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Sequence

import torch
from torch import nn

from ..data.museum import LOCATIONS, QA, RELATIONAL_TYPES, Scene, cite, support_patches
from ..util import step_generator
from .losses import IGNORE

THOUGHT, ANSWER = "[THOUGHT]", "[ANSWER]"
ROLES = ("system", "user", "assistant")


@dataclasses.dataclass(frozen=True)
class Turn:
    """One message: ``role`` and its content as segments ``(ids, learn)``; ``learn`` only counts for the assistant."""

    role: str
    segments: tuple[tuple[tuple[int, ...], bool], ...]

    @classmethod
    def of(cls, role: str, ids: Sequence[int], learn: bool = True) -> "Turn":
        return cls(role, ((tuple(int(i) for i in ids), learn),))


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """Role marker ids and the end-of-turn id: ``<role> content <end>`` for each turn. §6.2.

    ``closes`` names roles whose turn ends with ``end_id`` (in the museum layout only the assistant's
    does: ``<|user|> … <|assistant|> answer <|end|>``). The end token of an assistant turn is learned,
    so the model learns to stop.
    """

    role_ids: dict[str, int]
    end_id: int
    closes: tuple[str, ...] = ("assistant",)

    def render(self, turns: Sequence[Turn]) -> tuple[list[int], list[int]]:
        """Turns -> ``(ids, labels)``, labels −100 except on learned assistant tokens and their end token."""
        if not turns:
            raise ValueError("a chat needs at least one turn")
        ids: list[int] = []
        labels: list[int] = []
        for t in turns:
            if t.role not in self.role_ids:
                raise ValueError(f"unknown role {t.role!r}; this template knows {sorted(self.role_ids)}")
            ids.append(self.role_ids[t.role])
            labels.append(IGNORE)
            for seg, learn in t.segments:
                ids += seg
                labels += list(seg) if (learn and t.role == "assistant") else [IGNORE] * len(seg)
            if t.role in self.closes:
                ids.append(self.end_id)
                labels.append(self.end_id if t.role == "assistant" else IGNORE)
        if all(lab == IGNORE for lab in labels):
            raise ValueError("the chat has no learned (assistant) token")
        return ids, labels


def _where(scene: Scene, i: int) -> str:
    o = scene.objects[i]
    return f"{o.size} {o.name} at {LOCATIONS[o.cell]}"


def chain_of_thought(scene: Scene, qa: QA, grid: int, cite_patches: bool = True) -> tuple[str, str]:
    """A scene's ground truth -> ``(thought, answer)`` texts for one question. §6.2.

    The thought names each object the answer rests on, its size and where it stands — what a
    careful guide would check before answering; the answer carries the supporting citations.
    """
    facts = [_where(scene, i) for i in qa.objects]
    if not facts:
        thought = "no such object in the exhibit"
    elif qa.qtype == "count":
        thought = f"{len(facts)} found: " + "; ".join(facts)
    else:
        thought = "; ".join(facts)
    answer = cite(qa.answer, support_patches(scene, qa, grid)) if cite_patches else qa.answer
    return thought, answer


def cot_text(thought: str, answer: str) -> tuple[str, str]:
    """``(thought, answer)`` -> the two assistant segments ``' [THOUGHT] …'`` and ``' [ANSWER] …'``."""
    return f" {THOUGHT} {thought}", f" {ANSWER} {answer}"


def difficulty(scene: Scene, qa: QA) -> float:
    """A question's difficulty for the curriculum: objects in the scene, +2 for relational questions. §6.2."""
    return len(scene.objects) + (2.0 if qa.qtype in RELATIONAL_TYPES else 0.0)


class Curriculum:
    """Step -> indices of a batch drawn from the easiest fraction of the data, widening to all of it. §6.2.

    At step ``s`` the pool is the easiest ``start + (1 − start) · min(1, s / ramp)`` of the items
    (ties in difficulty broken by index); sampling is a pure function of ``(seed, step)``, so a
    resumed run draws the same batches (the ``loop.fit`` contract).
    """

    def __init__(self, difficulties: Sequence[float], steps: int, start: float = 0.3, ramp: float = 0.5, seed: int = 0):
        if len(difficulties) == 0:
            raise ValueError("a curriculum needs at least one item")
        if not 0 < start <= 1 or not 0 < ramp <= 1 or steps < 1:
            raise ValueError(f"need 0 < start <= 1, 0 < ramp <= 1, steps >= 1; got {start}, {ramp}, {steps}")
        self.order = sorted(range(len(difficulties)), key=lambda i: (difficulties[i], i))
        self.steps, self.start, self.ramp, self.seed = steps, start, ramp, seed

    def pool_size(self, step: int) -> int:
        frac = self.start + (1 - self.start) * min(1.0, step / (self.ramp * self.steps))
        return max(1, min(len(self.order), round(frac * len(self.order))))

    def indices(self, step: int, batch_size: int) -> list[int]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        g = step_generator(self.seed, step)
        pick = torch.randint(self.pool_size(step), (batch_size,), generator=g).tolist()
        return [self.order[i] for i in pick]


# -- which parameters train -------------------------------------------------------------
def _owners(model: nn.Module) -> set[str]:
    """Names that can own parameters: submodules and parameters themselves (e.g. a VLM's ``cell_embed``)."""
    return {n for n, _ in model.named_modules()} | {n for n, _ in model.named_parameters()}


def vlm_lrs(vlm: nn.Module, lr: float, encoder_lr: float = 0.0) -> dict[str, float]:
    """Per-group learning rates for every top-level part of a VLM: the vision encoder at ``encoder_lr``, the rest at ``lr``. §6.2.

    Built from the model's own children and top-level parameters, so that a part a newer model adds
    (Chapter 5's learned cell embeddings, a token compressor) trains instead of raising.
    """
    names = [n for n, _ in vlm.named_children()] + [n for n, _ in vlm.named_parameters(recurse=False)]
    return {n: (encoder_lr if n == "encoder" else lr) for n in names}


def freeze_all_but(model: nn.Module, trainable: Sequence[str]) -> list[str]:
    """Freeze every parameter except those under the named submodules; returns the trainable names. §6.1."""
    present = _owners(model)
    missing = [t for t in trainable if t not in present]
    if missing:
        raise ValueError(f"no submodule named {missing}; have e.g. {sorted(n for n in present if '.' not in n and n)}")
    names = []
    for n, p in model.named_parameters():
        p.requires_grad_(any(n == t or n.startswith(t + ".") for t in trainable))
        if p.requires_grad:
            names.append(n)
    if not names:
        raise ValueError(f"the submodules {list(trainable)} hold no parameters")
    return names


def param_groups(model: nn.Module, lrs: dict[str, float], weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups, one per named submodule prefix with its learning rate. §6.2.

    A prefix with lr 0 is frozen (``requires_grad=False``) rather than given a zero-lr group; a
    trainable parameter under no prefix is an error (it would silently not train).
    """
    if not lrs:
        raise ValueError("lrs must name at least one submodule")
    present = _owners(model)
    missing = [k for k in lrs if k not in present]
    if missing:
        raise ValueError(f"no submodule named {missing}")
    groups: dict[str, list[nn.Parameter]] = {k: [] for k in lrs}
    for n, p in model.named_parameters():
        owner = max((k for k in lrs if n == k or n.startswith(k + ".")), key=len, default=None)
        if owner is None:
            if p.requires_grad:
                raise ValueError(f"trainable parameter {n} is under none of {sorted(lrs)}")
            continue
        if lrs[owner] == 0:
            p.requires_grad_(False)
        elif p.requires_grad:
            groups[owner].append(p)
    out = [{"name": k, "params": ps, "lr": lrs[k], "weight_decay": weight_decay} for k, ps in groups.items() if ps]
    if not out:
        raise ValueError("no trainable parameters in any group")
    return out


# -- LoRA -------------------------------------------------------------------------------
@dataclasses.dataclass
class LoRAHandle:
    """The ``peft`` model wrapping the language model *in place*: the VLM keeps calling its own ``lm``.

    ``peft.get_peft_model`` injects the low-rank layers into the existing modules, so the VLM's
    forward sees them without being rewritten; ``peft_model`` saves, reloads and merges them.
    """

    peft_model: nn.Module

    def save(self, path) -> None:
        """Write the adapter (``adapter_config.json`` + ``adapter_model.safetensors``)."""
        self.peft_model.save_pretrained(str(path), safe_serialization=True)

    def merge(self) -> nn.Module:
        """Fold ``B·A·α/r`` into the base weights and drop the adapter; returns the plain LM."""
        return self.peft_model.merge_and_unload()


@contextlib.contextmanager
def _quiet_peft():
    """peft itself reads transformers' deprecated ``is_gradient_checkpointing``; that is peft's call, not ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)
        yield


def _check_targets(lm: nn.Module, targets: Sequence[str]) -> None:
    leaf_names = {n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in targets if t not in leaf_names]
    if missing:
        raise ValueError(f"LoRA targets {missing} are not linear layers of the language model; "
                         f"its linear layers are {sorted(leaf_names)}")


def apply_lora(lm: nn.Module, r: int = 8, alpha: int = 16, targets: Sequence[str] = ("q_proj", "v_proj"),
               dropout: float = 0.0, seed: int = 0) -> LoRAHandle:
    """Add LoRA adapters (Hu et al., 2022) to the language model ``lm`` in place, via ``peft``. §6.2.

    Pass the VLM's ``lm`` only — never the vision tower. Everything but the adapters is frozen.
    """
    from peft import LoraConfig, get_peft_model

    if r < 1 or alpha <= 0:
        raise ValueError(f"need r >= 1 and alpha > 0, got r={r}, alpha={alpha}")
    _check_targets(lm, targets)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout, bias="none")
    with torch.random.fork_rng(devices=[]), _quiet_peft():
        torch.manual_seed(seed)
        peft_model = get_peft_model(lm, cfg)
    return LoRAHandle(peft_model)


def load_lora(lm: nn.Module, path) -> LoRAHandle:
    """Re-attach an adapter saved by :meth:`LoRAHandle.save` to a fresh copy of the same LM, in place."""
    from peft import PeftModel

    with _quiet_peft():
        return LoRAHandle(PeftModel.from_pretrained(lm, str(path)))


def trainable_fraction(model: nn.Module) -> float:
    """Share of parameters that will receive gradients (LoRA makes this small)."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / max(total, 1)


__all__ = ["THOUGHT", "ANSWER", "ROLES", "Turn", "ChatTemplate", "chain_of_thought", "cot_text", "difficulty",
           "Curriculum", "freeze_all_but", "param_groups", "vlm_lrs", "LoRAHandle", "apply_lora", "load_lora",
           "trainable_fraction"]

