"""``VisionLanguageModel``: image encoder → (compressor) → fusion → Llama LM (Chapter 5 §5.6).

Three routes share one class and one prompt layout
``<bos><|user|>[image tokens]</image>question<|assistant|> answer<|end|>``:

* ``discrete`` — ``<image>`` placeholders become ``<v_k>`` words from an image tokenizer: Chapter 2's
  VQ tokenizer (``image_side="vq"``: the ``vq-tokenizer-cell`` artifact, one code per museum cell)
  or this chapter's k-means :class:`~vlmbook.fusion.discrete.PatchQuantizer`;
* ``continuous`` — placeholders are replaced by projected encoder features (masked scatter);
* ``gated`` — a single ``<image>`` marker stays in the text and the LM reads the image through
  gated cross-attention blocks (Flamingo media mask).

``mask="prefix"`` makes each image block bidirectional (prefix-LM); ``"causal"`` keeps the LM's
plain causal mask. ``generate`` decodes greedily or by sampling, with a KV cache, and can reuse
a cached image prefix across questions (prompt caching).

The language model is the book's tiny Llama, or a reader's own: any local Hugging Face causal-LM
checkpoint (:meth:`VisionLanguageModel.from_lm`, or ``VLMConfig.lm_path``), reached through the
:class:`~vlmbook.fusion.lm.CausalLM` adapter; ``vlm.apply_lora`` puts LoRA on it. Such a model
saves its LM's HF config and tokenizer beside its weights, so it reloads without the original
checkpoint (§5.1).
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
from safetensors.torch import save_file
from transformers import DynamicCache

from ..config import Config
from ..hub import CONFIG_NAME, WEIGHTS_NAME, PretrainedMixin, _dedupe_shared, _read_json
from transformers import PreTrainedTokenizerBase, PretrainedConfig

from ..resample.positions import sincos_2d
from ..vision.clip import CLIPConfig
from ..vision.vit import VisionEncoder
from .continuous import PatchEncoder, Projector, merge_image_features
from .discrete import PatchQuantizer, codes_to_token_ids
from .gated import GatedAdapter
from .lm import ADAPTER_DIR, TOKENIZER_DIR, CausalLM, _base_state_dict, _is_peft, quiet_peft
from .masks import media_mask, to_4d
from .text import (ASSISTANT, BOS, CITE_CLOSE, CITE_OPEN, END, IMAGE, IMAGE_END, PAD, SPECIAL_TOKENS, USER, LMConfig,
                   add_answer_tokens, build_lm, museum_answers, museum_tokenizer, patch_token, visual_token)

ROUTES = ("discrete", "continuous", "gated")
MASKS = ("causal", "prefix", "full_prefix")
LAYOUTS = ("image_first", "question_first")
CELL_EMBEDS = ("none", "learned", "sincos")
IMAGE_SIDES = ("patch", "clip", "features", "vq")
COMPRESSORS = ("none", "cells", "perceiver", "qformer", "pixel_shuffle", "tokenlearner", "tome")
#: Chapter 4's compressors: each makes M image tokens from the encoder's tokens (pixel shuffle only
#: M = N / r² for a factor r of the patch grid's side)
FREE_COMPRESSORS = ("perceiver", "qformer", "pixel_shuffle", "tokenlearner", "tome")
#: The levers that make the tiny guide find the object a question names (§5.7's ablation).
RECIPE = {"cell_embed": "learned", "layout": "question_first", "cite": True, "closed_answers": True, "qk_norm": True}


@dataclasses.dataclass
class VLMConfig(Config):
    """Everything that defines a :class:`VisionLanguageModel` (tokenizer, image side, fusion, LM)."""

    route: str = "continuous"
    mask: str = "prefix"
    layout: str = "image_first"
    cell_embed: str = "none"
    cite: bool = False
    #: the citation token ``<p_k>`` also carries cell k's embedding (``cell_embed``): the place code
    #: of image token k and of the token that cites it are one vector (§5.7)
    cite_cells: bool = False
    closed_answers: bool = False
    image_side: str = "patch"
    compressor: str = "none"
    #: layers of a Chapter 4 compressor (Perceiver, Q-Former): one cross-attention layer suffices
    #: to gather each museum cell (and learns faster than two, §5.7)
    compressor_depth: int = 1
    feature_dim: int = 0
    image_size: int = 64
    grid: int = 4
    #: image tokens M per image; 0 = one per exhibit cell (grid²). Another M needs a compressor that
    #: makes any number of tokens (Perceiver, Q-Former, TokenLearner); citations still name the grid²
    #: cells (Chapter 7 §7.4 sweeps M)
    tokens: int = 0
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
    qk_norm: bool = False
    seed: int = 0
    #: The discrete route's image tokenizer when ``image_side="vq"``: a Chapter 2 VQ tokenizer
    #: artifact whose code grid is ``grid × grid`` and whose codebook has ``codebook_size`` codes
    #: (``vq-tokenizer-cell``: 48 px → 3 × 3 codes, one per museum cell, K = 256). Its weights are
    #: loaded when the model is built and then travel in the VLM's own safetensors (§5.2).
    vq_artifact: str = "vq-tokenizer-cell"
    #: "" = the book's tiny Llama (``hidden``, ``layers``, ``heads``, ... build it); otherwise a
    #: reader's own Hugging Face causal LM, loaded from this local checkpoint folder when the model
    #: is built (``hidden`` must equal its width; ``heads`` sizes the gated cross-attention). A
    #: saved model keeps the LM's config and tokenizer and never reads this folder again (§5.1).
    lm_path: str = ""

    @classmethod
    def from_dict(cls, data: dict, require_all: bool = False) -> "VLMConfig":
        """:meth:`Config.from_dict`; a model saved before ``lm_path`` and ``qk_norm`` existed is on the
        book's plain Llama (and one saved before ``vq_artifact`` or ``cite_cells`` existed never used
        them). A saved model (``require_all``) without ``compressor_depth`` was built with Chapter 4's
        default of two compressor layers."""
        if isinstance(data, dict):
            old = {"compressor_depth": 2} if require_all else {}
            data = {"lm_path": "", "qk_norm": False, "vq_artifact": "vq-tokenizer-cell", "cite_cells": False, "tokens": 0,
                    **old, **data}
        return super().from_dict(data, require_all)

    def validate(self) -> None:
        super().validate()
        self.check_choice("route", ROUTES)
        self.check_choice("mask", MASKS)
        self.check_choice("layout", LAYOUTS)
        self.check_choice("cell_embed", CELL_EMBEDS)
        self.check_choice("image_side", IMAGE_SIDES)
        if self.image_side == "vq":
            if self.route != "discrete":
                self._fail("image_side", "'vq' (Chapter 2's tokenizer) gives codes, not features: it needs route='discrete'")
            if not self.vq_artifact:
                self._fail("vq_artifact", "must name a VQ tokenizer artifact when image_side='vq'")
        if self.cite_cells and (not self.cite or self.cell_embed == "none"):
            self._fail("cite_cells", "needs cite=True and a cell_embed other than 'none'")
        for name in ("cite", "cite_cells", "closed_answers", "qk_norm"):
            if not isinstance(getattr(self, name), bool):
                self._fail(name, "must be True or False")
        self.check_non_negative("feature_dim", "tokens")
        self.check_choice("compressor", COMPRESSORS)
        if self.tokens and self.tokens != self.cells:
            # the discrete route's M is its tokenizer's code grid (checked against it when it loads)
            if self.route == "discrete" and self.image_side != "vq":
                self._fail("tokens", f"M={self.tokens} differs from the grid's {self.cells} cells: the discrete route "
                                     "makes other M only with a Chapter 2 tokenizer (image_side='vq')")
            if self.route != "discrete" and self.compressor not in FREE_COMPRESSORS:
                self._fail("tokens", f"M={self.tokens} differs from the grid's {self.cells} cells: it needs a "
                                     f"compressor in {FREE_COMPRESSORS} (or the discrete route with image_side='vq')")
            if self.cite_cells or self.cell_embed == "sincos":
                self._fail("tokens", f"M={self.tokens} differs from the grid's {self.cells} cells: cite_cells and "
                                     "cell_embed='sincos' give token k the place of cell k")
        if self.compressor in FREE_COMPRESSORS and self.route != "discrete":
            from ..resample.budget import valid_budgets

            n_in = self.encoder_tokens()
            if not valid_budgets(self.compressor, n_in, [self.image_tokens]):
                self._fail("tokens" if self.tokens else "compressor",
                           f"the {self.compressor} compressor cannot make M={self.image_tokens} tokens from {n_in}")
        if self.image_side == "clip" and self.route != "discrete":
            if self.image_size != CLIPConfig.tiny().image_size:
                self._fail("image_size", f"must be {CLIPConfig.tiny().image_size} for Chapter 4's clip-tiny encoder")
            if self.compressor == "none":
                self._fail("compressor", "clip-tiny gives 64 patch features: choose a compressor to reach grid² tokens")
        self.check_positive("image_size", "grid", "codebook_size", "quant_sub", "enc_channels", "gate_every", "compressor_depth",
                            "bpe_vocab", "corpus_scenes")
        if self.route == "discrete" and self.image_side != "vq" and self.image_size % (self.grid * self.quant_sub):
            self._fail("image_size", f"must be divisible by grid * quant_sub = {self.grid * self.quant_sub}")
        if self.lm_path:
            # a reader's LM brings its own shape: only the width and the cross-attention heads matter
            self.check_positive("hidden", "heads")
            self.check_divisible("hidden", self.heads, "heads")
            self.check_choice("attn_implementation", ("eager", "sdpa"))
        else:
            self.lm_config()  # validates the LM fields

    @classmethod
    def tiny(cls) -> "VLMConfig":
        """The museum guide: 64-px exhibits through Chapter 4's ``clip-tiny`` ViT (64 patch features) and
        Chapter 4's Perceiver Resampler (9 latents, one layer; warmed up so that latent k describes
        cell k of the 3 × 3 exhibit: M = 9 image tokens), with the recipe that makes the guide read the
        image: cell embeddings, question first, cite first, one token per answer (§5.7)."""
        return cls(image_size=64, grid=3, image_side="clip", compressor="perceiver", **RECIPE)

    @classmethod
    def base(cls) -> "VLMConfig":
        """The guide for one GPU: the tiny recipe and image side (nine cell tokens from ``clip-tiny``
        through the Perceiver Resampler) with a 4× wider, 2× deeper language model (grouped-query
        attention, 2 key-value heads)."""
        return cls(image_size=64, grid=3, image_side="clip", compressor="perceiver", hidden=256, layers=4, heads=4,
                   kv_heads=2, intermediate=768, max_positions=256, **RECIPE)

    def encoder_tokens(self) -> int:
        """Tokens the image side hands the compressor: clip-tiny's 64 patches, else one per cell."""
        if self.image_side == "clip":
            return (CLIPConfig.tiny().image_size // CLIPConfig.tiny().patch_size) ** 2
        return self.cells

    @property
    def cells(self) -> int:
        """Exhibit cells (grid²): what a citation ``<p_k>`` names."""
        return self.grid * self.grid

    @property
    def image_tokens(self) -> int:
        """Image tokens per image M (``tokens``, or one per cell: grid²)."""
        return self.tokens or self.cells

    def lm_config(self, vocab_size: int = 512) -> LMConfig:
        return LMConfig(vocab_size=vocab_size, hidden=self.hidden, layers=self.layers, heads=self.heads,
                        kv_heads=self.kv_heads, intermediate=self.intermediate, max_positions=self.max_positions,
                        attn_implementation=self.attn_implementation, qk_norm=self.qk_norm)


@dataclasses.dataclass
class PrefixCache:
    """A cached image prefix: its ids (B, P), the LM's KV cache over them, and gated media."""

    ids: torch.Tensor
    past: DynamicCache
    media: torch.Tensor | None


class VisionLanguageModel(nn.Module, PretrainedMixin):
    """A small vision-language model; see the module docstring. Chapter 5 §5.6.

    ``VisionLanguageModel(config)`` builds the book's tiny Llama and museum tokenizer; with
    ``config.lm_path`` set it loads that checkpoint instead (:meth:`from_lm` does this for you).
    ``lm`` hands over the language model directly: a ``transformers`` causal LM, a
    :class:`~vlmbook.fusion.lm.CausalLM`, or an HF ``PretrainedConfig`` (an untrained LM of that
    architecture: how :meth:`from_pretrained` rebuilds one before loading its weights).

    ``vlm.lm`` is always the ``*ForCausalLM`` module; a peft wrapper around it (``vlm.apply_lora``,
    or ``vlm.lm = get_peft_model(vlm.lm, cfg)``) is kept in ``vlm.text.model``.
    """

    config_class = VLMConfig

    def __init__(self, config: VLMConfig, tokenizer: PreTrainedTokenizerBase | None = None,
                 lm: nn.Module | PretrainedConfig | None = None):
        super().__init__()
        if not isinstance(config, VLMConfig):
            raise ValueError(f"VisionLanguageModel needs a VLMConfig, got {type(config).__name__}")
        self.config = c = config
        M = c.image_tokens
        if c.lm_path:
            self.tokenizer, model = bring_lm(c, tokenizer, lm)
        else:
            if lm is not None:
                raise ValueError("lm= is for a reader's own language model: set VLMConfig.lm_path too, "
                                 "or use VisionLanguageModel.from_lm")
            # a saved model brings its own tokenizer: loading never retrains it
            self.tokenizer = tokenizer if tokenizer is not None else museum_tokenizer(
                c.bpe_vocab, c.codebook_size, c.corpus_scenes, patch_tokens=c.cells, closed_answers=c.closed_answers)
            vocab = -(-len(self.tokenizer) // 64) * 64
            model = build_lm(c.lm_config(vocab), seed=c.seed)
        # every call into the LM goes through Chapter 5's CausalLM adapter (embed, decode with a 4-D
        # mask and a KV cache, head, decoder layers); kept out of the module tree so that the
        # weights keep their names (``lm.*``) in the state dict
        object.__setattr__(self, "text", CausalLM(model, self.tokenizer))
        self.lm = model
        if c.lm_path:
            check_width(c, self.text)
        feat = c.feature_dim or (CLIPConfig.tiny().vision_dim if c.image_side == "clip" else c.hidden)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed + 1)
            self.quantizer = build_quantizer(c) if c.route == "discrete" else None
            self.encoder = build_image_side(c, feat) if c.route != "discrete" else None
            self.compressor = build_compressor(c, feat) if c.route != "discrete" else None
            self.projector = Projector(feat, c.hidden) if c.route != "discrete" else None
            self.adapter = GatedAdapter(self.text.decoder_layers(), c.hidden, c.gate_every, c.heads) \
                if c.route == "gated" else None
            # projected features are O(1); codebook words are embeddings of std 0.02
            scale = 0.02 if c.route == "discrete" else 1.0
            if c.cell_embed == "learned":
                self.cell_embed = nn.Parameter(torch.randn(M, c.hidden) * scale)
            elif c.cell_embed == "sincos":
                # fixed 2-D sin-cos codes (RMS 1/sqrt 2) with a learned gain
                self.register_buffer("cell_embed", sincos_2d(c.grid, c.grid, c.hidden) * 2 ** 0.5)
                self.cell_gain = nn.Parameter(torch.tensor(scale))
            else:
                self.cell_embed = None
        t = self.tokenizer
        self.ids = {name: t.convert_tokens_to_ids(tok) for name, tok in
                    (("bos", t.bos_token or BOS), ("user", USER), ("image", IMAGE), ("image_end", IMAGE_END),
                     ("assistant", ASSISTANT), ("end", END), ("pad", t.pad_token), ("v0", visual_token(0)),
                     ("p0", patch_token(0)), ("cite_open", CITE_OPEN), ("cite_close", CITE_CLOSE))}
        if self.ids["v0"] == t.unk_token_id or (c.cite and self.ids["p0"] == t.unk_token_id):
            raise ValueError("the tokenizer lacks the <v_k> or (for a citing model) the <p_k> token family")
        self.visual_range = (self.ids["v0"], self.ids["v0"] + c.codebook_size)
        # a tokenizer saved before patch tokens existed (vlm-tiny v1) has no <p_k>: it cannot cite
        self.patch_range = (self.ids["p0"], self.ids["p0"] + c.cells) if self.ids["p0"] != t.unk_token_id else None

    def __setattr__(self, name: str, value) -> None:
        # ``vlm.lm = get_peft_model(vlm.lm, cfg)`` (or any replacement LM): the adapter that every
        # forward goes through follows, and ``vlm.lm`` stays the HF model (state-dict names ``lm.*``)
        if name == "lm" and "text" in self.__dict__:
            self.text.model = value
            if _is_peft(value):
                value = value.get_base_model()
        super().__setattr__(name, value)

    @property
    def device(self) -> torch.device:
        """The device the model's weights live on."""
        return next(self.lm.parameters()).device

    def _device(self) -> torch.device:
        return self.device

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
        """Use any image tokenizer with ``encode(images) -> (B, h, w)`` codes and ``codebook_size <= K``.

        A tokenizer that states its code ``grid`` must give ``config.image_tokens`` codes per image.
        """
        if self.config.route != "discrete":
            raise ValueError("replace_quantizer is for the discrete route")
        K = getattr(quantizer, "codebook_size", None)
        if not isinstance(K, int) or K > self.config.codebook_size:
            raise ValueError(f"quantizer.codebook_size must be an int <= {self.config.codebook_size}, got {K!r}")
        g = getattr(quantizer, "grid", None)
        if isinstance(g, int) and g * g != self.config.image_tokens:
            raise ValueError(f"the tokenizer's {g} x {g} code grid gives {g * g} codes per image but "
                             f"VLMConfig.grid={self.config.grid} asks for image_tokens={self.config.image_tokens}")
        self.quantizer = quantizer

    # -- prompts --------------------------------------------------------------------------
    @property
    def image_slots(self) -> int:
        """Tokens an image occupies in the LM sequence (M for prefix routes, 1 marker for gated)."""
        return 1 if self.config.route == "gated" else self.config.image_tokens

    def image_block(self) -> list[int]:
        """An image's placeholders followed by ``</image>``."""
        return [self.ids["image"]] * self.image_slots + [self.ids["image_end"]]

    def prefix_ids(self) -> list[int]:
        """``<bos><|user|>`` + image placeholders + ``</image>`` (the image-first prefix)."""
        return [self.ids["bos"], self.ids["user"]] + self.image_block()

    def encode_text(self, text: str) -> list[int]:
        """Token ids of plain text (no special tokens added)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def citation_ids(self, patches: Sequence[int]) -> list[int]:
        """``[CITE:<p_i><p_j>]`` as ids: the evidence the guide names before its answer. §5.8."""
        n = self.config.cells
        if self.patch_range is None:
            raise ValueError("this model's tokenizer has no <p_k> patch tokens")
        if any(not 0 <= int(k) < n for k in patches):
            raise ValueError(f"cited patches {list(patches)} out of range for {n} patches")
        return [self.ids["cite_open"]] + [self.patch_range[0] + int(k) for k in patches] + [self.ids["cite_close"]]

    def answer_ids(self, answer: str, patches: Sequence[int] | None = None) -> list[int]:
        """Ids of one answer: citation first when ``config.cite``, then the answer, then ``<|end|>``. §5.7."""
        ids = self.citation_ids(patches or []) if self.config.cite else []
        ids += self.encode_text(answer if self.config.closed_answers else " " + answer)
        return ids + [self.ids["end"]]

    def prompt_ids(self, question: str | Sequence[int], answer: str | Sequence[int] | None = None,
                   patches: Sequence[int] | None = None) -> list[int]:
        """Full id list of one turn in ``config.layout``; the answer (if any) ends with ``<|end|>``.

        ``answer`` as a string is formatted by :meth:`answer_ids` (citing ``patches``); as ids it is
        taken as-is and ``<|end|>`` appended.
        """
        q = self.encode_text(question) if isinstance(question, str) else list(question)
        i = self.ids
        if self.config.layout == "question_first":
            ids = [i["bos"], i["user"]] + q + self.image_block() + [i["assistant"]]
        else:
            ids = self.prefix_ids() + q + [i["assistant"]]
        if answer is not None:
            ids += self.answer_ids(answer, patches) if isinstance(answer, str) else list(answer) + [i["end"]]
        return ids

    # -- forward ------------------------------------------------------------------------
    def image_features(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None,
                       compressed: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) images, their encoder output (B, N, D), or the compressor's output on it
        (B, M, D) -> (B, M, hidden) projected tokens."""
        if compressed is not None:
            return self.add_cell_embed(self.projector(compressed))
        if features is None:
            if self.encoder is None:
                raise ValueError("this model has no image encoder (image_side='features'): pass features=")
            x = self.encoder(images)
        else:
            x = features
        if self.compressor is not None:
            x = self.compressor(x)
        x = self.projector(x)
        return self.add_cell_embed(x)

    def cell_vectors(self) -> torch.Tensor | None:
        """(M, hidden) the place code added to image token k (and, with ``cite_cells``, to ``<p_k>``)."""
        if self.cell_embed is None:
            return None
        return self.cell_embed * self.cell_gain if self.config.cell_embed == "sincos" else self.cell_embed

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) LM ids -> (B, T, hidden) token embeddings; with ``cite_cells`` each ``<p_k>`` also gets
        cell k's embedding. Every id the LM reads goes through here (prompt, cache, generation). §5.7."""
        x = self.text.embed(ids)
        if not self.config.cite_cells or self.patch_range is None:
            return x
        lo, hi = self.patch_range
        is_p = (ids >= lo) & (ids < hi)
        cells = self.cell_vectors().to(x.dtype)[(ids - lo).clamp(0, hi - lo - 1)]
        return x + cells * is_p[..., None]

    def add_cell_embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M, d) image tokens + their cell's embedding (``config.cell_embed``), so that what a
        question reads from a token says which cell it came from. §5.7."""
        if self.cell_embed is None:
            return x
        if x.shape[1] != self.cell_embed.shape[0]:
            raise ValueError(f"cell embeddings are for {self.cell_embed.shape[0]} image tokens, got {x.shape[1]}")
        return x + self.cell_vectors().to(x.dtype)

    def embed(self, input_ids: torch.Tensor, images: torch.Tensor | None = None, codes: torch.Tensor | None = None,
              features: torch.Tensor | None = None, compressed: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(B, T) ids (+ images, codes, cached encoder ``features`` or cached ``compressed`` features)
        -> ``(inputs_embeds, media, lm_ids)``. §5.2–5.3."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        route = self.config.route
        has_slots = bool((input_ids == self.ids["image"]).any())
        media = None
        if has_slots and images is None and codes is None and features is None and compressed is None:
            raise ValueError("the prompt holds <image> tokens but no images were given")
        if (features is not None or compressed is not None) and route == "discrete":
            raise ValueError("the discrete route reads codes, not encoder features")
        if compressed is not None and self.compressor is None:
            raise ValueError("compressed features need a compressor (config.compressor is 'none'): pass features=")
        table = self.embed_tokens
        if route == "discrete" and has_slots:
            if codes is None:
                codes = self.quantizer.encode(images)
            mask = input_ids == self.ids["image"]
            counts = mask.sum(1)
            n = codes[0].numel()
            if bool((counts != n).any()):
                raise ValueError(f"image placeholder count mismatch: rows hold {counts.tolist()} <image> tokens "
                                 f"but each image has {n} codes")
            vis = codes_to_token_ids(codes, self.visual_range[0], self.config.codebook_size)
            input_ids = input_ids.masked_scatter(mask, vis)
            embeds = table(input_ids)
            if self.cell_embed is not None:
                cells = self.add_cell_embed(table(vis))
                embeds = embeds.masked_scatter(mask[..., None], cells.to(embeds.dtype))
        else:
            embeds = table(input_ids)
        if route == "continuous" and has_slots:
            embeds = merge_image_features(embeds, input_ids, self.image_features(images, features, compressed),
                                          self.ids["image"])
        if route == "gated" and (images is not None or features is not None or compressed is not None):
            media = self.image_features(images, features, compressed)
        return embeds, media, input_ids

    def attention_mask(self, lm_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        """(B, 1, T, T) additive mask from ``config.mask``: ``causal``; ``prefix`` (each image block
        bidirectional); ``full_prefix`` (everything up to ``<|assistant|>`` bidirectional). §5.4."""
        m = self.config.mask
        if m == "causal" or (self.config.route == "gated" and m == "prefix"):
            return None
        if m == "prefix":
            blocks = self.is_image(lm_ids)
        else:
            blocks = torch.cumsum((lm_ids == self.ids["assistant"]).long(), 1) == 0
            blocks = blocks | F.pad(blocks, (1, 0))[:, :-1]  # the <|assistant|> token joins the prefix
        return to_4d(batch_block_mask(blocks), dtype)

    def is_image(self, lm_ids: torch.Tensor) -> torch.Tensor:
        """Bool mask of image-token positions in LM ids (placeholders or ``<v_k>`` words)."""
        if self.config.route == "gated":
            return torch.zeros_like(lm_ids, dtype=torch.bool)
        lo, hi = self.visual_range
        return (lm_ids == self.ids["image"]) | ((lm_ids >= lo) & (lm_ids < hi))

    def media_mask(self, lm_ids: torch.Tensor) -> torch.Tensor:
        """(B, T, M) Flamingo media mask: tokens from the ``<image>`` marker on see the image. §5.5."""
        pos = (lm_ids == self.ids["image"]).long().argmax(1)
        has = (lm_ids == self.ids["image"]).any(1)
        T = lm_ids.shape[1]
        rows = [media_mask(T, [int(p)] if h else [], self.config.image_tokens) if h else
                torch.zeros(T, self.config.image_tokens, dtype=torch.bool) for p, h in zip(pos.tolist(), has.tolist())]
        return torch.stack(rows).to(lm_ids.device)

    def forward(self, input_ids: torch.Tensor, images: torch.Tensor | None = None, codes: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, features: torch.Tensor | None = None,
                compressed: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V), or (n, V) at the boolean ``positions`` (B, T) only (cheaper for training).

        ``features`` (B, N, D) replaces ``images`` with the encoder's output, cached once when the
        encoder is frozen; ``compressed`` (B, M, D) replaces them with the compressor's output,
        cached once when the compressor is frozen too (§5.7).
        """
        embeds, media, lm_ids = self.embed(input_ids, images, codes, features, compressed)
        hidden = self._run_lm(embeds, media, lm_ids, None)[0]
        if positions is not None:
            hidden = hidden[positions]
        return self.text.head(hidden)

    def _run_lm(self, embeds, media, lm_ids_full, past, n_new: int | None = None):
        n_new = embeds.shape[1] if n_new is None else n_new
        mask = self.attention_mask(lm_ids_full, embeds.dtype)
        if mask is not None:
            mask = mask[:, :, -n_new:, :]
        if self.adapter is not None:
            mm = self.media_mask(lm_ids_full)[:, -n_new:] if media is not None else None
            with self.adapter.media(media, mm):
                return self.text.decode(embeds, mask, cache=past)
        return self.text.decode(embeds, mask, cache=past)

    @torch.no_grad()
    def answer_logprobs(self, input_ids: torch.Tensor, targets: torch.Tensor, images: torch.Tensor | None = None,
                        codes: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) summed log-probabilities of each row's answer tokens; ``targets`` (B, T) marks the
        positions that predict them (as built by the batcher). Preference training needs these."""
        logits = self(input_ids, images=images, codes=codes, features=features).float()
        logits[..., len(self.tokenizer):] = float("-inf")  # padding rows of the vocabulary, as in generate
        logp = logits.log_softmax(-1)
        nxt = torch.roll(input_ids, -1, 1)
        tok = logp.gather(-1, nxt[..., None]).squeeze(-1)
        return (tok * targets).sum(1)

    # -- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def cache_prefix(self, images: torch.Tensor | None = None, codes: torch.Tensor | None = None) -> PrefixCache:
        """Run the static image prefix once and keep its KV cache (prompt caching, image-first layout). §5.6."""
        if self.config.layout != "image_first":
            raise ValueError("a reusable image prefix needs layout='image_first' (the question comes first here)")
        if self.config.mask == "full_prefix":
            raise ValueError("mask='full_prefix' lets the image see the question: its prefix cannot be reused")
        B = (images if images is not None else codes).shape[0]
        ids = torch.tensor([self.prefix_ids()] * B, device=self.device)
        embeds, media, lm_ids = self.embed(ids, images, codes)
        _, past = self._run_lm(embeds, media, lm_ids, self.text.new_cache())
        return PrefixCache(lm_ids, past, media)

    def question_prompt(self, question_ids: torch.Tensor) -> torch.Tensor:
        """(B, Tq) question ids ending with ``<|assistant|>`` -> (B, T) full prompt ids in ``config.layout``."""
        if question_ids.ndim != 2:
            raise ValueError(f"question_ids must be (B, T), got shape {tuple(question_ids.shape)}")
        if bool((question_ids[:, -1] != self.ids["assistant"]).any()):
            raise ValueError("question_ids must end with the <|assistant|> token")
        rows = [self.prompt_ids(q[:-1].tolist()) for q in question_ids]
        return torch.tensor(rows, device=question_ids.device)

    @torch.no_grad()
    def generate(self, images: torch.Tensor | None, question_ids: torch.Tensor, max_new_tokens: int = 8,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None, use_cache: bool = True,
                 prefix: PrefixCache | None = None, codes: torch.Tensor | None = None,
                 features: torch.Tensor | None = None, stop_token: int | None = None,
                 return_logprobs: bool = False):
        """Answer ids (B, ≤ max_new_tokens) for ``question_ids`` (B, Tq) ending with ``<|assistant|>``. §5.6.

        Greedy by default; ``do_sample`` draws from ``softmax(logits / temperature)`` (optionally
        top-k). Decoding stops at ``stop_token`` (default ``<|end|>``; ``-1`` never stops), and rows
        that stopped are padded with it. ``prefix`` reuses a cached image prefix (image-first
        layout). With ``return_logprobs`` it returns ``(ids, logprobs)``, the (B, n) log-probability
        of each emitted token under the distribution it was drawn from.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if do_sample and temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        if question_ids.ndim != 2:
            raise ValueError(f"question_ids must be (B, T), got shape {tuple(question_ids.shape)}")
        dev = self.device
        q = question_ids.to(dev)
        B = q.shape[0]
        stop = self.ids["end"] if stop_token is None else int(stop_token)
        if prefix is not None and not use_cache:
            raise ValueError("a cached prefix needs use_cache=True")
        if prefix is not None and prefix.ids.shape[0] != B:
            raise ValueError(f"prefix holds {prefix.ids.shape[0]} images but {B} questions were given")
        if prefix is not None:
            past = copy.deepcopy(prefix.past)
            lm_ids, media = torch.cat([prefix.ids, q], 1), prefix.media
            new_embeds = self.embed_tokens(q)
        else:
            ids = self.question_prompt(q)
            new_embeds, media, lm_ids = self.embed(ids, images, codes, features)
            past = self.text.new_cache() if use_cache else None
        out = torch.full((B, 0), stop if stop >= 0 else 0, dtype=torch.long, device=dev)
        lps = torch.zeros(B, 0, device=dev)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        full = new_embeds
        for _ in range(max_new_tokens):
            if use_cache:
                h, past = self._run_lm(new_embeds, media, lm_ids, past)
            else:
                h, _ = self._run_lm(full, media, lm_ids, None)
            logits = self.text.head(h[:, -1]).float()
            logits[:, len(self.tokenizer):] = float("-inf")
            if do_sample:
                logits = logits / temperature
                if top_k:
                    kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
            else:
                nxt = logits.argmax(-1)
            lp = logits.log_softmax(-1).gather(1, nxt[:, None])
            if stop >= 0:
                nxt = torch.where(done, torch.full_like(nxt, stop), nxt)
                lp = lp.masked_fill(done[:, None], 0.0)
            out = torch.cat([out, nxt[:, None]], 1)
            lps = torch.cat([lps, lp], 1)
            if stop >= 0:
                done |= nxt == stop
                if bool(done.all()):
                    break
            lm_ids = torch.cat([lm_ids, nxt[:, None]], 1)
            new_embeds = self.embed_tokens(nxt[:, None])
            full = torch.cat([full, new_embeds], 1)
        return (out, lps) if return_logprobs else out

    @torch.no_grad()
    def ask(self, image: torch.Tensor, question: str, **kw) -> str:
        """Answer one question about one (3, H, W) image; returns the decoded answer text."""
        if image.ndim != 3:
            raise ValueError(f"ask() takes one (3, H, W) image, got shape {tuple(image.shape)}")
        q = torch.tensor([self.encode_text(question) + [self.ids["assistant"]]])
        kw.setdefault("max_new_tokens", 8 + self.config.cells if self.config.cite else 8)
        ids = self.generate(image[None].to(self.device), q, **kw)[0].tolist()
        return self.decode_answer(ids)

    def decode_answer(self, ids: Sequence[int]) -> str:
        """Text of answer ids up to ``<|end|>``: ``'[CITE:<p_3><p_4>] red'`` (citations first when cited)."""
        ids = list(ids)
        if self.ids["end"] in ids:
            ids = ids[:ids.index(self.ids["end"])]
        cite = ""
        if ids and ids[0] == self.ids["cite_open"] and self.ids["cite_close"] in ids:
            j = ids.index(self.ids["cite_close"]) + 1
            cite, ids = self.tokenizer.decode(ids[:j]).replace(" ", ""), ids[j:]
        text = self.tokenizer.decode(ids).strip()
        return f"{cite} {text}".strip()

    # -- a reader's own language model, LoRA ---------------------------------------------
    @classmethod
    def from_lm(cls, lm: str | os.PathLike | nn.Module, tokenizer: PreTrainedTokenizerBase | None = None,
                **fields) -> "VisionLanguageModel":
        """A VLM on a reader's own causal LM: a local HF checkpoint folder (``config.json``, weights,
        tokenizer files), a loaded ``*ForCausalLM`` with its ``tokenizer``, or a ``CausalLM``. §5.1.

        ``fields`` are any other :class:`VLMConfig` fields (route, mask, image_side, ...). The LM's
        width sets ``hidden`` (projector, gated blocks, cell embeddings); the tokenizer (a copy)
        gains the book's tokens — ``<image>``, ``</image>``, roles, ``[CITE:``, ``]``,
        ``<v_0..K-1>``, ``<p_0..M-1>``, closed answers if asked, ``<bos>``/``<pad>`` if it has
        none — and the embeddings grow to match. The LM runs in float32; a model object is used
        in place (not copied).

        Example::

            vlm = VisionLanguageModel.from_lm("checkpoints/my-gpt2", route="continuous")
            vlm.apply_lora(r=8)                      # LoRA on the LM; projector trains in full
            vlm.save_pretrained("./runs/guide")      # LM config + tokenizer + adapter travel along
            guide = VisionLanguageModel.from_pretrained("./runs/guide") # no checkpoint needed
        """
        if "lm_path" in fields:
            raise ValueError("from_lm sets lm_path itself; pass the checkpoint as its first argument")
        attn = fields.get("attn_implementation", "sdpa")
        if isinstance(lm, (str, os.PathLike)):
            model, tok = load_hf_lm(lm, attn)
            tokenizer = tokenizer if tokenizer is not None else tok
            name = str(lm)
        else:
            if isinstance(lm, CausalLM):
                tokenizer = tokenizer if tokenizer is not None else lm.tokenizer
                lm = lm.model
            if not isinstance(lm, nn.Module):
                raise TypeError(f"from_lm takes a checkpoint folder, a transformers causal LM or a CausalLM, "
                                f"got {type(lm).__name__}")
            model = lm
            hf = model.get_base_model() if _is_peft(model) else model
            name = getattr(getattr(hf, "config", None), "_name_or_path", "") or f"<{type(hf).__name__} in memory>"
        if _is_peft(model):
            raise ValueError("from_lm needs the LM without a peft adapter (the image tokens resize its "
                             "embeddings): build the VLM first, then call vlm.apply_lora()")
        width = CausalLM(model).hidden_size
        if "hidden" in fields and fields["hidden"] != width:
            raise ValueError(f"hidden={fields['hidden']} conflicts with the language model's hidden size {width}; "
                             "leave hidden out (from_lm takes it from the LM)")
        config = VLMConfig(**{**fields, "hidden": width, "lm_path": name})
        return cls(config, tokenizer=tokenizer, lm=model)

    def apply_lora(self, r: int = 8, alpha: int = 16, dropout: float = 0.0, target_modules=None,
                   modules_to_save: Sequence[str] | None = None) -> "VisionLanguageModel":
        """LoRA on the language model only (``peft.get_peft_model``, see :meth:`CausalLM.apply_lora`);
        returns self. The image side, projector and gated blocks keep training in full. §5.8."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)  # LoRA's A matrices are drawn at random: seeded
            self.text.apply_lora(r, alpha, dropout, target_modules, modules_to_save)
        self.lm = self.text.model
        return self

    def merge_lora(self) -> "VisionLanguageModel":
        """Fold the LM's LoRA weights into it (``merge_and_unload``); returns self."""
        self.text.merge_lora()
        self.lm = self.text.model
        return self

    # -- saving -------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """config.json + model.safetensors (PretrainedMixin) + the HF tokenizer files in ``tokenizer/``.

        A reader's LM adds its HF config in ``lm/config.json``; an unmerged LoRA adapter is saved
        by peft in ``adapter/`` and the weights file keeps the LM's original (base) weights.
        """
        out = PretrainedMixin.save_pretrained(self, path)
        self.tokenizer.save_pretrained(out / "tokenizer")
        if self.config.lm_path:
            self.text.config.save_pretrained(out / "lm")
        if self.text.is_peft:
            # the weights under their plain names (a reloaded model is built without LoRA), the
            # adapter beside them, as peft saves it
            state = {k: v for k, v in self.state_dict().items() if not k.startswith("lm.")}
            state.update({"lm." + k: v for k, v in _base_state_dict(self.lm).items()})
            save_file(_dedupe_shared({k: v.detach().contiguous().cpu() for k, v in state.items()}),
                      str(out / WEIGHTS_NAME))
            # the embeddings (new image-token rows included) are in the weights file already
            self.text.model.save_pretrained(out / ADAPTER_DIR, save_embedding_layers=False)
        return out

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        is_trainable: bool = False) -> "VisionLanguageModel":
        """Rebuild a saved model, tokenizer (and a reader's LM, LoRA adapter) included, without training
        anything or reading the original LM checkpoint. ``is_trainable`` keeps a reloaded adapter trainable."""
        from transformers import AutoConfig, AutoTokenizer

        path = Path(path)
        tok_dir = path / "tokenizer"
        if not tok_dir.is_dir():
            raise FileNotFoundError(f"{path} has no tokenizer/ folder")
        tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        lm_config = None
        meta = _read_json(path / CONFIG_NAME) if (path / CONFIG_NAME).is_file() else None
        saved = meta.get("config") if isinstance(meta, dict) else None
        if isinstance(saved, dict) and saved.get("lm_path"):
            if not (path / "lm" / "config.json").is_file():
                raise ValueError(f"{path} holds a VLM on a reader's language model ({saved['lm_path']}) "
                                 "but no lm/config.json to rebuild it from")
            lm_config = AutoConfig.from_pretrained(path / "lm", local_files_only=True)
        original = cls.__init__

        def init(self, config):
            original(self, config, tokenizer=tokenizer, lm=lm_config)

        # PretrainedMixin builds cls(config); hand it the saved tokenizer (and LM config) instead of new ones
        sub = type(cls.__name__, (cls,), {"__init__": init, "__module__": cls.__module__,
                                          "__qualname__": cls.__qualname__})
        model = PretrainedMixin.from_pretrained.__func__(sub, path, device)
        model.__class__ = cls
        if (path / ADAPTER_DIR).is_dir():
            from peft import PeftModel

            with quiet_peft():
                model.lm = PeftModel.from_pretrained(model.lm, path / ADAPTER_DIR, is_trainable=is_trainable)
        return model


def load_hf_lm(path: str | os.PathLike, attn_implementation: str = "sdpa"):
    """``(model, tokenizer or None)`` from a local HF causal-LM checkpoint folder, in float32. §5.1."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    if not (p / "config.json").is_file():
        raise ValueError(f"{p} is not a Hugging Face checkpoint folder (no config.json)")
    if (p / ADAPTER_DIR).is_dir():  # loading the base weights alone would silently drop the adapter
        raise ValueError(f"{p} holds an unmerged LoRA adapter: load it with CausalLM.from_pretrained, "
                         "call merge_lora() and pass that CausalLM")
    model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True, dtype=torch.float32,
                                                 attn_implementation=attn_implementation)
    tok_dir = p / TOKENIZER_DIR if (p / TOKENIZER_DIR).is_dir() else p  # CausalLM.save_pretrained's layout
    has_tok = (tok_dir / "tokenizer.json").is_file() or (tok_dir / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True) if has_tok else None
    return model.eval(), tokenizer


