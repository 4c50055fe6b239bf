"""Tests for vlmbook.rd (Chapter 1)."""
import numpy as np
import pytest
import torch

from vlmbook import rd


# -- information ------------------------------------------------------------------------
def test_entropy_golden_and_shape():
    assert rd.entropy([0.5, 0.25, 0.25]) == pytest.approx(1.5)
    assert rd.entropy([1.0, 0.0]) == 0.0
    batch = rd.entropy(np.array([[0.5, 0.5], [1.0, 0.0]]))
    assert batch.shape == (2,) and batch == pytest.approx([1.0, 0.0])
    assert rd.entropy([0.5, 0.5], base=np.e) == pytest.approx(np.log(2))


def test_entropy_is_maximal_for_uniform():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.dirichlet(np.ones(8))
        assert rd.entropy(p) <= 3.0 + 1e-12


def test_cross_entropy_and_kl_identity():
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
    assert rd.cross_entropy(p, q) == pytest.approx(rd.entropy(p) + rd.kl_divergence(p, q))
    assert rd.kl_divergence(p, q) > 0
    assert rd.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert rd.kl_divergence([0.5, 0.5], [1.0, 0.0]) == np.inf
    assert rd.kl_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(1.0)


def test_mutual_information():
    assert rd.mutual_information(np.outer([0.3, 0.7], [0.2, 0.8])) == pytest.approx(0.0, abs=1e-12)
    assert rd.mutual_information(np.diag([0.25] * 4)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="2-D"):
        rd.mutual_information([0.5, 0.5])


@pytest.mark.parametrize("bad, msg", [([0.5, -0.1, 0.6], "negative"), ([0.2, 0.2], "sum to 1"),
                                      ([np.nan, 1.0], "NaN"), ([], "empty")])
def test_bad_probabilities_raise(bad, msg):
    with pytest.raises(ValueError, match=msg):
        rd.entropy(bad)


def test_cross_entropy_shape_mismatch():
    with pytest.raises(ValueError, match="same support"):
        rd.cross_entropy([0.5, 0.5], [0.2, 0.3, 0.5])


def test_empirical_distribution():
    assert rd.empirical_distribution(np.array([0, 1, 1, 3]), 5) == pytest.approx([0.25, 0.5, 0, 0.25, 0])
    with pytest.raises(ValueError):
        rd.empirical_distribution(np.array([0.5, 1.0]))


# -- R(D) ------------------------------------------------------------------------------
def test_gaussian_rd_golden_and_inverse():
    assert rd.gaussian_rd(0.25) == pytest.approx(1.0)
    assert rd.gaussian_rd(2.0) == 0.0
    r = np.linspace(0.1, 4, 9)
    assert rd.gaussian_rd(rd.gaussian_dr(r, 2.0), 2.0) == pytest.approx(r)
    with pytest.raises(ValueError):
        rd.gaussian_rd(0.0)
    with pytest.raises(ValueError):
        rd.gaussian_dr(-1.0)


def test_blahut_arimoto_matches_gaussian_closed_form():
    grid, p = rd.discretized_gaussian(401, span=7.0)
    d = rd.squared_error_matrix(grid)
    for beta in (1.0, 2.0, 8.0):
        pt = rd.blahut_arimoto(p, d, beta)
        assert abs(pt.rate - rd.gaussian_rd(pt.distortion)) < 1e-3
        # the slope parameter fixes D = 1/(2β) for a Gaussian (in nats)
        assert pt.distortion == pytest.approx(1 / (2 * beta), rel=1e-3)
        assert pt.q_y.shape == (401,) and pt.q_y.sum() == pytest.approx(1.0)


def test_blahut_arimoto_binary_source():
    for p1 in (0.5, 0.2):
        for beta in (1.0, 2.0, 4.0):
            pt = rd.blahut_arimoto([1 - p1, p1], rd.hamming_matrix(2), beta)
            assert pt.rate == pytest.approx(rd.binary_rd(pt.distortion, p1), abs=1e-6)


def test_rd_curve_is_monotone():
    grid, p = rd.discretized_gaussian(401, span=7.0)
    rates, dists = rd.rd_curve(p, rd.squared_error_matrix(grid), [1, 2, 8])
    assert np.all(np.diff(rates) > 0) and np.all(np.diff(dists) < 0)


def test_blahut_arimoto_bad_input():
    with pytest.raises(ValueError, match="shape"):
        rd.blahut_arimoto([0.5, 0.5], np.zeros((3, 3)), 1.0)
    with pytest.raises(ValueError, match="beta"):
        rd.blahut_arimoto([0.5, 0.5], np.zeros((2, 2)), 0.0)
    with pytest.raises(ValueError, match="negative"):
        rd.blahut_arimoto([1.5, -0.5], np.zeros((2, 2)), 1.0)


