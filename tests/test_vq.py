"""Tests for vlmbook.vq quantisers (Chapter 2)."""
from __future__ import annotations

import math

import pytest
import torch

from vlmbook.vq import (
    FSQ,
    KINDS,
    LFQ,
    GroupedVQ,
    GumbelQuantizer,
    QuantizerConfig,
    ResidualVQ,
    VectorQuantizer,
    codebook_usage,
    flatten_vectors,
    gumbel_temperature,
    kmeans,
    lloyd_distortions,
    make_quantizer,
    ring_mixture,
    squared_distances,
    straight_through,
)


def _cfg(**kw) -> QuantizerConfig:
    return QuantizerConfig(**kw)


# -- statistics, STE, k-means ------------------------------------------------------------
def test_codebook_usage_golden_and_uniform():
    ppl, used = codebook_usage(torch.tensor([0, 0, 1, 2]), 4)
    assert math.isclose(float(ppl), 2 ** 1.5, rel_tol=1e-5)  # exp(H) with p = (1/2, 1/4, 1/4, 0)
    assert math.isclose(float(used), 0.75)
    ppl, used = codebook_usage(torch.arange(16).repeat(3), 16)
    assert math.isclose(float(ppl), 16.0, rel_tol=1e-5) and float(used) == 1.0
    with pytest.raises(ValueError, match="lie in"):
        codebook_usage(torch.tensor([0, 5]), 4)


def test_straight_through_passes_gradient_as_identity():
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    q = straight_through(x, x.round())
    assert torch.equal(q, x.round())
    (q * w).sum().backward()
    assert torch.equal(x.grad, w)


@pytest.mark.parametrize("ema", [True, False])
def test_vq_layer_gradient_is_identity(ema):
    torch.manual_seed(0)
    vq = make_quantizer(_cfg(dim=4, codebook_size=8, ema=ema, kmeans_init=False, restart_threshold=0.0))
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    w = torch.randn(2, 4, 3, 3)
    (vq(x).quantized * w).sum().backward()
    assert torch.allclose(x.grad, w)


def test_squared_distances_match_cdist():
    a, b = torch.randn(7, 5), torch.randn(4, 5)
    assert torch.allclose(squared_distances(a, b), torch.cdist(a, b) ** 2, atol=1e-4)


def test_kmeans_golden_and_lloyd_never_increases():
    x = ring_mixture(400, seed=1)
    assert x.shape == (400, 2)
    cents, assign = kmeans(x, 9, 10, torch.Generator().manual_seed(0))
    assert cents.shape == (9, 2) and assign.shape == (400,) and assign.dtype == torch.long
    err = float((x - cents[assign]).pow(2).sum(1).mean())
    assert round(err, 3) == pytest.approx(0.232, abs=2e-3)
    d = lloyd_distortions(x, 9, 8, torch.Generator().manual_seed(0))
    assert all(b <= a + 1e-6 for a, b in zip(d, d[1:]))
    with pytest.raises(ValueError):
        kmeans(torch.randn(5), 2)


# -- the VQ layer -------------------------------------------------------------------------
def test_vq_shapes_dtypes_and_golden():
    torch.manual_seed(0)
    vq = make_quantizer(_cfg(dim=8, codebook_size=32, kmeans_init=False, restart_threshold=0.0))
    x = torch.randn(3, 10, 8)
    out = vq.eval()(x)
    assert out.quantized.shape == x.shape and out.codes.shape == (3, 10) and out.codes.dtype == torch.long
    assert out.loss.dim() == 0 and 0 < float(out.used_fraction) <= 1
    assert int(out.codes.sum()) == 572
    # layout: (B, D, H, W) gives (B, H, W) codes equal to the token layout's
    fmap = x.view(3, 2, 5, 8).permute(0, 3, 1, 2)
    assert torch.equal(vq(fmap).codes, out.codes.view(3, 2, 5))
    assert torch.allclose(vq.lookup(out.codes), out.quantized)