def bring_lm(c: VLMConfig, tokenizer: PreTrainedTokenizerBase | None, lm) -> tuple[PreTrainedTokenizerBase, nn.Module]:
    """The tokenizer (a copy, with the VLM's tokens) and LM of a reader's own language model. §5.1.

    ``lm`` None loads ``c.lm_path``; an HF ``PretrainedConfig`` builds an untrained model of it
    (seeded; :meth:`VisionLanguageModel.from_pretrained` then loads the saved weights).
    """
    from transformers import AutoModelForCausalLM

    if lm is None:
        model, tok = load_hf_lm(c.lm_path, c.attn_implementation)
        tokenizer = tokenizer if tokenizer is not None else tok
    elif isinstance(lm, PretrainedConfig):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            model = AutoModelForCausalLM.from_config(lm, dtype=torch.float32,
                                                     attn_implementation=c.attn_implementation).eval()
    elif isinstance(lm, CausalLM):
        model = lm.model
        tokenizer = tokenizer if tokenizer is not None else lm.tokenizer
    else:
        model = lm
    if tokenizer is None:
        raise ValueError(f"the language model ({c.lm_path}) comes without a tokenizer: pass tokenizer=")
    if _is_peft(model):
        raise ValueError("the language model carries a peft adapter: build the VLM first, then call vlm.apply_lora()")
    # float32 like the rest of the VLM (mixed precision is loop.fit's autocast, not stored weights)
    model = model.float().eval()
    text = CausalLM(model, copy.deepcopy(tokenizer))
    add_vlm_tokens(text, c)
    return text.tokenizer, model


