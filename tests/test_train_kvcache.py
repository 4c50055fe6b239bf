"""KV-cache compression (Chapter 6 §6.5): int8 rows, the cache layer, and transformers' fp8 reference."""
import pytest
import torch

from vlmbook.fusion import VisionLanguageModel, VLMConfig
from vlmbook.train.kvcache import (Int8KVLayer, cache_bytes, cache_factory, dequantize_int8_rows, fp8_cache,
                                   int8_cache, kv_cache, quantize_int8_rows)

SMALL = dict(hidden=32, intermediate=64, enc_channels=8, layers=2, corpus_scenes=200, codebook_size=32)


@pytest.fixture(scope="module")
def vlm():
    torch.manual_seed(0)
    return VisionLanguageModel(VLMConfig(route="continuous", **SMALL)).eval()


def test_int8_rows_shapes_golden_and_error_bound():
    x = torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(0))
    q, s = quantize_int8_rows(x)
    assert q.dtype == torch.int8 and q.shape == x.shape and s.shape == (2, 3, 5, 1) and s.dtype == torch.float32
    assert int(q.abs().amax(-1).min()) == 127  # every row's largest entry uses the full range
    assert torch.allclose(s[0, 0, 0, 0], x[0, 0, 0].abs().max() / 127)
    y = dequantize_int8_rows(q, s)
    assert bool(((y - x).abs() <= s / 2 + 1e-7).all())  # round to nearest: at most half a step
    assert q[0, 0, 0].tolist() == torch.round(x[0, 0, 0] / s[0, 0, 0]).to(torch.int8).tolist()
    zq, zs = quantize_int8_rows(torch.zeros(1, 4))
    assert torch.equal(dequantize_int8_rows(zq, zs), torch.zeros(1, 4))  # an all-zero row stays zero, no NaN


def test_int8_rows_beat_transformers_fp8_on_error():
    """Per-row int8 (8 bits, one scale per vector) is more precise than the per-tensor float8 cache."""
    torch.manual_seed(1)
    k = torch.randn(1, 4, 20, 16) * torch.logspace(-1, 1, 20)[None, None, :, None]  # rows of different size
    int8 = dequantize_int8_rows(*quantize_int8_rows(k))
    layer = fp8_cache(VisionLanguageModel(VLMConfig(route="continuous", **SMALL)).text.config).layers[0]
    layer.update(k, k)
    fp8 = layer._dequantize(layer._quantized_keys)
    assert (int8 - k).abs().mean() < 0.5 * (fp8 - k).abs().mean()


def test_int8_cache_layer_appends_and_stores_int8(vlm):
    layer = Int8KVLayer()
    k1, v1 = torch.randn(1, 4, 6, 8), torch.randn(1, 4, 6, 8)
    keys, values = layer.update(k1, v1)
    assert torch.equal(keys, k1) and torch.equal(values, v1)  # the prompt is used exactly
    k2, v2 = torch.randn(1, 4, 1, 8), torch.randn(1, 4, 1, 8)
    keys, values = layer.update(k2, v2)
    assert keys.shape == (1, 4, 7, 8) and layer.get_seq_length() == 7
    assert torch.equal(keys[:, :, -1:], k2)  # this step's token exact, earlier ones dequantised
    assert torch.allclose(keys[:, :, :6], k1, atol=float(k1.abs().max()) / 127)
    assert layer._quantized_keys[0].dtype == torch.int8 and layer._quantized_keys[0].shape == (1, 4, 7, 8)


def test_generation_with_compressed_caches_matches_fp32(vlm):
    img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    q = torch.tensor([vlm.encode_text("What colour is the vase?") + [vlm.ids["assistant"]]] * 2)
    ids = vlm.question_prompt(q)
    embeds, media, lm_ids = vlm.embed(ids, img)
    with torch.no_grad():
        ref, _ = vlm._run_lm(embeds, media, lm_ids, None)
        for kind in ("int8", "fp8"):
            cache = cache_factory(kind)(vlm.text.config)
            h1, cache = vlm._run_lm(embeds[:, :-1], media, lm_ids[:, :-1], cache)
            h2, cache = vlm._run_lm(embeds[:, -1:], media, lm_ids, cache)  # the last token reads the cache
            assert torch.allclose(h1, ref[:, :-1], atol=1e-5)
            err = (h2 - ref[:, -1:]).abs().max()
            assert 0 < err < 0.1, (kind, float(err))  # lossy, but close
            assert cache.get_seq_length() == embeds.shape[1]
    with kv_cache(vlm, "int8"):
        a = vlm.generate(img, q, max_new_tokens=4)
    assert vlm.text.cache_factory is None  # restored
    assert a.shape[0] == 2


def test_cache_bytes_ratio_is_the_formula(vlm):
    """int8 rows of head size d with a float32 scale: 4d / (d + 4) smaller than fp32."""
    img = torch.rand(1, 3, 64, 64)
    q = torch.tensor([vlm.encode_text("Is there a red star?") + [vlm.ids["assistant"]]])
    embeds, media, lm_ids = vlm.embed(vlm.question_prompt(q), img)
    with torch.no_grad():
        _, c8 = vlm._run_lm(embeds, media, lm_ids, int8_cache())
        _, c32 = vlm._run_lm(embeds, media, lm_ids, vlm.text.new_cache())
    b8, b32 = cache_bytes(c8), cache_bytes(c32)
    d = vlm.text.config.hidden_size // vlm.text.config.num_attention_heads
    T, L, H = embeds.shape[1], vlm.text.config.num_hidden_layers, vlm.text.config.num_key_value_heads
    assert b32["stored_bytes"] == b32["fp32_bytes"] == b8["fp32_bytes"] == 2 * L * H * T * d * 4
    assert b8["stored_bytes"] == 2 * L * H * T * (d + 4)


def test_kv_cache_context_restores_and_rejects_unknown(vlm):
    with pytest.raises(ValueError, match="unknown KV-cache kind"):
        with kv_cache(vlm, "int4"):
            pass
    with pytest.raises(RuntimeError):
        with kv_cache(vlm, "fp8"):
            assert vlm.text.cache_factory is fp8_cache
            raise RuntimeError("boom")
    assert vlm.text.cache_factory is None
