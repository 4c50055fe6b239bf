"""Chapter 5 — Fusion: putting image tokens into a language model."""
from ..hub import ArtifactSpec, register_artifact
from .continuous import PatchEncoder, Projector, merge_image_features, truncate_ids
from .discrete import PROMPT_TEMPLATE, PatchQuantizer, codes_to_token_ids, image_string, render_prompt, token_ids_to_codes
from .gated import GatedAdapter, GatedCrossAttention
from .masks import block_mask, causal_mask, image_spans, media_mask, prefix_lm_mask, to_4d
from .model import ROUTES, PrefixCache, VisionLanguageModel, VLMConfig
from .text import (LMConfig, add_visual_tokens, build_lm, load_causal_lm, museum_corpus, museum_tokenizer,
                   train_bpe_tokenizer, visual_token)

VLM_TINY = register_artifact(ArtifactSpec(
    "vlm-tiny", "1", "vlmbook.fusion.train:build_vlm_tiny", seed=0,
    description="VLMConfig.tiny() continuous route, DemoConfig.offline(): 15,000 LM steps on one core"))

__all__ = [
    "PatchEncoder", "Projector", "merge_image_features", "truncate_ids", "PROMPT_TEMPLATE", "PatchQuantizer",
    "codes_to_token_ids", "image_string", "render_prompt", "token_ids_to_codes", "GatedAdapter",
    "GatedCrossAttention", "block_mask", "causal_mask", "image_spans", "media_mask", "prefix_lm_mask", "to_4d",
    "VLM_TINY", "ROUTES", "PrefixCache", "VisionLanguageModel", "VLMConfig", "LMConfig", "add_visual_tokens", "build_lm",
    "load_causal_lm", "museum_corpus", "museum_tokenizer", "train_bpe_tokenizer", "visual_token",
]
