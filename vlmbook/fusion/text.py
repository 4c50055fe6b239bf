"""The text side: a BPE tokenizer trained on the museum corpus and a small Llama LM (Chapter 5 §5.1).

The tokenizer is trained with Hugging Face ``tokenizers`` on captions, questions and answers of
training exhibits, then wrapped as a ``transformers`` fast tokenizer with the special tokens the
book needs: ``<image>``/``</image>`` (continuous placeholders and the end of an image block),
``<v_0> … <v_{K-1}>`` (discrete image tokens), the citation marker ``[CITE:`` … ``]`` and chat
roles. The language model is ``transformers.LlamaForCausalLM`` built from a config, or any local
causal-LM checkpoint loaded from a folder.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Iterable

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PretrainedConfig,
                          PreTrainedModel, PreTrainedTokenizerBase, Qwen3Config, Qwen3ForCausalLM)

from ..config import Config

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
IMAGE, IMAGE_END = "<image>", "</image>"
CITE_OPEN, CITE_CLOSE = "[CITE:", "]"
USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
ROLE_TOKENS = (USER, ASSISTANT, END)
SPECIAL_TOKENS = (IMAGE, IMAGE_END, CITE_OPEN, CITE_CLOSE, *ROLE_TOKENS)


def visual_token(k: int) -> str:
    """The vocabulary string of discrete image code ``k``: ``'<v_k>'``. Chapter 5 §5.2."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"a visual code must be an int >= 0, got {k!r}")
    return f"<v_{k}>"


