"""``VisionLanguageModel``: image encoder → (compressor) → fusion → Llama LM (Chapter 5 §5.6).

Three routes share one class and one prompt layout
``<bos><|user|>[image tokens]</image>question<|assistant|> answer<|end|>``:

* ``discrete`` — ``<image>`` placeholders become ``<v_k>`` words from an image tokenizer;
* ``continuous`` — placeholders are replaced by projected encoder features (masked scatter);
* ``gated`` — a single ``<image>`` marker stays in the text and the LM reads the image through
  gated cross-attention blocks (Flamingo media mask).

``mask="prefix"`` makes each image block bidirectional (prefix-LM); ``"causal"`` keeps the LM's
plain causal mask. ``generate`` decodes greedily or by sampling, with a KV cache, and can reuse
a cached image prefix across questions (prompt caching).
"""
from __future__ import annotations

import copy
import inspect
import dataclasses
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from ..config import Config
from ..hub import PretrainedMixin
from .continuous import PatchEncoder, Projector, merge_image_features
from .discrete import PatchQuantizer, check_codes
from .gated import GatedAdapter
from .masks import to_4d
from .text import ASSISTANT, BOS, END, IMAGE, IMAGE_END, USER, LMConfig, build_lm, museum_tokenizer, visual_token

ROUTES = ("discrete", "continuous", "gated")


@dataclasses.dataclass
class VLMConfig(Config):
    """Everything that defines a :class:`VisionLanguageModel` (tokenizer, image side, fusion, LM)."""

    route: str = "continuous"
    mask: str = "prefix"
    image_size: int = 64
    grid: int = 4
    codebook_size: int = 256
    quant_sub: int = 4
    enc_channels: int = 32
    gate_every: int = 1
    bpe_vocab: int = 512
    corpus_scenes: int = 1000
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 4
    intermediate: int = 192
    max_positions: int = 256
    attn_implementation: str = "sdpa"
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        self.check_choice("route", ROUTES)
        self.check_choice("mask", ("causal", "prefix"))
        self.check_positive("image_size", "grid", "codebook_size", "quant_sub", "enc_channels", "gate_every",
                            "bpe_vocab", "corpus_scenes")
        if self.image_size % (self.grid * self.quant_sub):
            self._fail("image_size", f"must be divisible by grid * quant_sub = {self.grid * self.quant_sub}")
        self.lm_config()  # validates the LM fields

    @classmethod
    def tiny(cls) -> "VLMConfig":
        """72-px exhibits read as a 3 × 3 grid: one image token per exhibit cell (M = 9)."""
        return cls(image_size=72, grid=3)

    @classmethod
    def base(cls) -> "VLMConfig":
        return cls(image_size=128, grid=4, quant_sub=8, enc_channels=128, hidden=384, layers=6, heads=6, kv_heads=2,
                   intermediate=1024, max_positions=512)

    @property
    def image_tokens(self) -> int:
        """Image tokens per image (M = grid²)."""
        return self.grid * self.grid

    def lm_config(self, vocab_size: int = 512) -> LMConfig:
        return LMConfig(vocab_size=vocab_size, hidden=self.hidden, layers=self.layers, heads=self.heads,
                        kv_heads=self.kv_heads, intermediate=self.intermediate, max_positions=self.max_positions,
                        attn_implementation=self.attn_implementation)


def _cache_keyword(decoder: nn.Module) -> str:
    """The KV-cache argument's name: ``cache`` in transformers >= 5.2x, ``past_key_values`` before."""
    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def call_decoder(decoder: nn.Module, embeds: torch.Tensor, mask: torch.Tensor | None, past):
    """Run a HF decoder on ``inputs_embeds`` (B, T, D) with a 4-D mask and an optional KV cache. §5.6."""
    kw = {_cache_keyword(decoder): past} if past is not None else {}
    return decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=past is not None, **kw)


def output_cache(out):
    """The KV cache a HF decoder returned, whichever attribute name this transformers uses."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


@dataclasses.dataclass
class PrefixCache:
    """A cached image prefix: its ids (B, P), the LM's KV cache over them, and gated media."""

    ids: torch.Tensor
    past: DynamicCache
    media: torch.Tensor | None


