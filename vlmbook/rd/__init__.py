"""Chapter 1 — rate–distortion: bits, entropy and the token budget.

Information measures, R(D) (Gaussian closed form, Blahut–Arimoto), scalar quantisers
(uniform, Lloyd–Max, entropy-coded), the Lagrangian R + λD, distortion metrics, the
context-window budget and attention cost, and JPEG/WebP baselines.
"""
from .budget import LayerFlops, image_token_budget, layer_flops, measure_layer_time, patch_tokens, prefill_flops
from .codecs import RDPoint, pil_rd_curve, pil_roundtrip
from .info import cross_entropy, empirical_distribution, entropy, kl_divergence, mutual_information
from .lagrange import lagrangian_choice, lambda_sweep, lower_convex_hull
from .metrics import frechet_distance, gaussian_window, ms_ssim, mse, psnr, psnr_from_mse, ssim, ssim_map
from .quantize import (
    ECSQ_GAP_BITS,
    ECSQ_GAP_DB,
    ECSQPoint,
    ScalarQuantizer,
    best_uniform_gaussian,
    ecsq_empirical,
    ecsq_gaussian,
    gaussian_mse,
    lloyd_max,
    lloyd_max_gaussian,
    uniform_quantize,
    uniform_quantizer,
)
from .theory import (
    BAResult,
    binary_rd,
    blahut_arimoto,
    discretized_gaussian,
    gaussian_dr,
    gaussian_rd,
    hamming_matrix,
    rd_curve,
    squared_error_matrix,
)

__all__ = [
    "LayerFlops", "image_token_budget", "layer_flops", "measure_layer_time", "patch_tokens", "prefill_flops",
    "RDPoint", "pil_rd_curve", "pil_roundtrip", "cross_entropy", "empirical_distribution", "entropy",
    "kl_divergence", "mutual_information", "lagrangian_choice", "lambda_sweep", "lower_convex_hull",
    "frechet_distance", "gaussian_window", "ms_ssim", "mse", "psnr", "psnr_from_mse", "ssim", "ssim_map", "ECSQ_GAP_BITS",
    "ECSQ_GAP_DB", "ECSQPoint", "ScalarQuantizer", "best_uniform_gaussian", "ecsq_empirical", "ecsq_gaussian",
    "gaussian_mse", "lloyd_max", "lloyd_max_gaussian", "uniform_quantize", "uniform_quantizer", "BAResult",
    "binary_rd", "blahut_arimoto", "discretized_gaussian", "gaussian_dr", "gaussian_rd", "hamming_matrix",
    "rd_curve", "squared_error_matrix",
]