def add_vlm_tokens(text: CausalLM, c: VLMConfig) -> None:
    """Give a reader's tokenizer the book's tokens (idempotent) and grow the LM's embeddings to fit. §5.2.

    ``<bos>``/``<pad>`` only where the tokenizer has no bos/pad token; the special tokens, the
    codebook words ``<v_k>`` and patch positions ``<p_k>`` (contiguous), closed answers if asked.
    """
    t = text.tokenizer
    for role, tok in (("bos_token", BOS), ("pad_token", PAD)):
        if getattr(t, role) is None:
            t.add_special_tokens({role: tok})
    text.add_tokens(list(SPECIAL_TOKENS))
    text.add_image_tokens(codebook_size=c.codebook_size, patches=c.cells, extra=())
    if c.closed_answers:
        add_answer_tokens(t, museum_answers())
    if len(t) > text.vocab_size:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(len(t))  # new rows are sampled around the old ones: keep it reproducible
            text.hf.resize_token_embeddings(len(t))


def check_width(c: VLMConfig, text: CausalLM) -> None:
    """Raise ``ValueError`` unless ``c.hidden`` is the LM's width (and, gated, its decoder width). §5.1."""
    name = type(text.hf).__name__
    if c.hidden != text.hidden_size:
        raise ValueError(f"VLMConfig.hidden={c.hidden} conflicts with the hidden size {text.hidden_size} of the "
                         f"language model ({name} from {c.lm_path}); set hidden={text.hidden_size} "
                         "(VisionLanguageModel.from_lm does)")
    if c.route == "gated" and text.layer_hidden_size != text.hidden_size:
        raise ValueError(f"{name} embeds at width {text.hidden_size} but its decoder runs at "
                         f"{text.layer_hidden_size}: the gated route needs one width (use a prefix route)")


