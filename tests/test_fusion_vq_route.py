"""Chapter 5's discrete route on Chapter 2's VQ tokenizer: the ``vq-tokenizer-cell`` artifact
(48 px -> 3 x 3 codes, one per museum cell) turns exhibits into ``<v_k>`` words of the VLM."""
import dataclasses
import json

import pytest
import torch

from vlmbook.data import Museum
from vlmbook.fusion import VisionLanguageModel, VLMConfig
from vlmbook.fusion.ablation import variant_config
from vlmbook.fusion.data import Batcher, museum_qa
from vlmbook.fusion.discrete import PatchQuantizer, code_readout
from vlmbook.hub import REPO_ARTIFACTS, state_digest
from vlmbook.vq import CELL_CONFIG, TokenizerConfig, VQTokenizer, build_cell_tokenizer, evaluate_tokenizer, eval_images
from vlmbook.vq import load_cell_tokenizer

ARTIFACT = REPO_ARTIFACTS / "vq-tokenizer-cell-v1"
pytestmark = pytest.mark.skipif(not (ARTIFACT / "model.safetensors").is_file(), reason="artifact not committed")

#: a small discrete-route VLM on the cell tokenizer (its grid, image size and codebook)
VQ = dict(route="discrete", image_side="vq", image_size=CELL_CONFIG.image_size, grid=CELL_CONFIG.grid,
          codebook_size=CELL_CONFIG.codebook_size, hidden=32, intermediate=64, layers=2, corpus_scenes=200)


@pytest.fixture(scope="module")
def tok():
    return load_cell_tokenizer()


@pytest.fixture(scope="module")
def vlm():
    torch.manual_seed(0)
    return VisionLanguageModel(VLMConfig(**VQ)).eval()


@pytest.fixture(scope="module")
def images():
    return Museum("val", CELL_CONFIG.image_size).tensors(0, 2)


# -- the artifact --------------------------------------------------------------------------------
def test_cell_tokenizer_artifact_matches_its_recorded_metrics(tok):
    """One code per museum cell, K = 256; PSNR, usage and the per-cell attribute readout as recorded."""
    from vlmbook.fusion.discrete import tokenizer_cell_readout

    assert tok.config == CELL_CONFIG and tok.grid == 3 and tok.codebook_size == 256
    assert tok.encode(torch.rand(2, 3, 48, 48)).shape == (2, 3, 3)
    recorded = json.loads((ARTIFACT / "metrics.json").read_text())
    got = evaluate_tokenizer(tok)
    assert got["psnr"] == pytest.approx(recorded["psnr"], abs=0.05)
    assert got["usage"] >= 0.9 and got["usage"] == pytest.approx(recorded["usage"], abs=0.01)
    readout = tokenizer_cell_readout(tok, 400, 200)
    for k in ("colour_object", "shape_object", "size_object"):
        # codes say more about the object in their cell than its most common label does
        assert readout[k] > readout[k.replace("_object", "_object_baseline")] + 0.05, (k, readout)


def test_short_retrain_reproduces_the_recipe_metric():
    """The artifact's builder with its seed, cut to 8 steps: PSNR reproduces within ±0.3 dB."""
    got = evaluate_tokenizer(build_cell_tokenizer(seed=0, steps=8), eval_images(32, 48))
    assert got["psnr"] == pytest.approx(SHORT_RETRAIN_PSNR, abs=0.3)


SHORT_RETRAIN_PSNR = 14.03  # build_cell_tokenizer(seed=0, steps=8) on 32 val exhibits, 1 thread


# -- the VLM's discrete route on it -----------------------------------------------------------------
def test_codes_from_the_tokenizer_land_as_v_tokens(vlm, tok, images):
    assert isinstance(vlm.quantizer, VQTokenizer) and vlm.config.image_tokens == 9 <= 16
    assert not any(p.requires_grad for p in vlm.quantizer.parameters())  # Chapter 2's weights stay fixed
    assert state_digest(vlm.quantizer) == state_digest(tok)
    codes = vlm.quantizer.encode(images)
    assert codes.shape == (2, 3, 3) and codes.dtype == torch.long and torch.equal(codes, tok.encode(images))
    ids = torch.tensor([vlm.prompt_ids("What colour is the star?", "red")] * 2)
    logits = vlm(ids, images=images)
    assert logits.shape == (2, ids.shape[1], vlm.lm.config.vocab_size) and logits.dtype == torch.float32
    _, _, lm_ids = vlm.embed(ids, images=images)
    slots = ids == vlm.ids["image"]
    assert int(slots.sum()) == 18
    assert torch.equal(lm_ids[slots].view(2, 9), codes.view(2, 9) + vlm.ids["v0"])  # row-major <v_k> ids
    assert vlm.tokenizer.convert_ids_to_tokens(int(lm_ids[slots][0])) == f"<v_{int(codes[0, 0, 0])}>"
    # images and their cached codes are the same input; another image gives other logits
    assert torch.equal(vlm(ids, codes=codes), logits)
    assert not torch.allclose(logits, vlm(ids, images=images.flip(0)), atol=1e-5)


def test_golden(vlm, tok, images):
    """Seeded: the first val exhibit's codes and the VLM's logits at the answer position."""
    assert tok.encode(images[:1]).flatten().tolist() == GOLDEN_CODES
    ids = torch.tensor([vlm.prompt_ids("What colour is the star?")])
    logits = vlm(ids, images=images[:1])[0, -1]
    v0 = vlm.ids["v0"]
    assert logits[v0:v0 + 3].tolist() + [float(logits.detach().sum())] == pytest.approx(GOLDEN_LOGITS, abs=1e-4)