class VisionLanguageModel(nn.Module, PretrainedMixin):
    """A small vision-language model; see the module docstring. Chapter 5 §5.6."""

    config_class = VLMConfig

    def __init__(self, config: VLMConfig):
        super().__init__()
        if not isinstance(config, VLMConfig):
            raise ValueError(f"VisionLanguageModel needs a VLMConfig, got {type(config).__name__}")
        self.config = config
        K = max(config.codebook_size, config.image_tokens)  # citations name patches as <v_k> too
        self.tokenizer = museum_tokenizer(config.bpe_vocab, K, config.corpus_scenes)
        vocab = -(-len(self.tokenizer) // 64) * 64
        self.lm = build_lm(config.lm_config(vocab), seed=config.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 1)
            self.quantizer = PatchQuantizer(config.codebook_size, config.grid, config.quant_sub) \
                if config.route == "discrete" else None
            self.encoder = PatchEncoder(config.hidden, config.grid, config.enc_channels) \
                if config.route != "discrete" else None
            self.compressor: nn.Module | None = None
            self.projector = Projector(config.hidden, config.hidden) if config.route != "discrete" else None
            self.adapter = GatedAdapter(self.lm.model.layers, config.hidden, config.gate_every, config.heads) \
                if config.route == "gated" else None
        t = self.tokenizer
        self.ids = {name: t.convert_tokens_to_ids(tok) for name, tok in
                    (("bos", BOS), ("user", USER), ("image", IMAGE), ("image_end", IMAGE_END),
                     ("assistant", ASSISTANT), ("end", END), ("pad", t.pad_token), ("v0", visual_token(0)))}
        self.visual_range = (self.ids["v0"], self.ids["v0"] + K)

    # -- plugging in other encoders ---------------------------------------------------
    def replace_encoder(self, encoder: nn.Module, feature_dim: int, compressor: nn.Module | None = None) -> None:
        """Use any encoder (B,3,H,W)->(B,N,D) and optional compressor (B,N,D)->(B,M,feature_dim). §5.3.

        A new projector is created; such a model is saved with ``torch``-free safetensors but can
        only be reloaded by code that makes the same replacement first.
        """
        if self.config.route == "discrete":
            raise ValueError("the discrete route takes codes from a quantizer; use replace_quantizer")
        self.encoder, self.compressor = encoder, compressor
        self.projector = Projector(feature_dim, self.config.hidden)

    def replace_quantizer(self, quantizer: nn.Module) -> None:
        """Use any image tokenizer with ``encode(images) -> (B, h, w)`` codes and ``codebook_size <= K``."""
        if self.config.route != "discrete":
            raise ValueError("replace_quantizer is for the discrete route")
        K = getattr(quantizer, "codebook_size", None)
        if not isinstance(K, int) or K > self.config.codebook_size:
            raise ValueError(f"quantizer.codebook_size must be an int <= {self.config.codebook_size}, got {K!r}")
        self.quantizer = quantizer

    # -- prompts --------------------------------------------------------------------------
    @property
    def image_slots(self) -> int:
        """Tokens an image occupies in the LM sequence (M for prefix routes, 1 marker for gated)."""
        return 1 if self.config.route == "gated" else self.config.image_tokens

    def prefix_ids(self) -> list[int]:
        """``<bos><|user|>`` + image placeholders + ``</image>``."""
        i = self.ids
        return [i["bos"], i["user"]] + [i["image"]] * self.image_slots + [i["image_end"]]

    def encode_text(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens added)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, question: str | Sequence[int], answer: str | Sequence[int] | None = None) -> list[int]:
        """Full id list of one turn; the answer (if any) is followed by ``<|end|>``."""
        q = self.encode_text(question) if isinstance(question, str) else list(question)
        ids = self.prefix_ids() + q + [self.ids["assistant"]]
        if answer is not None:
            a = self.encode_text(" " + answer) if isinstance(answer, str) else list(answer)
            ids += a + [self.ids["end"]]
        return ids

    # -- forward ------------------------------------------------------------------------
    def image_features(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) images, or their encoder output (B, N, D), -> (B, M, hidden) projected tokens."""
        x = self.encoder(images) if features is None else features
        if self.compressor is not None:
            x = self.compressor(x)
        return self.projector(x)

    def embed(self, input_ids: torch.Tensor, images: torch.Tensor | None = None, codes: torch.Tensor | None = None,
              features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(B, T) ids (+ images, codes or cached encoder ``features``) -> ``(inputs_embeds, media, lm_ids)``. §5.2–5.3."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        route = self.config.route
        has_slots = bool((input_ids == self.ids["image"]).any())
        media = None
        if has_slots and images is None and codes is None and features is None:
            raise ValueError("the prompt holds <image> tokens but no images were given")
        if features is not None and route == "discrete":
            raise ValueError("the discrete route reads codes, not encoder features")
        if route == "discrete" and has_slots:
            if codes is None:
                codes = self.quantizer.encode(images)
            codes = check_codes(codes, self.config.codebook_size)
            mask = input_ids == self.ids["image"]
            counts = mask.sum(1)
            if bool((counts != codes[0].numel()).any()):
                raise ValueError(f"image placeholder count mismatch: rows hold {counts.tolist()} <image> tokens "
                                 f"but each image has {codes[0].numel()} codes")
            input_ids = input_ids.masked_scatter(mask, codes.reshape(codes.shape[0], -1) + self.visual_range[0])
        embeds = self.lm.get_input_embeddings()(input_ids)
        if route == "continuous" and has_slots:
            embeds = merge_image_features(embeds, input_ids, self.image_features(images, features), self.ids["image"])
        if route == "gated" and (images is not None or features is not None):
            media = self.image_features(images, features)
        return embeds, media, input_ids

    def attention_mask(self, lm_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        """(B, 1, T, T) additive mask: causal, with each image block bidirectional for ``mask='prefix'``."""
        if self.config.mask == "causal" or self.config.route == "gated":
            return None
        T = lm_ids.shape[1]
        img = self.is_image(lm_ids)
        start = img & ~F.pad(img, (1, 0))[:, :-1]
        seg = torch.cumsum(start.long(), 1)
        allowed = torch.ones(T, T, dtype=torch.bool, device=lm_ids.device).tril()[None]
        allowed = allowed | ((seg[:, :, None] == seg[:, None, :]) & img[:, :, None] & img[:, None, :])
        return to_4d(allowed, dtype)

    def is_image(self, lm_ids: torch.Tensor) -> torch.Tensor:
        """Bool mask of image-token positions in LM ids (placeholders or ``<v_k>`` words)."""
        if self.config.route == "gated":
            return torch.zeros_like(lm_ids, dtype=torch.bool)
        lo, hi = self.visual_range
        return (lm_ids == self.ids["image"]) | ((lm_ids >= lo) & (lm_ids < hi))

    def media_mask(self, lm_ids: torch.Tensor) -> torch.Tensor:
        """(B, T, M) Flamingo media mask: tokens from the ``<image>`` marker on see the image."""
        seen = torch.cumsum((lm_ids == self.ids["image"]).long(), 1) > 0
        return seen[:, :, None].expand(-1, -1, self.config.image_tokens)

    def forward(self, input_ids: torch.Tensor, images: torch.Tensor | None = None, codes: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V), or (n, V) at the boolean ``positions`` (B, T) only (cheaper for training).

        ``features`` (B, N, D) replaces ``images`` with the encoder's output, cached once when the
        encoder is frozen (§5.7).
        """
        embeds, media, lm_ids = self.embed(input_ids, images, codes, features)
        hidden = self._run_lm(embeds, media, lm_ids, None)[0]
        if positions is not None:
            hidden = hidden[positions]
        return self.lm.lm_head(hidden)

    def _run_lm(self, embeds, media, lm_ids_full, past, n_new: int | None = None):
        n_new = embeds.shape[1] if n_new is None else n_new
        mask = self.attention_mask(lm_ids_full, embeds.dtype)
        if mask is not None:
            mask = mask[:, :, -n_new:, :]
        if self.adapter is not None:
            mm = self.media_mask(lm_ids_full)[:, -n_new:] if media is not None else None
            with self.adapter.media(media, mm):
                out = call_decoder(self.lm.model, embeds, mask, past)
        else:
            out = call_decoder(self.lm.model, embeds, mask, past)
        return out.last_hidden_state, output_cache(out)

    # -- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def cache_prefix(self, images: torch.Tensor | None = None, codes: torch.Tensor | None = None) -> PrefixCache:
        """Run the static image prefix once and keep its KV cache (prompt caching). §5.6."""
        B = (images if images is not None else codes).shape[0]
        ids = torch.tensor([self.prefix_ids()] * B, device=self._device())
        embeds, media, lm_ids = self.embed(ids, images, codes)
        _, past = self._run_lm(embeds, media, lm_ids, DynamicCache(config=self.lm.config))
        return PrefixCache(lm_ids, past, media)

    @torch.no_grad()
    def generate(self, images: torch.Tensor | None, question_ids: torch.Tensor, max_new_tokens: int = 8,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None, use_cache: bool = True,
                 prefix: PrefixCache | None = None, codes: torch.Tensor | None = None) -> torch.Tensor:
        """Answer ids (B, ≤ max_new_tokens) after ``prefix + question + <|assistant|>``. §5.6.

        ``question_ids`` (B, Tq) must already end with ``<|assistant|>``. Greedy by default;
        ``do_sample`` draws from ``softmax(logits / temperature)`` (optionally top-k). Rows
        that emitted ``<|end|>`` are padded with it. ``prefix`` reuses a cached image prefix.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if do_sample and temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        if question_ids.ndim != 2:
            raise ValueError(f"question_ids must be (B, T), got shape {tuple(question_ids.shape)}")
        dev = self._device()
        q = question_ids.to(dev)
        B = q.shape[0]
        end = self.ids["end"]
        if prefix is None:
            prefix = self.cache_prefix(images, codes) if use_cache else None
        elif not use_cache:
            raise ValueError("a cached prefix needs use_cache=True")
        if prefix is not None and prefix.ids.shape[0] != B:
            raise ValueError(f"prefix holds {prefix.ids.shape[0]} images but {B} questions were given")
        if use_cache:
            past = copy.deepcopy(prefix.past)
            lm_ids, media = prefix.ids, prefix.media
            new_embeds = self.lm.get_input_embeddings()(q)
            lm_ids = torch.cat([lm_ids, q], 1)
        else:
            ids = torch.cat([torch.tensor([self.prefix_ids()] * B, device=dev), q], 1)
            new_embeds, media, lm_ids = self.embed(ids, images, codes)
            past = None
        out = torch.full((B, 0), end, dtype=torch.long, device=dev)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        prev_embeds = None
        for _ in range(max_new_tokens):
            if use_cache:
                h, past = self._run_lm(new_embeds, media, lm_ids, past)
            else:
                full = new_embeds if prev_embeds is None else torch.cat([prev_embeds, new_embeds], 1)
                h, _ = self._run_lm(full, media, lm_ids, None)
                prev_embeds = full
            logits = self.lm.lm_head(h[:, -1]).float()
            logits[:, len(self.tokenizer):] = float("-inf")
            if do_sample:
                logits = logits / temperature
                if top_k:
                    kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
            else:
                nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, end), nxt)
            out = torch.cat([out, nxt[:, None]], 1)
            done |= nxt == end
            if bool(done.all()):
                break
            lm_ids = torch.cat([lm_ids, nxt[:, None]], 1)
            new_embeds = self.lm.get_input_embeddings()(nxt[:, None])
        return out

    @torch.no_grad()
    def ask(self, image: torch.Tensor, question: str, **kw) -> str:
        """Answer one question about one (3, H, W) image; returns the decoded answer text."""
        if image.ndim != 3:
            raise ValueError(f"ask() takes one (3, H, W) image, got shape {tuple(image.shape)}")
        q = torch.tensor([self.encode_text(question) + [self.ids["assistant"]]])
        ids = self.generate(image[None].to(self._device()), q, **kw)[0].tolist()
        return self.decode_answer(ids)

    def decode_answer(self, ids: Sequence[int]) -> str:
        """Text of answer ids up to ``<|end|>`` (citations kept as ``[CITE:<v_k>]``)."""
        ids = list(ids)
        if self.ids["end"] in ids:
            ids = ids[:ids.index(self.ids["end"])]
        return self.tokenizer.decode(ids).strip()

    def _device(self) -> torch.device:
        return next(self.lm.parameters()).device

    # -- saving -------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """config.json + model.safetensors (PretrainedMixin) + the HF tokenizer files in ``tokenizer/``."""
        out = PretrainedMixin.save_pretrained(self, path)
        self.tokenizer.save_pretrained(out / "tokenizer")
        return out