def build_quantizer(c: VLMConfig) -> nn.Module:
    """The discrete route's image tokenizer: Chapter 2's VQ tokenizer (``image_side="vq"``, the
    ``c.vq_artifact`` weights, frozen) or this chapter's k-means :class:`PatchQuantizer` (fitted by
    the trainer). Either maps (B, 3, H, W) images to (B, grid, grid) codes. §5.2."""
    if c.image_side != "vq":
        return PatchQuantizer(c.codebook_size, c.grid, c.quant_sub)
    tok = vq_image_tokenizer(c.vq_artifact)
    check_vq_tokenizer(c, tok)
    return tok.requires_grad_(False).eval()


def vq_image_tokenizer(name: str) -> nn.Module:
    """The :class:`~vlmbook.vq.VQTokenizer` artifact ``name`` (Chapter 2), loaded without training
    when it is committed or cached. On the meta device (``from_pretrained``'s shape check) only
    its architecture is built, from the artifact's ``config.json``."""
    from ..hub import REPO_ARTIFACTS, _spec, cache_dir, load_artifact
    from ..vq.tokenizer import TokenizerConfig, VQTokenizer

    if torch.empty(0).device.type == "meta":
        key = _spec(name).key
        for folder in (REPO_ARTIFACTS / key, cache_dir() / key):
            if (folder / CONFIG_NAME).is_file():
                return VQTokenizer(TokenizerConfig.from_dict(_read_json(folder / CONFIG_NAME)["config"], require_all=True))
        raise ValueError(f"artifact {name!r} is neither committed nor cached")
    return load_artifact(name, VQTokenizer)


