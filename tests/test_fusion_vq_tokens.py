"""Chapter 7 §7.4: the discrete route against image tokens M. Chapter 2's museum tokenizers with code
grids of 1, 2, 3 and 4 codes a side (``vq-tokenizer-m1``, ``-m4``, ``-cell``, ``-m16``) give the guide
M = 1, 4, 9 and 16 ``<v_k>`` words; citations still name the nine cells."""
import json

import pytest
import torch

from vlmbook.data import Museum
from vlmbook.fusion import VisionLanguageModel, VLMConfig
from vlmbook.fusion.ablation import run_cell, variant_config
from vlmbook.hub import REPO_ARTIFACTS, state_digest
from vlmbook.vq import VQTokenizer, evaluate_tokenizer, eval_images
from vlmbook.vq import TOKEN_ARTIFACTS, TOKEN_GRID_CONFIGS, build_grid_tokenizer

NEW = {m: REPO_ARTIFACTS / f"{TOKEN_ARTIFACTS[m]}-v1" for m in (1, 4, 16)}
pytestmark = pytest.mark.skipif(not all((p / "model.safetensors").is_file() for p in NEW.values()),
                                reason="token-sweep tokenizers not committed")
SMALL = dict(hidden=32, intermediate=64, layers=2, corpus_scenes=200)


@pytest.fixture(scope="module")
def four():
    """A small discrete-route guide on the 2 × 2-code tokenizer: M = 4 image tokens, 9 cells."""
    torch.manual_seed(0)
    return VisionLanguageModel(variant_config("curriculum", "discrete", "vq", tokens=4).replace(**SMALL)).eval()


def test_grid_tokenizers_make_m_codes_per_exhibit():
    for m, cfg in TOKEN_GRID_CONFIGS.items():
        assert cfg.grid ** 2 == m and cfg.codebook_size == 256
        assert cfg.image_size == (48 if m == 9 else 64)  # 64 px is not three cells of a power of two
    tok = VQTokenizer.from_pretrained(NEW[16])
    assert tok.config == TOKEN_GRID_CONFIGS[16]
    codes = tok.encode(Museum("val", 64).tensors(0, 2))
    assert codes.shape == (2, 4, 4) and codes.dtype == torch.long and 0 <= int(codes.min()) <= int(codes.max()) < 256
    with pytest.raises(ValueError, match="tokens must be one of"):
        build_grid_tokenizer(5)


@pytest.mark.parametrize("m", [1, 4, 16])
def test_committed_grid_tokenizers_match_their_recorded_metrics(m):
    """PSNR and codebook usage as recorded; more codes per exhibit reconstruct it better."""
    tok = VQTokenizer.from_pretrained(NEW[m])
    recorded = json.loads((NEW[m] / "metrics.json").read_text())
    got = evaluate_tokenizer(tok)
    assert got["tokens_per_image"] == m
    assert got["psnr"] == pytest.approx(recorded["psnr"], abs=0.05)
    assert got["usage"] == pytest.approx(recorded["usage"], abs=0.01)


def test_psnr_rises_with_codes_per_exhibit():
    psnr = [json.loads((NEW[m] / "metrics.json").read_text())["psnr"] for m in (1, 4, 16)]
    assert psnr[0] < psnr[1] < psnr[2], psnr


def test_short_retrain_is_seeded():
    """The builder with its seed, cut to 4 steps: the same weights twice, other weights with another seed."""
    a, b = build_grid_tokenizer(4, seed=0, steps=4), build_grid_tokenizer(4, seed=0, steps=4)
    assert state_digest(a) == state_digest(b) != state_digest(build_grid_tokenizer(4, seed=1, steps=4))
    assert evaluate_tokenizer(a, eval_images(16, 64))["psnr"] == pytest.approx(SHORT_RETRAIN_PSNR, abs=0.3)


SHORT_RETRAIN_PSNR = 14.05  # build_grid_tokenizer(4, seed=0, steps=4) on 16 val exhibits, 1 thread


def test_discrete_route_reads_m_codes_and_cites_nine_cells(four):
    c = four.config
    assert (c.route, c.image_side, c.vq_artifact, c.image_size, c.image_tokens, c.cells) == \
        ("discrete", "vq", "vq-tokenizer-m4", 64, 4, 9)
    images = Museum("val", 64).tensors(0, 2)
    codes = four.quantizer.encode(images)
    assert codes.shape == (2, 2, 2)
    ids = torch.tensor([four.prompt_ids("What colour is the star?", "red")] * 2)
    logits = four(ids, images=images)
    assert logits.shape == (2, ids.shape[1], four.lm.config.vocab_size)
    _, _, lm_ids = four.embed(ids, images=images)
    slots = ids == four.ids["image"]
    assert int(slots.sum()) == 8  # four <v_k> words per exhibit
    assert torch.equal(lm_ids[slots].view(2, 4), codes.view(2, 4) + four.ids["v0"])
    assert four.cell_embed.shape == (4, c.hidden)
    assert four.citation_ids([0, 8])  # citations still name any of the nine cells
    with pytest.raises(ValueError, match="out of range"):
        four.citation_ids([9])


