"""Bring your own language model: one adapter over any Hugging Face causal LM (Chapter 5 §5.1).

A vision-language model needs six things from its language model: the token embedding table,
a decoder that runs on ``inputs_embeds`` with a custom mask and a KV cache, the output head,
the list of decoder blocks (for gated cross-attention), a way to grow the vocabulary, and
saving/loading. Every architecture exposes them under different names and with different
quirks. :class:`CausalLM` hides those differences:

* **Where things live.** Llama, Qwen2/3, Mistral, Gemma and Phi keep their blocks in
  ``model.layers``, GPT-2 in ``transformer.h``, OPT in ``model.decoder.layers``, GPT-NeoX in
  ``gpt_neox.layers``; the adapter finds the backbone through ``base_model`` and the blocks by
  known paths (then by the ``nn.ModuleList`` with ``num_hidden_layers`` entries).
* **Positions.** GPT-2 and OPT learn absolute position embeddings (OPT's table is offset by 2)
  and OPT derives positions from a 2-D padding mask, which breaks when the mask is a 4-D
  prefix-LM mask. The adapter always passes explicit ``position_ids`` (past length + 0..T-1,
  or the cumulative sum of a 2-D padding mask), so every architecture sees the same positions.
* **Masks.** A 4-D mask (bool "may attend", or additive float) is turned into the additive
  float mask in the model's dtype, which ``transformers`` passes unchanged to eager and SDPA
  attention of every architecture here.
* **The KV cache keyword** is ``cache`` in transformers >= 5.2x and ``past_key_values`` before.
* **peft.** A LoRA-wrapped model (``peft.get_peft_model``) is unwrapped to the injected HF model,
  whose backbone then runs the LoRA layers; adapters save, reload and merge.

``save_pretrained`` writes the HF model with HF's own ``save_pretrained`` (config.json +
model.safetensors), the tokenizer as ``tokenizer.json`` (+ its config), and an unmerged LoRA
adapter in ``adapter/``; ``from_pretrained`` restores all of it without training anything.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from transformers import (AutoModelForCausalLM, AutoTokenizer, Cache, DynamicCache, PretrainedConfig, PreTrainedModel,
                          PreTrainedTokenizerBase)

ADAPTER_DIR = "adapter"
TOKENIZER_DIR = "tokenizer"
META_NAME = "vlmbook_lm.json"
# Decoder-block lists, relative to the backbone (``hf.base_model``), in the order they are tried.
_LAYER_PATHS = ("layers", "h", "decoder.layers", "blocks", "transformer.h", "model.layers")
_FLASH = ("flash_attention_2", "flash_attention_3", "flash_attention")


def patch_token(k: int) -> str:
    """The vocabulary string of image patch position ``k`` (citations): ``'<p_k>'``. Chapter 5 §5.2."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"a patch position must be an int >= 0, got {k!r}")
    return f"<p_{k}>"