def check_vq_tokenizer(c: VLMConfig, tok: nn.Module) -> None:
    """Raise ``ValueError`` naming the :class:`VLMConfig` field that a VQ tokenizer does not fit. §5.2."""
    g, size, K = tok.grid, tok.config.image_size, tok.codebook_size
    if g * g != c.image_tokens:
        raise ValueError(f"VLMConfig.grid={c.grid} asks for image_tokens={c.image_tokens}, but the tokenizer "
                         f"{c.vq_artifact!r} has a {g} x {g} code grid ({g * g} codes per image)")
    if size != c.image_size:
        raise ValueError(f"VLMConfig.image_size={c.image_size}, but the tokenizer {c.vq_artifact!r} reads "
                         f"{size}-px images")
    if K != c.codebook_size:
        raise ValueError(f"VLMConfig.codebook_size={c.codebook_size} must equal the tokenizer "
                         f"{c.vq_artifact!r}'s codebook size {K}")


def build_image_side(c: VLMConfig, feat: int) -> nn.Module | None:
    """The image encoder of ``c.image_side``: the chapter's PatchEncoder, Chapter 4's ViT (weights
    from ``clip-tiny`` are loaded by the trainer, not here), or none (features are given)."""
    if c.image_side == "patch":
        return PatchEncoder(feat, c.grid, c.enc_channels)
    if c.image_side == "clip":
        v = CLIPConfig.tiny()
        return VisionEncoder(v.image_size, v.patch_size, v.vision_dim, v.vision_depth, v.vision_heads, v.mlp_ratio)
    return None