def test_four_code_model_round_trips(four, tmp_path):
    four.save_pretrained(tmp_path / "m")
    back = VisionLanguageModel.from_pretrained(tmp_path / "m").eval()
    assert back.config == four.config and state_digest(back.quantizer) == state_digest(four.quantizer)
    images = Museum("val", 64).tensors(0, 2)
    ids = torch.tensor([four.prompt_ids("Where is the red star?", "top left")] * 2)
    assert torch.equal(back(ids, images=images), four(ids, images=images))


def test_variant_config_and_validation_name_the_field():
    assert variant_config("curriculum", "discrete", "vq", tokens=9) == variant_config("curriculum", "discrete", "vq")
    for m in (1, 16):
        assert variant_config("curriculum", "discrete", "vq", tokens=m).vq_artifact == TOKEN_ARTIFACTS[m]
    with pytest.raises(ValueError, match="tokenizers for M in"):
        variant_config("curriculum", "discrete", "vq", tokens=36)
    with pytest.raises(ValueError, match="no compressor"):
        variant_config("curriculum", "discrete", "vq", tokens=4, compressor="perceiver")
    with pytest.raises(ValueError, match="tokens.*image_side='vq'"):
        VLMConfig.tiny().replace(route="discrete", image_side="patch", compressor="none", image_size=72, tokens=4)
    # the tokenizer's grid must give M: a 4-token config on the 16-code tokenizer names grid/image_tokens
    cfg = variant_config("curriculum", "discrete", "vq", tokens=4).replace(vq_artifact=TOKEN_ARTIFACTS[16], **SMALL)
    with pytest.raises(ValueError, match="image_tokens=4"):
        VisionLanguageModel(cfg)


def test_run_cell_records_the_discrete_sweep_point():
    rec = run_cell("curriculum", 0, 4, "vq", "discrete", train_scenes=32, test_scenes=8, tokens=16)
    assert (rec["route"], rec["source"], rec["image_tokens"], rec["vq_artifact"], rec["image_size"]) == \
        ("discrete", "vq", 16, "vq-tokenizer-m16", 64)
    assert rec["compressor"] == "none" and "encoder_joint" not in rec and rec["encoder_steps"] == 0
    assert 0.0 <= rec["accuracy"]["all"] <= 100.0


def test_token_rows_name_the_tokenizer_as_the_discrete_compressor():
    from vlmbook.eval.sweeps import token_rows

    def rec(route, M, acc, source, comp):
        return {"source": source, "route": route, "variant": "curriculum", "compressor": comp, "image_tokens": M,
                "steps": 3000, "seed": 0, "accuracy": {"all": acc}}

    rows = token_rows([rec("discrete", 4, 30.0, "vq", "none"), rec("discrete", 9, 35.0, "vq", "none"),
                       rec("continuous", 4, 50.0, "clip", "perceiver")])
    assert [(r["route"], r["compressor"], r["source"], r["image_tokens"]) for r in rows] == \
        [("continuous", "perceiver", "clip", 4), ("discrete", "vq", "vq", 4), ("discrete", "vq", "vq", 9)]
    with pytest.raises(ValueError, match="source 'vq'"):
        token_rows([rec("discrete", 4, 30.0, "clip", "none")])
    with pytest.raises(ValueError, match="source 'clip'"):
        token_rows([rec("continuous", 4, 30.0, "vq", "perceiver")])


# VLMBOOK_SLOW=2 pytest tests/test_fusion_vq_tokens.py: one tokenizer rebuilt from its recipe (about 4 minutes)
@pytest.mark.skipif(__import__("os").environ.get("VLMBOOK_SLOW") != "2", reason="retrains a tokenizer; set VLMBOOK_SLOW=2")
def test_rebuild_reproduces_the_committed_tokenizer():
    recorded = json.loads((NEW[4] / "metrics.json").read_text())
    got = evaluate_tokenizer(build_grid_tokenizer(4, seed=0))
    assert got["psnr"] == pytest.approx(recorded["psnr"], abs=0.1)


def test_the_discrete_budget_is_a_square_code_grid():
    from vlmbook.eval.sweeps import guide_budget, token_rows
    from vlmbook.resample.budget import valid_budgets

    assert valid_budgets("vq", 64, range(1, 65)) == [1, 4, 9, 16, 25, 36, 49, 64]
    q = lambda M: 40.0 - 20.0 / (M + 1.0)  # noqa: E731
    recs = [{"source": "vq", "route": "discrete", "variant": "curriculum", "compressor": "none", "image_tokens": M,
             "steps": 3000, "seed": 0, "accuracy": {"all": q(M)}} for M in (1, 4, 9, 16)]
    b = guide_budget(token_rows(recs), tolerance=1.0)["discrete/vq"]
    # the fewest square grid within one point of Q(64); any M would give 15
    assert min(M for M in range(1, 65) if q(M) >= q(64) - 1.0) == 15 and b["M_star"] == 16


def test_sweep_line_names_the_tokenizer_as_the_discrete_compressor():
    from vlmbook.eval.sweeps import sweep_line

    assert sweep_line({"route": "discrete", "compressor": "none"}) == ("discrete", "vq")
    assert sweep_line({"route": "gated", "compressor": "qformer"}) == ("gated", "qformer")
