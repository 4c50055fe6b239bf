"""Chapter 4: the book's own CLIP-style vision encoder, trained contrastively on museum captions."""
from .clip import (
    CLIP_TINY,
    CLIPConfig,
    CLIPModel,
    CLIPTrainConfig,
    build_tiny_clip,
    caption_batch,
    clip_loss,
    clip_score,
    embed_exhibits,
    load_clip_tiny,
    retrieval_accuracy,
    train_clip,
)
from .text import MuseumTokenizer, TextEncoder, museum_vocabulary
from .vit import VisionEncoder, check_images

__all__ = [
    "CLIP_TINY", "CLIPConfig", "CLIPModel", "CLIPTrainConfig", "build_tiny_clip", "caption_batch", "clip_loss",
    "clip_score", "embed_exhibits", "load_clip_tiny", "retrieval_accuracy", "train_clip", "MuseumTokenizer",
    "TextEncoder", "museum_vocabulary", "VisionEncoder", "check_images",
]