GOLDEN_CODES = [198, 235, 75, 223, 31, 43, 36, 235, 174]
GOLDEN_LOGITS = [-0.030818, -0.092548, -0.063924, -0.707445]  # logits at <v_0..2> and their sum


def test_save_load_identical_logits(vlm, images, tmp_path):
    """The tokenizer's weights travel in the VLM's safetensors: reloading gives the same logits."""
    vlm.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["config"]["image_side"] == "vq"
    back = VisionLanguageModel.from_pretrained(tmp_path / "m").eval()
    assert isinstance(back.quantizer, VQTokenizer) and state_digest(back.quantizer) == state_digest(vlm.quantizer)
    ids = torch.tensor([vlm.prompt_ids("Where is the red star?", "top left")] * 2)
    assert torch.equal(back(ids, images=images), vlm(ids, images=images))
    q = torch.tensor([vlm.encode_text("What colour is the star?") + [vlm.ids["assistant"]]] * 2)
    assert torch.equal(back.generate(images, q, max_new_tokens=4), vlm.generate(images, q, max_new_tokens=4))


def test_batcher_caches_the_tokenizer_codes_once(vlm, tok):
    data = museum_qa("train", 6, size=48, grid=3)
    b = Batcher(vlm, data, 4)
    assert torch.equal(b.data.codes, tok.encode(data.images)) and data.codes is None
    x = b.batch(3)
    assert "images" not in x and x["codes"].shape == (4, 3, 3)


def test_ablation_discrete_route_reads_the_cell_tokenizer():
    cfg = variant_config("recipe", route="discrete")
    assert (cfg.image_side, cfg.image_size, cfg.image_tokens, cfg.codebook_size) == ("vq", 48, 9, 256)
    assert cfg.vq_artifact == "vq-tokenizer-cell"
    assert variant_config("recipe", route="discrete", source="patch").image_side == "patch"  # k-means kept
    with pytest.raises(ValueError, match="discrete"):
        variant_config("recipe", route="continuous", source="vq")


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [("grid", 4), ("image_size", 64), ("codebook_size", 512)])
def test_tokenizer_that_does_not_fit_the_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        VisionLanguageModel(VLMConfig(**{**VQ, field: value}))


def test_bad_vq_configs_and_replacements(vlm):
    with pytest.raises(ValueError, match="image_side"):
        VLMConfig(**{**VQ, "route": "continuous"})  # the VQ tokenizer gives codes, not features
    with pytest.raises(ValueError, match="vq_artifact"):
        VLMConfig(**{**VQ, "vq_artifact": ""})
    with pytest.raises(ValueError, match="unknown artifact"):
        VisionLanguageModel(VLMConfig(**{**VQ, "vq_artifact": "no-such-tokenizer"}))
    m = VisionLanguageModel(VLMConfig(**VQ))
    four = VQTokenizer(TokenizerConfig(image_size=32, downsample=3, channels=16, res_blocks=0, codebook_size=16))
    with pytest.raises(ValueError, match="grid"):
        m.replace_quantizer(four)  # 4 x 4 codes for a 3 x 3 = 9-token model
    m.replace_quantizer(PatchQuantizer(16, 3, 4))  # any tokenizer with a 3 x 3 grid and K <= 256 fits
    assert m.config.image_tokens == 9


def test_code_readout_is_a_held_out_lookup():
    """A code that always means one attribute reads perfectly; codes that carry nothing read the baseline."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (500, 9, 3), generator=g)
    codes = labels[..., 0] * 16 + labels[..., 1] * 4 + labels[..., 2]  # a code per (colour, shape, size)
    r = code_readout(codes[:400], labels[:400], codes[400:], labels[400:], 64)
    assert r["colour"] == r["shape"] == r["size"] == r["shape_object"] == 1.0
    colour_only = code_readout(labels[:400, :, 0], labels[:400], labels[400:, :, 0], labels[400:], 64)
    assert colour_only["colour"] == 1.0 and colour_only["shape"] < 0.5  # a colour code says nothing of shape
    zeros = torch.zeros(500, 9, dtype=torch.long)
    r = code_readout(zeros[:400], labels[:400], zeros[400:], labels[400:], 64)
    assert r["colour"] == r["colour_baseline"] < 0.5
    with pytest.raises(ValueError, match="labels"):
        code_readout(codes[:40], labels[:30], codes[40:], labels[40:], 64)


def test_train_route_keeps_chapter2_tokenizer_frozen(tok):
    """The trainer fits no k-means here: the tokenizer's weights (and EMA buffers) leave training unchanged."""
    from vlmbook.fusion.train import DemoConfig, train_route

    demo = DemoConfig(train_scenes=8, test_scenes=4, steps=3, batch_size=4, warmup=1, encoder_steps=0)
    vlm, hist = train_route("discrete", VLMConfig(**VQ), demo, eval_data=museum_qa("test", 4, size=48, grid=3))
    assert len(hist) >= 1 and state_digest(vlm.quantizer) == state_digest(tok)
    assert "cite_precision" not in vlm.training_log[-1] or 0 <= vlm.training_log[-1]["cite_precision"] <= 100