def patch_token(k: int) -> str:
    """The vocabulary string naming patch position ``k`` in a citation: ``'<p_k>'``. Chapter 5 §5.8.

    A family of its own, apart from the codebook words ``<v_k>``: a citation says *where*, a
    codebook word says *what* a patch looks like, and the two must never share an id.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"a patch position must be an int >= 0, got {k!r}")
    return f"<p_{k}>"


def museum_answers() -> tuple[str, ...]:
    """Every answer string a museum question can have (the closed answer vocabulary). §5.7."""
    from ..data.museum import COLOUR_NAMES, LOCATIONS, SHAPES

    words = [*COLOUR_NAMES, *SHAPES, "yes", "no", *(str(n) for n in range(10)), *LOCATIONS]
    words += [f"{c} {s}" for c in COLOUR_NAMES for s in SHAPES]
    return tuple(dict.fromkeys(words))


def museum_corpus(n_scenes: int = 2000, seed: int = 0) -> list[str]:
    """Captions, questions and answers of ``n_scenes`` training exhibits (the tokenizer's corpus)."""
    from ..data.museum import caption, generate_scene, questions

    if n_scenes < 1:
        raise ValueError(f"n_scenes must be >= 1, got {n_scenes}")
    docs = []
    for i in range(n_scenes):
        sc = generate_scene("train", i, seed)
        docs.append(caption(sc))
        for qa in questions(sc):
            docs.append(f"{qa.question} {qa.answer}")
    return docs


def train_bpe_tokenizer(corpus: Iterable[str], vocab_size: int = 384, codebook_size: int = 0) -> PreTrainedTokenizerBase:
    """Train a byte-level BPE on ``corpus`` and wrap it as a transformers fast tokenizer. §5.1.

    The BPE merges are learned with ``vocab_size`` entries (bytes + merges + ``<pad> <unk> <bos>
    <eos>``); the book's special tokens and ``codebook_size`` visual tokens are added on top.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 260 + 4:
        raise ValueError(f"vocab_size must be >= 264 (256 bytes + 4 specials + a few merges), got {vocab_size}")
    if codebook_size < 0:
        raise ValueError(f"codebook_size must be >= 0, got {codebook_size}")
    docs = list(corpus)
    if not docs:
        raise ValueError("train_bpe_tokenizer needs a non-empty corpus")
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK)
    fast.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    if codebook_size:
        add_visual_tokens(fast, codebook_size)
    return fast


def add_visual_tokens(tokenizer: PreTrainedTokenizerBase, codebook_size: int) -> int:
    """Add ``<v_0> … <v_{K-1}>`` to the vocabulary (contiguous ids); returns the id of ``<v_0>``. §5.2."""
    if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 1:
        raise ValueError(f"codebook_size must be an int >= 1, got {codebook_size!r}")
    names = [visual_token(k) for k in range(codebook_size)]
    tokenizer.add_tokens(names, special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(names)
    if ids != list(range(ids[0], ids[0] + codebook_size)):
        raise ValueError("visual tokens did not receive contiguous ids; add them to a fresh tokenizer")
    return ids[0]


def add_patch_tokens(tokenizer: PreTrainedTokenizerBase, n: int) -> int:
    """Add ``<p_0> … <p_{n-1}>`` (citation patch positions, contiguous ids); returns the id of ``<p_0>``. §5.8."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    names = [patch_token(k) for k in range(n)]
    tokenizer.add_tokens(names, special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(names)
    if ids != list(range(ids[0], ids[0] + n)):
        raise ValueError("patch tokens did not receive contiguous ids; add them to a fresh tokenizer")
    return ids[0]


def add_answer_tokens(tokenizer: PreTrainedTokenizerBase, answers: Iterable[str]) -> list[int]:
    """Make every word of every answer one whole-word token (a closed answer vocabulary); returns
    the words' ids. §5.7.

    A one-word answer (``'red'``, ``'yes'``, ``'3'``) is then one token. A two-word answer is two of
    these words, never one compound token: the question "Where is the red star?" must spell the
    object with the same ``red`` and ``star`` that the colour and shape questions use, or the model
    has 64 opaque compound words to match against the image, each seen rarely. Whole-word matching
    keeps ``'red'`` from matching inside ``'reds'``.
    """
    from tokenizers import AddedToken

    answers = list(dict.fromkeys(answers))
    if not answers or any(not isinstance(a, str) or not a.strip() for a in answers):
        raise ValueError("answers must be a non-empty list of non-blank strings")
    words = list(dict.fromkeys(w for a in answers for w in a.split()))
    tokenizer.add_tokens([AddedToken(w, single_word=True, normalized=False) for w in words])
    return tokenizer.convert_tokens_to_ids(words)


@functools.lru_cache(maxsize=8)
def _cached_museum_tokenizer(vocab_size: int, codebook_size: int, n_scenes: int, patch_tokens: int,
                             closed_answers: bool) -> PreTrainedTokenizerBase:
    tok = train_bpe_tokenizer(museum_corpus(n_scenes), vocab_size, codebook_size)
    if patch_tokens:
        add_patch_tokens(tok, patch_tokens)
    if closed_answers:
        add_answer_tokens(tok, museum_answers())
    return tok


def museum_tokenizer(vocab_size: int = 384, codebook_size: int = 64, n_scenes: int = 1000, patch_tokens: int = 0,
                     closed_answers: bool = False) -> PreTrainedTokenizerBase:
    """The chapter's tokenizer: BPE on the museum corpus + special, visual ``<v_k>``, patch ``<p_k>``
    and (optionally) whole-answer tokens (a fresh copy). §5.1."""
    import copy

    return copy.deepcopy(_cached_museum_tokenizer(vocab_size, codebook_size, n_scenes, patch_tokens, closed_answers))


@dataclasses.dataclass
class LMConfig(Config):
    """A small Llama-architecture causal LM (``transformers.LlamaConfig`` fields, renamed briefly)."""

    vocab_size: int = 512
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    intermediate: int = 384
    max_positions: int = 256
    attn_implementation: str = "sdpa"
    qk_norm: bool = False

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.qk_norm, bool):
            self._fail("qk_norm", "must be True or False")
        self.check_positive("vocab_size", "hidden", "layers", "heads", "kv_heads", "intermediate", "max_positions")
        self.check_divisible("hidden", self.heads, "heads")
        self.check_divisible("heads", self.kv_heads, "kv_heads")
        self.check_choice("attn_implementation", ("eager", "sdpa"))

    @classmethod
    def tiny(cls) -> "LMConfig":
        return cls()

    @classmethod
    def base(cls) -> "LMConfig":
        return cls(hidden=384, layers=8, heads=6, kv_heads=2, intermediate=1024, max_positions=512)

    def to_llama(self) -> PretrainedConfig:
        """The equivalent ``transformers`` config: ``LlamaConfig``, or with ``qk_norm`` a ``Qwen3Config``
        — the same decoder with an RMSNorm on each head's queries and keys. §5.7."""
        if self.qk_norm:
            cfg = Qwen3Config(vocab_size=self.vocab_size, hidden_size=self.hidden, num_hidden_layers=self.layers,
                              num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
                              head_dim=self.hidden // self.heads, intermediate_size=self.intermediate,
                              max_position_embeddings=self.max_positions, tie_word_embeddings=True, pad_token_id=0,
                              bos_token_id=2, eos_token_id=3)
            cfg._attn_implementation = self.attn_implementation
            return cfg
        cfg = LlamaConfig(vocab_size=self.vocab_size, hidden_size=self.hidden, num_hidden_layers=self.layers,
                          num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
                          intermediate_size=self.intermediate, max_position_embeddings=self.max_positions,
                          tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=3)
        cfg._attn_implementation = self.attn_implementation
        return cfg


def build_lm(cfg: LMConfig, seed: int = 0) -> PreTrainedModel:
    """A freshly initialised ``LlamaForCausalLM`` (``Qwen3ForCausalLM`` with ``qk_norm``) from an :class:`LMConfig` (seeded). §5.1."""
    if not isinstance(cfg, LMConfig):
        raise ValueError(f"build_lm needs an LMConfig, got {type(cfg).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = cfg.to_llama()
        model = Qwen3ForCausalLM(hf) if cfg.qk_norm else LlamaForCausalLM(hf)
    return model.eval()


def load_causal_lm(path: str | os.PathLike, attn_implementation: str = "sdpa"):
    """Load any local Hugging Face causal-LM checkpoint and its tokenizer from a folder. §5.1.

    Nothing is downloaded: ``path`` must hold ``config.json``, the weights and the tokenizer files.
    Returns ``(model, tokenizer)``.
    """
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ValueError(f"{p} is not a Hugging Face checkpoint folder (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True, attn_implementation=attn_implementation)
    tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True)
    return model.eval(), tokenizer