def test_ema_update_equals_closed_form_running_mean():
    d, T = 0.9, 6
    vq = VectorQuantizer(_cfg(dim=2, codebook_size=4, ema=True, decay=d, eps=0.0, kmeans_init=False,
                              restart_threshold=0.0))
    e0 = torch.tensor([[10.0, 10.0], [-10.0, 10.0], [10.0, -10.0], [-10.0, -10.0]])
    vq.embed.copy_(e0)
    vq.embed_sum.copy_(e0)  # cluster_size starts at 1
    g = torch.Generator().manual_seed(0)
    cs, es = torch.ones(4), e0.clone()
    vq.train()
    for t in range(T):
        which = torch.randint(0, 3, (20,), generator=g)  # code 3 stays unused
        z = e0[which] + torch.randn(20, 2, generator=g)
        vq(z[None])
        n = torch.bincount(which, minlength=4).float()
        s = torch.zeros(4, 2).index_add_(0, which, z)
        cs, es = d * cs + (1 - d) * n, d * es + (1 - d) * s
    assert torch.allclose(vq.cluster_size, cs, atol=1e-5)
    assert torch.allclose(vq.embed, es / cs[:, None], atol=1e-4)
    # unrolled: a decay-weighted mean of every vector the code has seen (plus the initial codeword)
    assert torch.allclose(vq.embed[3], e0[3])


def test_laplace_smoothing_keeps_unused_codes_finite():
    vq = VectorQuantizer(_cfg(dim=2, codebook_size=4, decay=0.5, kmeans_init=False, restart_threshold=0.0))
    vq.train()
    for _ in range(30):
        vq(torch.zeros(1, 10, 2) + vq.embed[0])
    assert torch.isfinite(vq.embed).all()


def test_restart_revives_dead_codes():
    def usage(threshold: float) -> float:
        torch.manual_seed(0)
        vq = VectorQuantizer(_cfg(dim=2, codebook_size=16, ema=True, kmeans_init=False, restart_threshold=threshold,
                                  decay=0.8))
        vq.embed.add_(torch.tensor([50.0, 0.0]))  # every code far from the data…
        vq.embed[0] = 0.0                            # …but one
        vq.embed_sum.copy_(vq.embed)
        vq.train()
        for step in range(20):
            vq(ring_mixture(256, seed=step)[None])
        return float(codebook_usage(vq.encode(ring_mixture(1000, seed=99)[None]), 16)[1])

    assert usage(0.0) == pytest.approx(1 / 16)  # collapse: one code does all the work
    assert usage(1.0) >= 0.95


def test_kmeans_init_runs_once_on_first_training_batch():
    torch.manual_seed(0)
    vq = VectorQuantizer(_cfg(dim=2, codebook_size=8, restart_threshold=0.0))
    assert not bool(vq.initted)
    x = ring_mixture(500, seed=3)
    vq.train()(x[None])
    assert bool(vq.initted)
    before = vq.embed.clone()
    vq.eval()(x[None])
    assert torch.equal(before, vq.embed)
    assert float(codebook_usage(vq.encode(x[None]), 8)[1]) == 1.0


# -- Gumbel ---------------------------------------------------------------------------------
def test_gumbel_approaches_one_hot_as_temperature_falls():
    torch.manual_seed(0)
    gq = GumbelQuantizer(_cfg(kind="gumbel", dim=6, codebook_size=16))
    z = torch.randn(200, 6)
    with torch.no_grad():
        peak = [float(gq.soft_assignments(z, t).max(1).values.mean()) for t in (10.0, 1.0, 0.1, 0.01)]
    assert all(b > a for a, b in zip(peak, peak[1:]))
    assert peak[-1] > 0.99 and peak[0] < 0.5
    w = gq.soft_assignments(z, 0.5)
    assert torch.allclose(w.sum(1), torch.ones(200), atol=1e-5)
    assert gumbel_temperature(0, 100) == 1.0 and gumbel_temperature(100, 100) == pytest.approx(1 / 16)
    assert gumbel_temperature(50, 100) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        gq.soft_assignments(z, 0.0)


