"""The one adapter between Chapter 6's stages and Chapter 5's ``VisionLanguageModel`` (§6.0).

Every stage works on tensors — per-sequence log-probabilities, aligned logits and labels, last
hidden states, sampled answers with their log-probabilities. :class:`VLMPolicy` produces them
from a :class:`vlmbook.fusion.VisionLanguageModel`; when the model's API changes, only this
file changes. Sequences are right-padded, which a causal (or prefix-image) mask makes harmless:
no real token attends to a padding token after it.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from ..fusion.grounding import parse_citations
from ..fusion.model import VisionLanguageModel
from .losses import IGNORE, sequence_logprobs, token_logprobs
from .sft import ChatTemplate, LoRAHandle, Turn, apply_lora


@dataclasses.dataclass
class Example:
    """One tokenised sequence: ids, labels (−100 where nothing is learned) and its image's index."""

    ids: list[int]
    labels: list[int]
    image: int


class VLMPolicy:
    """Wraps a ``VisionLanguageModel`` (``.module``) and exposes what the training stages consume."""

    def __init__(self, vlm: VisionLanguageModel):
        if not isinstance(vlm, VisionLanguageModel):
            raise ValueError(f"VLMPolicy wraps a VisionLanguageModel, got {type(vlm).__name__}")
        self.module = vlm
        i = vlm.ids
        self.template = ChatTemplate({"user": i["user"], "assistant": i["assistant"]}, i["end"])
        self.pad_id, self.end_id = i["pad"], i["end"]

    # -- facts about the model --------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Width of the logits (the LM's embedding rows, ≥ the tokenizer's length)."""
        return int(self.module.lm.get_output_embeddings().weight.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.module.lm.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.module.lm.parameters()).device

    @property
    def language_model(self) -> nn.Module:
        """The causal LM inside the VLM (where LoRA goes; never the vision tower)."""
        return self.module.lm

    def add_lora(self, r: int = 8, alpha: int = 16, targets: Sequence[str] = ("q_proj", "v_proj"),
                 train_projector: bool = True, seed: int = 0) -> LoRAHandle:
        """Stage 1 with LoRA: adapters on the LM (via peft), vision side frozen, projector optionally trained. §6.2."""
        vlm = self.module
        handle = apply_lora(vlm.lm, r, alpha, targets, seed=seed)
        for name in ("encoder", "quantizer", "compressor"):
            part = getattr(vlm, name, None)
            if part is not None:
                freeze(part)
        if vlm.projector is not None:
            vlm.projector.requires_grad_(train_projector)
        return handle

    def check_compatible(self, other: "VLMPolicy") -> None:
        """Raise ``ValueError`` unless ``other`` (a reference or teacher) shares this model's vocabulary."""
        if other.vocab_size != self.vocab_size or other.module.tokenizer.get_vocab() != self.module.tokenizer.get_vocab():
            raise ValueError(f"the reference model has another vocabulary ({other.vocab_size} logits, "
                             f"{len(other.module.tokenizer)} tokens) than the policy ({self.vocab_size} logits, "
                             f"{len(self.module.tokenizer)} tokens); log-probabilities are not comparable")

    # -- text -> examples ---------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.module.encode_text(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.module.decode_answer(ids)

    def chat(self, question: str, segments: Sequence[tuple[str | Sequence[int], bool]], image: int) -> Example:
        """The turn in the model's ``config.layout`` with the assistant's segments (text or ids), learned
        where flagged: ``<bos><|user|>`` question + image (or image + question) ``<|assistant|>`` … ``<|end|>``. §6.2."""
        vlm = self.module
        q, image_part = self.encode(question), vlm.image_block()
        user_ids = q + image_part if vlm.config.layout == "question_first" else image_part + q
        user = Turn("user", ((tuple(user_ids), False),))
        asst = Turn("assistant", tuple((tuple(self.encode(t) if isinstance(t, str) else t), learn)
                                       for t, learn in segments))
        ids, labels = self.template.render([user, asst])
        return Example([vlm.ids["bos"]] + ids, [IGNORE] + labels, image)

    def answer_tokens(self, answer: str) -> list[int]:
        """Answer text, citations ``[CITE:<p_k>]`` anywhere in it, -> the answer's ids as the model
        writes them (no ``<|end|>``): cite-first for a citing model (Chapter 5 §5.7–5.8)."""
        vlm = self.module
        text, patches = parse_citations(answer)
        if vlm.config.cite:
            return vlm.answer_ids(text, patches)[:-1]
        ids = vlm.answer_ids(text)[:-1]
        return vlm.citation_ids(patches) + ids if patches else ids

    def response(self, question: str, answer: str, image: int) -> Example:
        """The model's own prompt layout with the answer learned: exactly ``prompt_ids(question, answer,
        patches)``, what Chapter 5 trains (citations parsed from the text). §6.2."""
        return self.chat(question, [(self.answer_tokens(answer), True)], image)

    def pair(self, question: str, chosen: str, rejected: str, image: int) -> tuple[Example, Example]:
        """A preference pair as two examples; equal answers are an error (nothing to prefer). §6.3."""
        if " ".join(chosen.split()) == " ".join(rejected.split()):
            raise ValueError(f"chosen and rejected answers are equal ({chosen!r}): a preference pair needs two "
                             "different answers")
        return self.response(question, chosen, image), self.response(question, rejected, image)

    def collate(self, examples: Sequence[Example], images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Examples + the image bank (n, 3, H, W) -> right-padded ``input_ids``, ``labels`` (B, T) and ``images``."""
        if len(examples) == 0:
            raise ValueError("empty batch: collate needs at least one example")
        T = max(len(e.ids) for e in examples)
        ids = torch.full((len(examples), T), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
        for r, e in enumerate(examples):
            ids[r, :len(e.ids)] = torch.tensor(e.ids)
            labels[r, :len(e.labels)] = torch.tensor(e.labels)
        return {"input_ids": ids, "labels": labels, "images": images[torch.tensor([e.image for e in examples])]}

    # -- tensors the losses take -----------------------------------------------------------
    def _check(self, batch: dict) -> None:
        if batch["input_ids"].shape[0] == 0:
            raise ValueError("empty batch")

    def logits(self, batch: dict, model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch -> ``(logits, labels)`` aligned for next-token prediction: (B, T−1, V), (B, T−1). §6.2.

        ``model`` may be a wrapped copy of ``self.module`` (e.g. by ``accelerate``'s DDP), so that
        the call goes through the wrapper and its gradient hooks.
        """
        self._check(batch)
        m = self.module if model is None else model
        dev = self.device
        logits = m(batch["input_ids"].to(dev), images=batch["images"].to(dev))
        return logits[:, :-1], batch["labels"][:, 1:].to(dev)

    def sequence_logprobs(self, batch: dict, model: nn.Module | None = None) -> torch.Tensor:
        """Batch -> (B,) summed log-probability of each sequence's labelled tokens. §6.3."""
        logits, labels = self.logits(batch, model)
        return sequence_logprobs(logits, labels)

    def token_logprobs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch -> ``(logp, mask)`` (B, T−1): per-token log-probs of labelled tokens and their mask. §6.3."""
        logits, labels = self.logits(batch)
        return token_logprobs(logits, labels), labels != IGNORE

    def hidden(self, batch: dict) -> torch.Tensor:
        """Batch -> (B, T, D) last hidden states of the LM (for reward and value heads, distillation). §6.3."""
        self._check(batch)
        vlm, dev = self.module, self.device
        embeds, media, lm_ids = vlm.embed(batch["input_ids"].to(dev), images=batch["images"].to(dev))
        return vlm._run_lm(embeds, media, lm_ids, None)[0]

    @torch.no_grad()
    def sample(self, images: torch.Tensor, questions: Sequence[str], max_new_tokens: int = 16,
               do_sample: bool = True, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> list[str]:
        """Images (B, 3, H, W) and B questions -> B answer texts (sampled, or greedy with ``do_sample=False``). §6.3."""
        if len(questions) == 0 or images.shape[0] != len(questions):
            raise ValueError(f"need one question per image, got {images.shape[0]} images and {len(questions)} questions")
        vlm = self.module
        q = [self.encode(s) + [vlm.ids["assistant"]] for s in questions]
        L = max(map(len, q))
        if any(len(x) != L for x in q):  # the model's generate takes one question length per call
            return [a for i in range(len(q)) for a in
                    self.sample(images[i:i + 1], questions[i:i + 1], max_new_tokens, do_sample, temperature, generator)]
        out = vlm.generate(images.to(self.device), torch.tensor(q), max_new_tokens=max_new_tokens,
                           do_sample=do_sample, temperature=temperature, generator=generator)
        return [self.decode(row.tolist()) for row in out]


def freeze(module: nn.Module) -> nn.Module:
    """Put a reference/teacher model in eval mode with no gradients; returns it."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