@contextlib.contextmanager
def quiet_peft():
    """Silence the one deprecation peft 0.21 triggers inside transformers >= 5.2x (not our call).

    ``PeftModel.__init__`` reads ``model.is_gradient_checkpointing``, which transformers now
    deprecates; the project turns deprecations into test errors, so wrap peft entry points.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _get_path(module: nn.Module, path: str):
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def causal_position_ids(batch: int, length: int, past: int = 0, attention_mask: torch.Tensor | None = None,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, T) position ids of T new tokens after ``past`` cached ones. §5.1.

    With a 2-D padding mask (B, past + T) positions count only real tokens (left padding gets
    position 0), as Llama's generate does; otherwise they are ``past, ..., past + T - 1``.
    """
    if attention_mask is not None and attention_mask.ndim == 2:
        if attention_mask.shape != (batch, past + length):
            raise ValueError(f"2-D attention_mask must be (B, past + T) = {(batch, past + length)}, "
                             f"got {tuple(attention_mask.shape)}")
        pos = attention_mask.long().cumsum(1) - 1
        return pos.clamp_min(0)[:, past:].to(device)
    return torch.arange(past, past + length, device=device).expand(batch, -1)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, T, S) bool "may attend" or additive float mask -> additive float mask in ``dtype``. §5.4."""
    if mask.ndim != 4:
        raise ValueError(f"additive_mask needs a 4-D (B, 1, T, S) mask, got shape {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
    if not mask.dtype.is_floating_point:
        raise ValueError(f"a 4-D mask must be bool or floating point, got {mask.dtype}")
    # clamp so a float32 -inf/min mask stays finite in bf16/fp16
    return mask.to(dtype).clamp_min(torch.finfo(dtype).min)


class CausalLM(nn.Module):
    """Any HF causal LM (plain or peft-wrapped) + its tokenizer, as a VLM needs it. Chapter 5 §5.1.

    ``model`` is a ``transformers`` ``*ForCausalLM`` or a ``peft.PeftModel`` around one;
    ``tokenizer`` is a ``transformers`` fast tokenizer (may be None for id-only use).
    """

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase | None = None):
        super().__init__()
        hf = model.get_base_model() if _is_peft(model) else model
        if not isinstance(hf, PreTrainedModel) or hf.get_output_embeddings() is None:
            raise TypeError(f"CausalLM needs a transformers causal LM (with an output head), got {type(hf).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        #: builds the empty KV cache of :meth:`new_cache` (Chapter 6 §6.5 swaps in a compressed one)
        self.cache_factory: Callable[[PretrainedConfig], Cache] | None = None

    # -- what lives where -------------------------------------------------------------
    @property
    def hf(self) -> PreTrainedModel:
        """The ``*ForCausalLM`` module (under peft: the base model with LoRA layers injected)."""
        return self.model.get_base_model() if _is_peft(self.model) else self.model

    @property
    def backbone(self) -> nn.Module:
        """The decoder without the head (``model`` / ``transformer`` / ``gpt_neox`` ...)."""
        base = self.hf.base_model
        if base is self.hf:
            raise TypeError(f"{type(self.hf).__name__} has no separate backbone (base_model_prefix)")
        return base

    @property
    def config(self):
        """The HF config of the language model."""
        return self.hf.config

    @property
    def is_peft(self) -> bool:
        """True when the LM is wrapped by peft (LoRA adapters present, not merged)."""
        return _is_peft(self.model)

    @property
    def hidden_size(self) -> int:
        """D: width of ``embed`` output and ``decode`` output (OPT: ``word_embed_proj_dim``)."""
        return self.hf.get_input_embeddings().embedding_dim

    @property
    def layer_hidden_size(self) -> int:
        """Width of the hidden states between decoder blocks (what a gated block sees)."""
        return int(getattr(self.config, "hidden_size", self.hidden_size))

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding table = width of the logits (may exceed ``len(tokenizer)``)."""
        return self.hf.get_input_embeddings().num_embeddings

    @property
    def embed_scale(self) -> float:
        """Factor the embedding module applies to its rows (sqrt(D) for Gemma, else 1.0)."""
        return float(getattr(self.hf.get_input_embeddings(), "scalar_embed_scale", 1.0))

    @property
    def device(self) -> torch.device:
        return self.hf.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.hf.get_input_embeddings().weight.dtype

    @property
    def max_positions(self) -> int | None:
        """Length limit of a learned absolute position table (GPT-2, OPT); None for rotary models."""
        base = self.backbone
        table = getattr(base, "wpe", None) or getattr(base, "embed_positions", None) \
            or getattr(getattr(base, "decoder", None), "embed_positions", None)
        if not isinstance(table, nn.Embedding):
            return None
        return table.num_embeddings - int(getattr(table, "offset", 0))

    def decoder_layers(self) -> nn.ModuleList:
        """The decoder blocks in order (``model.layers``, ``transformer.h``, ``model.decoder.layers``...)."""
        base = self.backbone
        n = getattr(self.config, "num_hidden_layers", None)
        for path in _LAYER_PATHS:
            layers = _get_path(base, path)
            if isinstance(layers, nn.ModuleList) and (n is None or len(layers) == n):
                return layers
        found = [m for m in base.modules() if isinstance(m, nn.ModuleList) and len(m) == n]
        if len(found) == 1:
            return found[0]
        raise TypeError(f"cannot find the decoder layers of {type(self.hf).__name__}")

    # -- vocabulary ---------------------------------------------------------------------
    def add_tokens(self, tokens: Sequence[str], special: bool = True, pad_to_multiple_of: int | None = None) -> list[int]:
        """Add ``tokens`` to the tokenizer, grow the embeddings (and tied head); returns their ids. §5.2.

        Tokens already in the vocabulary keep their ids. New rows are initialised by
        ``transformers`` (mean of the old embeddings); the head follows when weights are tied.
        """
        if self.tokenizer is None:
            raise ValueError("add_tokens needs a tokenizer")
        tokens = list(tokens)
        if not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise ValueError("add_tokens needs a non-empty list of non-empty strings")
        self.tokenizer.add_tokens(tokens, special_tokens=special)
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        need = len(self.tokenizer)
        if need > self.vocab_size:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(need)  # resizing samples new rows; keep it reproducible
                self.hf.resize_token_embeddings(need, pad_to_multiple_of=pad_to_multiple_of)
        return ids

    def add_image_tokens(self, codebook_size: int = 0, patches: int = 0,
                         extra: Sequence[str] = ("<image>", "</image>")) -> dict[str, int]:
        """Add ``extra`` markers, ``<v_0..K-1>`` codes and ``<p_0..P-1>`` patches (contiguous). §5.2.

        Returns ids: each of ``extra`` by name, plus ``"v0"`` / ``"p0"`` (first id of each family).
        """
        from .text import visual_token

        for name, n in (("codebook_size", codebook_size), ("patches", patches)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"{name} must be an int >= 0, got {n!r}")
        out: dict[str, int] = {}
        if extra:
            out.update(zip(extra, self.add_tokens(list(extra))))
        for key, n, fn in (("v0", codebook_size, visual_token), ("p0", patches, patch_token)):
            if n:
                ids = self.add_tokens([fn(k) for k in range(n)])
                if ids != list(range(ids[0], ids[0] + n)):
                    raise ValueError(f"{fn(0)}... did not receive contiguous ids (some already existed)")
                out[key] = ids[0]
        return out

    # -- the three calls a VLM makes --------------------------------------------------------
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, D) input embeddings, as the model's own embedding module gives them. §5.2.

        Gemma's embedding module already multiplies by sqrt(D) (:attr:`embed_scale`); image
        features scattered in place of placeholders are not scaled, so a projector must learn
        (or be initialised to) that scale.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got range "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}]")
        return self.hf.get_input_embeddings()(input_ids)

    def decode(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
               position_ids: torch.Tensor | None = None, cache=None):
        """(B, T, D) embeds -> ``(hidden (B, T, D), cache)``: the decoder without its head. §5.6.

        ``attention_mask``: None (causal), a 2-D (B, past + T) padding mask, or a 4-D
        (B or 1, 1, T, past + T) bool ("may attend") / additive float mask used as given
        (prefix-LM blocks). ``position_ids`` (B, T) default to the causal positions after the
        cache. ``cache`` is a ``DynamicCache`` (from :meth:`new_cache`), updated in place and
        returned; None runs without a cache and returns None.
        """
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.hidden_size:
            raise ValueError(f"inputs_embeds must be (B, T, {self.hidden_size}), got {tuple(inputs_embeds.shape)}")
        B, T, _ = inputs_embeds.shape
        past = cache.get_seq_length() if cache is not None else 0
        mask = attention_mask
        if mask is not None:
            if mask.ndim == 4:
                if getattr(self.config, "_attn_implementation", None) in _FLASH:
                    raise ValueError("flash attention cannot take a custom 4-D mask; load the LM with sdpa or eager")
                if mask.shape[0] not in (1, B) or mask.shape[1] != 1 or mask.shape[2:] != (T, past + T):
                    raise ValueError(f"4-D attention_mask must be (B, 1, T, past + T) = {(B, 1, T, past + T)}, "
                                     f"got {tuple(mask.shape)}")
                mask = additive_mask(mask, inputs_embeds.dtype).expand(B, -1, -1, -1)
            elif mask.ndim != 2:
                raise ValueError(f"attention_mask must be 2-D (B, S) or 4-D (B, 1, T, S), got {tuple(mask.shape)}")
        if position_ids is None:
            position_ids = causal_position_ids(B, T, past, attention_mask if mask is not None and mask.ndim == 2
                                               else None, inputs_embeds.device)
        elif position_ids.shape != (B, T):
            raise ValueError(f"position_ids must be (B, T) = {(B, T)}, got {tuple(position_ids.shape)}")
        limit = self.max_positions
        if limit is not None and position_ids.numel() and int(position_ids.max()) >= limit:
            raise ValueError(f"position {int(position_ids.max())} is beyond the {limit} learned positions of "
                             f"{type(self.hf).__name__}; shorten the sequence")
        kw = {}
        if cache is not None:
            kw[_cache_keyword(self.backbone)] = cache
        out = self.backbone(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids,
                            use_cache=cache is not None, **kw)
        if cache is None:
            return out.last_hidden_state, None
        # dict lookups: the ``past_key_values`` attribute of a 5.2x output logs a deprecation
        new_cache = out.get("cache", None)
        if new_cache is None:
            new_cache = out.get("past_key_values", None)
        return out.last_hidden_state, (cache if new_cache is None else new_cache)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) hidden states -> (..., V) logits, with the model's final soft-cap if it has one. §5.6."""
        logits = self.hf.get_output_embeddings()(hidden)
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, V) logits through :meth:`embed`, :meth:`decode`, :meth:`head`."""
        return self.head(self.decode(self.embed(input_ids), attention_mask)[0])

    def new_cache(self) -> Cache:
        """An empty KV cache for :meth:`decode`: a ``DynamicCache``, or ``cache_factory(config)`` if set."""
        if self.cache_factory is not None:
            return self.cache_factory(self.config)
        return DynamicCache(config=self.config)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 8, stop: int | None = None) -> torch.Tensor:
        """Greedy continuation (B, ≤ max_new_tokens) of (B, T) ids with a KV cache. §5.6.

        Rows that emitted ``stop`` keep emitting it; decoding ends when all rows have.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        cache = self.new_cache()
        h, cache = self.decode(self.embed(input_ids), cache=cache)
        out, done = [], torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            nxt = self.head(h[:, -1]).argmax(-1)
            if stop is not None:
                nxt = torch.where(done, torch.full_like(nxt, stop), nxt)
                done |= nxt == stop
            out.append(nxt)
            if stop is not None and bool(done.all()):
                break
            h, cache = self.decode(self.embed(nxt[:, None]), cache=cache)
        return torch.stack(out, 1)

    # -- LoRA -------------------------------------------------------------------------------
    def apply_lora(self, r: int = 8, alpha: int = 16, dropout: float = 0.0, target_modules=None,
                   modules_to_save: Sequence[str] | None = None) -> "CausalLM":
        """Wrap the LM with ``peft.get_peft_model`` (LoRA on the LM only); returns self. §5.8.

        ``target_modules`` None uses peft's per-architecture default (q/v projections; GPT-2's
        ``c_attn``, GPT-NeoX's ``query_key_value``). Pass ``modules_to_save=["embed_tokens",
        "lm_head"]`` (names per architecture) to train rows of newly added tokens as well.
        """
        from peft import LoraConfig, get_peft_model

        if self.is_peft:
            raise ValueError("the LM already carries a peft adapter; merge_lora() first")
        conv1d = self.config.model_type == "gpt2"  # GPT-2 stores weights transposed (Conv1D)
        cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                         modules_to_save=list(modules_to_save) if modules_to_save else None,
                         fan_in_fan_out=conv1d, task_type="CAUSAL_LM")
        with quiet_peft():
            self.model = get_peft_model(self.model, cfg)
        return self

    def merge_lora(self) -> "CausalLM":
        """Fold the LoRA weights into the base model (``merge_and_unload``); returns self."""
        if not self.is_peft:
            raise ValueError("the LM has no peft adapter to merge")
        self.model = self.model.merge_and_unload()
        return self

    # -- saving -----------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """HF ``config.json`` + ``model.safetensors``, ``tokenizer/`` and an unmerged LoRA ``adapter/``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.is_peft:
            self.model.save_pretrained(path / ADAPTER_DIR)
            self.hf.save_pretrained(path, state_dict=_base_state_dict(self.hf))
        else:
            self.hf.save_pretrained(path)
        if self.tokenizer is not None:
            save_tokenizer(self.tokenizer, path / TOKENIZER_DIR)
        meta = {"class": type(self.hf).__name__, "peft": self.is_peft, "tokenizer": self.tokenizer is not None}
        (path / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        attn_implementation: str | None = "sdpa", is_trainable: bool = False) -> "CausalLM":
        """Load a folder written by :meth:`save_pretrained`, or any local HF causal-LM checkpoint.

        Nothing is downloaded or trained: the tokenizer comes from ``tokenizer/`` (or the folder
        itself), a LoRA adapter from ``adapter/`` when present.
        """
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a Hugging Face checkpoint folder (no config.json)")
        kw = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **kw).to(device).eval()
        if (path / ADAPTER_DIR).is_dir():
            from peft import PeftModel

            with quiet_peft():
                model = PeftModel.from_pretrained(model, path / ADAPTER_DIR, is_trainable=is_trainable)
        tok_dir = path / TOKENIZER_DIR if (path / TOKENIZER_DIR).is_dir() else path
        tokenizer = load_tokenizer(tok_dir) if (tok_dir / "tokenizer.json").is_file() \
            or (tok_dir / "tokenizer_config.json").is_file() else None
        return cls(model, tokenizer)


def _cache_keyword(backbone: nn.Module) -> str:
    """The KV-cache argument's name: ``cache`` in transformers >= 5.2x, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


def _base_state_dict(hf: nn.Module) -> dict[str, torch.Tensor]:
    """State dict of a peft-injected model with the LoRA parts removed (the original weights)."""
    out = {}
    for k, v in hf.state_dict().items():
        if "lora_" in k or ".modules_to_save." in k:
            continue
        out[k.replace(".base_layer.", ".").replace(".original_module.", ".")] = v
    return out


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike) -> Path:
    """Write a fast tokenizer as ``tokenizer.json`` (+ ``tokenizer_config.json``) into ``path``. §5.1."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"save_tokenizer needs a fast (tokenizers-backed) tokenizer, got {type(tokenizer).__name__}")
    path = Path(path)
    tokenizer.save_pretrained(path)
    return path


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Load a tokenizer written by :func:`save_tokenizer` (local files only, nothing retrained). §5.1."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a tokenizer folder")
    return AutoTokenizer.from_pretrained(path, local_files_only=True)