# -- quantisers ------------------------------------------------------------------------
def test_lloyd_max_gaussian_matches_max_1960():
    # Max (1960), Table I: minimum MSE for N(0, 1) with 4 and 8 levels.
    assert rd.gaussian_mse(rd.lloyd_max_gaussian(4)) == pytest.approx(0.1175, abs=1e-4)
    assert rd.gaussian_mse(rd.lloyd_max_gaussian(8)) == pytest.approx(0.03455, abs=1e-5)
    q = rd.lloyd_max_gaussian(4)
    assert q.levels == pytest.approx([-1.510, -0.4528, 0.4528, 1.510], abs=1e-3)


def test_lloyd_max_beats_uniform_at_equal_levels():
    for levels in (4, 8, 16):
        uq, _ = rd.best_uniform_gaussian(levels)
        assert rd.gaussian_mse(rd.lloyd_max_gaussian(levels)) < rd.gaussian_mse(uq)


def test_sample_lloyd_agrees_with_analytic():
    x = np.random.default_rng(0).standard_normal(200_000)
    q = rd.lloyd_max(x, 4)
    assert q.levels == pytest.approx(rd.lloyd_max_gaussian(4).levels, abs=0.02)
    assert np.mean((x - q(x)) ** 2) == pytest.approx(0.1175, abs=3e-3)


def test_gaussian_mse_matches_monte_carlo():
    q = rd.uniform_quantizer(6, 0.7)
    x = np.random.default_rng(2).standard_normal(400_000)
    assert rd.gaussian_mse(q) == pytest.approx(np.mean((x - q(x)) ** 2), rel=0.01)


def test_uniform_quantize_roundtrip_and_errors():
    k, v = rd.uniform_quantize([0.24, 0.26, -0.74], 0.5)
    assert k.tolist() == [0, 1, -1] and v == pytest.approx([0.0, 0.5, -0.5])
    x = np.random.default_rng(3).uniform(-5, 5, 1000)
    assert np.max(np.abs(rd.uniform_quantize(x, 0.3)[1] - x)) <= 0.15 + 1e-12
    with pytest.raises(ValueError):
        rd.uniform_quantize(x, 0.0)
    with pytest.raises(ValueError):
        rd.ScalarQuantizer(np.array([0.0]), np.array([1.0, 0.0]))


def test_ecsq_gap_approaches_constant_at_high_rate():
    assert rd.ECSQ_GAP_BITS == pytest.approx(0.2546, abs=1e-4)
    assert rd.ECSQ_GAP_DB == pytest.approx(1.533, abs=1e-3)
    gaps = [rd.ecsq_gaussian(s).gap for s in (1.0, 0.5, 0.25, 0.1, 0.05)]
    assert np.all(np.diff(gaps) < 0)
    assert gaps[-1] == pytest.approx(rd.ECSQ_GAP_BITS, abs=1e-3)
    e = rd.ecsq_empirical(np.random.default_rng(0).standard_normal(1_000_000), 0.1)
    assert e.gap == pytest.approx(rd.ECSQ_GAP_BITS, abs=0.01)


# -- Lagrangian ------------------------------------------------------------------------
def test_lagrangian_picks_only_hull_points_and_all_of_them():
    rng = np.random.default_rng(4)
    r = rng.uniform(0, 5, 60)
    d = np.exp(-r) + rng.uniform(0, 0.3, 60)
    hull = rd.lower_convex_hull(r, d)
    chosen = set(rd.lambda_sweep(r, d, np.logspace(-3, 4, 3000)).tolist())
    assert chosen <= set(hull.tolist())
    assert chosen == set(hull.tolist())
    assert np.all(np.diff(r[hull]) > 0) and np.all(np.diff(d[hull]) < 0)


def test_lagrangian_extremes_and_errors():
    r, d = np.array([0.0, 1.0, 2.0]), np.array([1.0, 0.3, 0.1])
    assert rd.lagrangian_choice(r, d, 0.0) == 0
    assert rd.lagrangian_choice(r, d, 1e6) == 2
    with pytest.raises(ValueError):
        rd.lagrangian_choice(r, d[:2], 1.0)
    with pytest.raises(ValueError):
        rd.lagrangian_choice(r, d, -1.0)


# -- metrics ---------------------------------------------------------------------------
def test_psnr_golden():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255  # MSE = 255²/48
    assert rd.psnr(a, b) == pytest.approx(10 * np.log10(48))
    assert rd.psnr(a, a) == float("inf")
    # the trainers' PSNR of an MSE they already computed is the same formula
    assert rd.psnr_from_mse(255.0**2 / 48, 255.0) == rd.psnr(a, b)
    assert rd.psnr_from_mse(torch.tensor(0.01)) == pytest.approx(20.0, abs=1e-5) and rd.psnr_from_mse(0.0) == float("inf")
    with pytest.raises(ValueError):
        rd.psnr_from_mse(-1.0)
    assert rd.mse(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)) == pytest.approx(0.25)


