"""Chapter 5 — Fusion: putting image tokens into a language model."""
from ..hub import ArtifactSpec, register_artifact
from .continuous import PatchEncoder, Projector, merge_image_features, truncate_ids
from .discrete import PROMPT_TEMPLATE, PatchQuantizer, codes_to_token_ids, image_string, render_prompt, token_ids_to_codes
from .gated import GatedAdapter, GatedCrossAttention
from .masks import block_mask, causal_mask, image_spans, media_mask, prefix_lm_mask, to_4d
from .model import RECIPE, ROUTES, CellPool, PrefixCache, VisionLanguageModel, VLMConfig, batch_block_mask
from .text import (LMConfig, add_answer_tokens, add_patch_tokens, add_visual_tokens, build_lm, load_causal_lm,
                   museum_answers, museum_corpus, museum_tokenizer, patch_token, train_bpe_tokenizer, visual_token)

VLM_TINY = register_artifact(ArtifactSpec(
    "vlm-tiny", "4", "vlmbook.fusion.train:build_vlm_tiny", seed=0,
    description="VLMConfig.tiny(): clip-tiny ViT and a one-layer Perceiver Resampler (9 latents) warmed up together "
                "for 1,500 steps on per-cell labels of fresh exhibits, then frozen; the recipe (cite first, learned "
                "cell embeddings, question first, closed answer words, QK-norm); DemoConfig.offline(): 3,000 LM "
                "steps on one thread, exhibits with few objects first (curriculum)"))

CLIP_CELLS_TINY = register_artifact(ArtifactSpec(
    "clip-cells-tiny", "1", "vlmbook.fusion.warmup:build_cell_encoder", seed=0,
    description="Chapter 4's clip-tiny ViT and a one-layer Perceiver Resampler (9 latents) trained together for "
                "1,500 steps (batch 64, lr 3e-3, one thread) on per-cell colour, shape and size labels of fresh "
                "exhibits, so that latent k describes cell k: the image side of vlm-tiny"))

__all__ = [
    "PatchEncoder", "Projector", "merge_image_features", "truncate_ids", "PROMPT_TEMPLATE", "PatchQuantizer",
    "codes_to_token_ids", "image_string", "render_prompt", "token_ids_to_codes", "GatedAdapter",
    "GatedCrossAttention", "block_mask", "causal_mask", "image_spans", "media_mask", "prefix_lm_mask", "to_4d",
    "VLM_TINY", "CLIP_CELLS_TINY", "RECIPE", "ROUTES", "CellPool", "PrefixCache", "VisionLanguageModel", "VLMConfig", "batch_block_mask",
    "LMConfig", "add_answer_tokens", "add_patch_tokens", "add_visual_tokens", "build_lm", "load_causal_lm",
    "museum_answers", "museum_corpus", "museum_tokenizer", "patch_token", "train_bpe_tokenizer", "visual_token",
]
