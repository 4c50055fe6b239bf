"""Chapter 3 §3.8: the context model on a mean-scale hyperprior, and the jointly trained ContextCodec."""
from __future__ import annotations

import pytest
import torch

from vlmbook.codec import CodecConfig, HyperpriorCodec, discretized_likelihood
from vlmbook.codec.context import (ContextCodec, ContextModel, build_ctx, estimated_point, parallel_params,
                                   sequential_params)
from vlmbook.codec.layers import lower_bound
from vlmbook.codec.models import MS_LAMBDAS, TrainSpec


def tiny_ms(seed: int = 0) -> HyperpriorCodec:
    torch.manual_seed(seed)
    return HyperpriorCodec(CodecConfig.tiny().replace(model="meanscale"))


def test_context_model_with_means_starts_as_the_meanscale_hyperprior():
    torch.manual_seed(0)
    ctx = ContextModel(4, means_in=True)
    y = torch.round(torch.randn(2, 4, 5, 3) * 2)
    s, m = torch.rand(2, 4, 5, 3) + 0.2, torch.randn(2, 4, 5, 3)
    lik = ctx(y, s, m)
    assert lik.shape == y.shape and lik.dtype == torch.float32
    assert torch.allclose(lik, discretized_likelihood(y, s, m).clamp_min(1e-9))  # zero last layer
    with pytest.raises(ValueError, match="hyper_means"):
        ctx(y, s)
    with pytest.raises(ValueError, match="hyper_means"):
        ContextModel(4)(y, s, m)


def test_sequential_equals_parallel_with_hyper_means():
    torch.manual_seed(1)
    ctx = ContextModel(3, means_in=True)
    for p in ctx.parameters():  # a non-trivial network (the last layer starts at zero)
        torch.nn.init.normal_(p, std=0.3)
    y = torch.round(torch.randn(1, 3, 6, 5) * 2)
    s, m = torch.rand(1, 3, 6, 5) + 0.2, torch.randn(1, 3, 6, 5)
    m1, s1, t1 = sequential_params(ctx, y, s, m)
    m2, s2, t2 = parallel_params(ctx, y, s, m)
    assert m1.shape == y.shape and s1.dtype == torch.float32 and t1 > 0 and t2 > 0
    assert torch.allclose(m1, m2, atol=1e-5) and torch.allclose(s1, s2, atol=1e-5)
    # causality: changing the last latent moves no earlier position's parameters
    y2 = y.clone()
    y2[..., -1, -1] += 5
    m3, _, _ = parallel_params(ctx, y2, s, m)
    assert torch.equal(m3, m2)


def test_context_codec_shapes_start_and_gradients():
    base = tiny_ms(0).eval()
    model = ContextCodec.from_codec(base).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = model(x, mode="round")
    assert out["x_hat"].shape == x.shape and out["y_hat"].shape == (2, 32, 4, 4)
    assert out["likelihoods"]["y"].dtype == torch.float32 and out["z_hat"].shape == (2, 24, 1, 1)
    # starts as the hyperprior: the likelihood of round(y) under the hyperprior's own mean and scale
    b = base(x, mode="round")
    scales = lower_bound(b["scales"], base.gaussian_conditional.scale_bound)
    ref = discretized_likelihood(torch.round(b["y"]), scales, b["means"]).clamp_min(1e-9)
    assert torch.allclose(out["likelihoods"]["y"], ref, atol=1e-6)
    z_hat, hs, hm, z_lik = model.hyper(b["y"], "round")
    assert hs.shape == hm.shape == b["y"].shape and z_lik.shape == z_hat.shape == (2, 24, 1, 1)
    assert float(hs.min()) >= base.gaussian_conditional.scale_bound - 1e-6 and torch.equal(hm, b["means"])
    model.train()
    out = model(x, mode="noise")
    (-torch.log2(out["likelihoods"]["y"]).sum()).backward()
    assert model.context_model.entropy_parameters[-1].weight.grad.abs().sum() > 0
    assert model.codec.g_a[0].weight.grad.abs().sum() > 0  # trained jointly: the transform learns too
    with pytest.raises(ValueError):
        model(x, mode="ste")
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, 60, 64))


def test_estimated_point_golden_and_matches_likelihoods(tmp_path):
    model = ContextCodec.from_codec(tiny_ms(0))
    torch.manual_seed(3)
    for p in model.context_model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    with torch.no_grad():
        model.codec.g_a[-1].weight.mul_(30)  # latents of a few units, as a trained codec's
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    pt = estimated_point(model, [x])
    assert set(pt) == {"bpp", "bpp_y", "psnr"}
    assert pt["bpp"] == pytest.approx(GOLDEN_POINT["bpp"], rel=1e-4)
    assert pt["psnr"] == pytest.approx(GOLDEN_POINT["psnr"], abs=1e-3)
    out = model(x, mode="round")
    bits_y = float(-torch.log2(out["likelihoods"]["y"]).sum())
    assert pt["bpp_y"] == pytest.approx(bits_y / 64 ** 2, rel=1e-6)
    model.codec.update()  # as the builders do: coding tables travel with the weights
    model.save_pretrained(tmp_path)
    assert estimated_point(ContextCodec.from_pretrained(tmp_path), [x]) == pytest.approx(pt, rel=1e-6)


def test_build_ctx_one_step_and_arguments():
    with pytest.raises(ValueError, match="quality"):
        build_ctx(0)
    with pytest.raises(ValueError, match="quality"):
        build_ctx(len(MS_LAMBDAS) + 1)
    model = build_ctx(3, spec=TrainSpec(steps=1, batch=1, crop=64), base=tiny_ms(0))
    assert model.config.lmbda == MS_LAMBDAS[2] and model.codec.config.lmbda == MS_LAMBDAS[2]
    assert model.codec.gaussian_conditional._cdf.numel() > 0  # tables built for the hyperprior part


GOLDEN_POINT = {"bpp": 2.0109954, "psnr": 4.8726224}  # seeded, measured once