class CellPool(nn.Module):
    """(B, N, D) tokens of a √N × √N patch grid -> (B, grid², D): the mean over each exhibit cell. §5.3.

    A parameter-free compressor that keeps the museum's 3 × 3 layout: image token k is cell k.
    """

    def __init__(self, grid: int):
        super().__init__()
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"x must be (B, N, D), got shape {tuple(x.shape)}")
        B, N, D = x.shape
        g = int(round(N ** 0.5))
        if g * g != N:
            raise ValueError(f"CellPool needs a square grid of tokens, got N={N}")
        y = F.adaptive_avg_pool2d(x.transpose(1, 2).reshape(B, D, g, g), self.grid)
        return y.flatten(2).transpose(1, 2)


def build_compressor(c: VLMConfig, feat: int) -> nn.Module | None:
    """``c.compressor``: none, :class:`CellPool`, or one of Chapter 4's (to M = ``c.image_tokens`` tokens of width ``feat``)."""
    if c.compressor == "none":
        return None
    if c.compressor == "cells":
        return CellPool(c.grid)
    from ..resample import CompressorConfig, make_compressor

    return make_compressor(CompressorConfig(kind=c.compressor, in_dim=feat, dim=feat, out_dim=feat,
                                            num_tokens=c.image_tokens, in_tokens=c.encoder_tokens(), positions=True,
                                            depth=c.compressor_depth))


def batch_block_mask(blocks: torch.Tensor) -> torch.Tensor:
    """(B, T) bool block membership -> (B, T, T) bool: causal, plus full attention inside each
    maximal run of True (batched :func:`~vlmbook.fusion.masks.block_mask`). §5.4."""
    B, T = blocks.shape
    start = blocks & ~F.pad(blocks, (1, 0))[:, :-1]
    seg = torch.cumsum(start.long(), 1)
    allowed = torch.ones(T, T, dtype=torch.bool, device=blocks.device).tril()[None].expand(B, -1, -1)
    return allowed | ((seg[:, :, None] == seg[:, None, :]) & blocks[:, :, None] & blocks[:, None, :])
