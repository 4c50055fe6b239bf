"""Chapter 4: from hundreds of patch features to a few tokens a language model can afford.

Token compressors with one interface (B, N, D) -> (B, M, D'): the Perceiver Resampler, Q-Former
queries, pixel shuffle, TokenLearner and ToMe; their cost against full self-attention; position
and media embeddings; and choosing the token budget M for a context limit.
"""
from .budget import (  # noqa
    PROBE_GROUPS,
    BudgetCurve,
    ProbeConfig,
    ProbeData,
    majority_accuracy,
    probe_answers,
    probe_questions,
    valid_budgets,
    choose_budget,
    fit_budget_curve,
    probe_accuracy,
    probe_features,
    budget_sweep,
)
from .compressors import (
    KINDS,
    CompressorConfig,
    PerceiverResampler,
    PixelShuffle,
    QFormer,
    TokenCompressor,
    TokenLearner,
    ToMe,
    load_compressor,
    make_compressor,
    merge_tokens,
    pixel_shuffle,
    tome_schedule,
)
from .cost import (
    attention_flops,
    cost_table,
    count_flops,
    ffn_flops,
    perceiver_flops,
    qformer_flops,
    self_attention_layer_flops,
    time_forward,
)
from .layers import Attention, Block, FeedForward
from .positions import MediaEmbedding, sincos_1d, sincos_2d

__all__ = [
    "PROBE_GROUPS", "BudgetCurve", "ProbeConfig", "ProbeData", "majority_accuracy", "probe_answers",
    "probe_questions", "valid_budgets", "choose_budget", "fit_budget_curve", "probe_accuracy", "probe_features",
    "budget_sweep", "KINDS", "CompressorConfig", "PerceiverResampler", "PixelShuffle", "QFormer", "TokenCompressor",
    "TokenLearner", "ToMe", "load_compressor", "make_compressor", "merge_tokens", "pixel_shuffle", "tome_schedule",
    "attention_flops", "cost_table", "count_flops", "ffn_flops", "perceiver_flops", "qformer_flops",
    "self_attention_layer_flops", "time_forward", "Attention", "Block", "FeedForward", "MediaEmbedding",
    "sincos_1d", "sincos_2d",
]