def test_ssim_matches_pytorch_msssim():
    from pytorch_msssim import ssim as ref_ssim

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 48, 40, generator=g)
    y = (x + 0.1 * torch.randn(2, 3, 48, 40, generator=g)).clamp(0, 1)
    ours = rd.ssim(x, y)
    assert ours == pytest.approx(float(ref_ssim(x, y, data_range=1.0)), abs=1e-5)
    assert rd.ssim(x, x) == pytest.approx(1.0)
    assert rd.ssim(x, y) < 1.0


def test_ms_ssim_and_size_errors():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 176, 176, generator=g)
    assert rd.ms_ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="160"):
        rd.ms_ssim(x[..., :100, :100], x[..., :100, :100])
    with pytest.raises(ValueError, match="same shape"):
        rd.psnr(x, x[..., :10])
    with pytest.raises(ValueError, match="11"):
        rd.ssim(x[..., :8, :8], x[..., :8, :8])


def test_frechet_distance():
    assert rd.frechet_distance([0.0], [[1.0]], [0.0], [[1.0]]) == pytest.approx(0.0, abs=1e-9)
    # 1-D: (m1 - m2)² + (s1 - s2)²
    assert rd.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    with pytest.raises(ValueError):
        rd.frechet_distance([0, 0], np.eye(2), [0], np.eye(1))


# -- token budget -----------------------------------------------------------------------
def test_budget_and_flops():
    assert rd.image_token_budget(2048, 300, 200) == 1548
    assert rd.patch_tokens(224, 224, 14) == 256 and rd.patch_tokens(224, 224, 14, merge=2) == 64
    f = rd.layer_flops(10, 8)
    assert (f.projections, f.attention, f.mlp) == (8 * 10 * 64, 4 * 100 * 8, 16 * 10 * 64)
    assert rd.prefill_flops(6, 4, 8, layers=3) == 3 * f.total
    g = rd.layer_flops(10, 8, d_ff=24, mlp_matrices=3)  # a gated (SwiGLU) MLP: three d x d_ff matrices
    assert (g.projections, g.attention, g.mlp) == (f.projections, f.attention, 6 * 10 * 8 * 24)
    with pytest.raises(ValueError, match="mlp_matrices"):
        rd.layer_flops(10, 8, mlp_matrices=4)
    with pytest.raises(ValueError, match="exceed"):
        rd.image_token_budget(100, 90, 20)
    with pytest.raises(ValueError, match="divisible"):
        rd.patch_tokens(225, 224, 14)


class _ExplicitLayer(torch.nn.Module):
    """A pre-norm encoder layer written with Linear and matmul only.

    torch's FLOP counter sees ``nn.TransformerEncoderLayer``'s fused attention differently from
    one torch release to the next (2.14 skipped the attention products); every release counts
    ``addmm``/``mm``/``bmm`` the same way, so this layer pins the book's formula down."""

    def __init__(self, d: int, heads: int, d_ff: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.out = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.ff1, self.ff2 = torch.nn.Linear(d, d_ff), torch.nn.Linear(d_ff, d)
        self.n1, self.n2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5).softmax(-1)
        x = x + self.out((att @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.ff2(torch.relu(self.ff1(self.n2(x))))


@pytest.mark.parametrize("n,d", [(32, 16), (7, 24)])
def test_layer_flops_match_a_counted_torch_layer(n, d):
    # count multiply-adds of a real layer with torch's FLOP counter
    from torch.utils.flop_counter import FlopCounterMode

    layer = _ExplicitLayer(d, 2, 4 * d)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        layer(torch.randn(1, n, d))
    assert counter.get_total_flops() == rd.layer_flops(n, d).total
    by_op = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    assert by_op["aten.bmm"] == rd.layer_flops(n, d).attention


def test_measure_layer_time_positive():
    assert rd.measure_layer_time(16, d=32, heads=2, repeats=2) > 0


# -- classical codecs ------------------------------------------------------------------
def test_pil_codecs_roundtrip_and_monotone_rate():
    from vlmbook.data import eval_images

    img = eval_images(192)[1]
    dec, nbytes = rd.pil_roundtrip(img, "jpeg", 90)
    assert dec.shape == img.shape and dec.dtype == np.uint8 and nbytes > 0
    pts = rd.pil_rd_curve([img], "webp", (10, 50, 90))
    assert [p.quality for p in pts] == [10, 50, 90]
    assert pts[0].bpp < pts[1].bpp < pts[2].bpp
    assert pts[0].psnr < pts[2].psnr and 0 < pts[0].ms_ssim < pts[2].ms_ssim <= 1
    with pytest.raises(ValueError, match="codec"):
        rd.pil_roundtrip(img, "gif")
    with pytest.raises(ValueError, match="uint8"):
        rd.pil_roundtrip(img.astype(float))