def test_gumbel_eval_is_deterministic_codeword():
    torch.manual_seed(0)
    gq = GumbelQuantizer(_cfg(kind="gumbel", dim=4, codebook_size=8)).eval()
    x = torch.randn(2, 5, 4)
    out = gq(x)
    assert torch.allclose(out.quantized, gq.lookup(out.codes))
    assert float(out.loss.detach()) >= 0  # KL to the uniform prior


# -- FSQ and LFQ --------------------------------------------------------------------------
def test_fsq_code_count_and_bijection():
    levels = (8, 5, 5, 3)
    fsq = FSQ(_cfg(kind="fsq", dim=4, levels=levels, codebook_size=math.prod(levels)))
    assert fsq.codebook_size == 600
    idx = torch.arange(600)
    vecs = fsq.lookup(idx)
    assert vecs.shape == (600, 4) and len(torch.unique(vecs, dim=0)) == 600
    # quantising a codeword gives its own index back: index -> vector -> index is the identity
    bounded_inverse = torch.atanh((vecs * (fsq.levels // 2) + torch.where(fsq.levels % 2 == 0, 0.5, 0.0))
                                  / ((fsq.levels - 1) * (1 + 1e-3) / 2)) - torch.atanh(
        torch.where(fsq.levels % 2 == 0, 0.5, 0.0) / ((fsq.levels - 1) * (1 + 1e-3) / 2))
    assert torch.equal(fsq.encode(bounded_inverse[None]), idx[None])
    assert torch.equal(fsq.digits_to_codes(fsq.codes_to_digits(idx)), idx)
    with pytest.raises(ValueError):
        QuantizerConfig(kind="fsq", levels=(8, 5), codebook_size=100)


def test_fsq_random_inputs_use_valid_codes_and_project():
    torch.manual_seed(0)
    fsq = make_quantizer(_cfg(kind="fsq", dim=16, levels=(8, 5, 5, 5), codebook_size=1000))
    out = fsq(torch.randn(4, 16, 6, 6) * 3)
    assert out.codes.shape == (4, 6, 6) and int(out.codes.max()) < 1000
    assert torch.allclose(fsq.lookup(out.codes).permute(0, 3, 1, 2), out.quantized, atol=1e-6)


def test_lfq_codes_are_sign_bits_and_entropy_loss():
    lfq = LFQ(_cfg(kind="lfq", dim=4, codebook_size=16))
    z = torch.tensor([[[0.5, -1.0, 2.0, -0.1]]])
    out = lfq(z)
    assert int(out.codes) == 1 + 4  # bits 0 and 2 positive
    assert torch.equal(out.quantized, torch.tensor([[[1.0, -1.0, 1.0, -1.0]]]))
    assert torch.equal(lfq.lookup(torch.arange(16)), lfq.all_vectors)
    # the entropy term is lowest for confident, diverse assignments
    confident = lfq.all_vectors * 5
    assert float(lfq.entropy_loss(confident)) < float(lfq.entropy_loss(torch.zeros(16, 4)))
    with pytest.raises(ValueError, match="power of two"):
        QuantizerConfig(kind="lfq", codebook_size=100)


# -- residual and grouped VQ -----------------------------------------------------------------
def test_residual_vq_error_does_not_increase_with_depth():
    torch.manual_seed(0)
    rvq = ResidualVQ(_cfg(kind="residual", dim=8, codebook_size=16, depth=4, restart_threshold=0.0))
    x = torch.randn(1, 2000, 8)
    rvq.train()(x)  # k-means initialises every stage on its own residual
    errs = [float((x - r).pow(2).mean()) for r in rvq.partial_reconstructions(x)]
    assert all(b <= a for a, b in zip(errs, errs[1:])) and errs[-1] < 0.8 * errs[0]
    out = rvq.eval()(x)
    assert out.codes.shape == (1, 2000, 4)
    assert torch.allclose(rvq.lookup(out.codes), out.quantized, atol=1e-5)


def test_grouped_vq_shapes_and_lookup():
    torch.manual_seed(0)
    gvq = GroupedVQ(_cfg(kind="grouped", dim=8, codebook_size=16, groups=4, restart_threshold=0.0))
    x = torch.randn(2, 8, 5, 5)
    gvq.train()(x)
    out = gvq.eval()(x)
    assert out.codes.shape == (2, 5, 5, 4)
    assert torch.allclose(gvq.lookup(out.codes).permute(0, 3, 1, 2), out.quantized, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        QuantizerConfig(kind="grouped", dim=10, groups=4)


# -- one interface, bad inputs -------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_shares_the_interface(kind):
    torch.manual_seed(0)
    extra = {"levels": (4, 4, 4), "codebook_size": 64} if kind == "fsq" else {"codebook_size": 64}
    q = make_quantizer(_cfg(kind=kind, dim=12, **extra)).train()
    x = torch.randn(2, 12, 4, 4, requires_grad=True)
    out = q(x)
    assert out.quantized.shape == x.shape
    assert out.codes.dtype == torch.long and out.codes.shape[:3] == (2, 4, 4)
    assert 1.0 <= float(out.perplexity) <= 64 and 0 < float(out.used_fraction) <= 1
    (out.quantized.sum() + out.loss).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_bad_inputs_raise_value_error():
    vq = make_quantizer(_cfg(dim=8))
    with pytest.raises(ValueError, match=r"\(B, N, 8\)"):
        vq(torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="must be"):
        vq(torch.randn(8, 8))
    with pytest.raises(ValueError, match="floating"):
        flatten_vectors(torch.ones(2, 3, 8, dtype=torch.long), 8)
    with pytest.raises(ValueError, match="lie in"):
        vq.lookup(torch.tensor([999]))
    with pytest.raises(ValueError, match="kind"):
        QuantizerConfig(kind="nope")
    with pytest.raises(ValueError, match="decay"):
        QuantizerConfig(decay=1.5)
    with pytest.raises(ValueError, match="codebook_size"):
        QuantizerConfig(codebook_size=0)
    with pytest.raises(ValueError, match="ema"):
        QuantizerConfig(ema="yes")


def test_ema_vq_matches_vector_quantize_pytorch():
    """Same initial codebook, same batches: codes, outputs, losses and EMA state equal the library's."""
    from vector_quantize_pytorch import VectorQuantize

    d, k, decay = 8, 32, 0.9
    ours = VectorQuantizer(_cfg(dim=d, codebook_size=k, ema=True, decay=decay, eps=1e-5, beta=0.25,
                                kmeans_init=False, restart_threshold=0.0))
    ref = VectorQuantize(dim=d, codebook_size=k, decay=decay, eps=1e-5, commitment_weight=0.25,
                         kmeans_init=False, threshold_ema_dead_code=0)
    g = torch.Generator().manual_seed(0)
    e0 = torch.randn(k, d, generator=g)
    ours.embed.copy_(e0)
    ours.embed_sum.copy_(e0)
    ref._codebook.embed.copy_(e0[None])
    ref._codebook.embed_avg.copy_(e0[None])
    ours.train()
    ref.train()
    centres = torch.randn(6, d, generator=g) * 2  # clustered data, so several codes go unused
    for _ in range(8):
        z = centres[torch.randint(0, 6, (4, 50), generator=g)] + 0.5 * torch.randn(4, 50, d, generator=g)
        out = ours(z)
        q_ref, codes_ref, loss_ref = ref(z)
        assert torch.equal(out.codes, codes_ref)
        assert torch.allclose(out.quantized, q_ref, atol=1e-5)
        assert torch.allclose(out.loss, loss_ref.reshape(()), atol=1e-5)
        assert torch.allclose(ours.cluster_size, ref._codebook.cluster_size[0], atol=1e-5)
        assert torch.allclose(ours.embed, ref._codebook.embed[0], atol=1e-5)
    assert (ours.cluster_size < decay ** 8 + 1e-6).any()  # some codes never used: Laplace smoothing exercised
