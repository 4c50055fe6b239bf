"""Chapter 3 — Learned codecs: GDN, entropy models, the scale hyperprior, range coding and real files.

Public API (see each module): ``GDN``, ``EntropyBottleneck``, ``GaussianConditional``,
``HyperpriorCodec`` / ``CodecConfig``, the coders ``rangecoder`` (readable), ``fastcoder`` (the same, compiled: what codecs use) and ``rans`` (interleaved, NumPy),
``encode_image`` / ``decode_image`` (the ``.vlmb`` file format, :mod:`.fileformat`), ``bd_rate``
(:mod:`.metrics`), the context model (:mod:`.context`) and token storage (:mod:`.storage`).
"""
from ..hub import ArtifactSpec, register_artifact
from .cdf import BitstreamError, CdfTables, quantize_pmf
from .entropy import (EntropyBottleneck, GaussianConditional, default_scale_table, discretized_likelihood,
                      quantize, rate_gradients)
from .fileformat import decode_image, encode_image
from .layers import GDN, lower_bound
from .metrics import bd_rate
from .models import (BASE_LAMBDA, LAMBDAS, MS_BASE_LAMBDA, MS_LAMBDAS, MSW_LAMBDAS, STRIDE, CodecConfig, HyperpriorCodec,
                     TrainSpec, pad_to, psnr, rd_loss, train_codec, widen)

register_artifact(ArtifactSpec("codec-base", "1", "vlmbook.codec.models:build_base", seed=0,
                               description=f"tiny scale hyperprior, lambda={BASE_LAMBDA}, start of every rate point"))
for _q in range(1, len(LAMBDAS) + 1):
    register_artifact(ArtifactSpec(f"codec-q{_q}", "2", f"vlmbook.codec.models:build_q{_q}", seed=0,
                                   description=f"codec-base fine-tuned to lambda={LAMBDAS[_q - 1]}"))

register_artifact(ArtifactSpec("codec-ms-base", "1", "vlmbook.codec.models:build_ms_base", seed=0,
                               description=f"codec-base as a mean-scale hyperprior, lambda={MS_BASE_LAMBDA}"))
for _q in range(1, len(MS_LAMBDAS) + 1):
    register_artifact(ArtifactSpec(f"codec-ms-q{_q}", "2", f"vlmbook.codec.models:build_ms_q{_q}", seed=0,
                                   description=f"codec-ms-base fine-tuned to lambda={MS_LAMBDAS[_q - 1]}"))
    register_artifact(ArtifactSpec(f"codec-ctx-q{_q}", "1", f"vlmbook.codec.context:build_ctx_q{_q}", seed=0,
                                   description=f"codec-ms-base with a context model, trained jointly at lambda={MS_LAMBDAS[_q - 1]}"))
for _q in range(1, len(MSW_LAMBDAS) + 1):
    register_artifact(ArtifactSpec(f"codec-msw-q{_q}", "1", f"vlmbook.codec.models:build_msw_q{_q}", seed=0,
                                   description=f"codec-ms-q{len(MS_LAMBDAS)} widened to 96 latent channels, "
                                               f"lambda={MSW_LAMBDAS[_q - 1]}"))

__all__ = [
    "BitstreamError", "CdfTables", "quantize_pmf", "EntropyBottleneck", "GaussianConditional",
    "default_scale_table", "discretized_likelihood", "quantize", "rate_gradients", "GDN", "lower_bound",
    "encode_image", "decode_image", "bd_rate",
    "BASE_LAMBDA", "LAMBDAS", "MS_BASE_LAMBDA", "MS_LAMBDAS", "MSW_LAMBDAS", "STRIDE", "CodecConfig", "HyperpriorCodec", "TrainSpec", "pad_to", "psnr", "rd_loss", "train_codec", "widen",
]
