"""The guide's warmed-up image side as its own artifact, ``clip-cells-tiny`` (Chapter 5 §5.7)."""
import pytest
import torch

from vlmbook.fusion import CLIP_CELLS_TINY, VisionLanguageModel, VLMConfig
from vlmbook.fusion.train import DemoConfig
from vlmbook.fusion.warmup import CellEncoder, CellEncoderConfig, clip_encoder
from vlmbook.hub import REPO_ARTIFACTS, artifact_specs, load_artifact


def test_config_validates_and_builds_one_token_per_cell(tmp_path):
    enc = CellEncoder(CellEncoderConfig())
    out = enc(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 9, 64) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="steps"):
        CellEncoderConfig(steps=0).validate()
    with pytest.raises(ValueError, match="compressor"):
        CellEncoderConfig(compressor="magic").validate()
    torch.manual_seed(0)
    enc.compressor.latents.data.normal_()
    enc.save_pretrained(tmp_path / "e")
    back = CellEncoder.from_pretrained(tmp_path / "e")
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(back(x), enc(x))  # a round trip gives identical tokens


def test_matches_names_the_first_difference():
    enc = CellEncoder(CellEncoderConfig())
    cfg, demo = VLMConfig.tiny(), DemoConfig.tiny()
    enc.matches(cfg, demo)  # the recipe's own settings
    with pytest.raises(ValueError, match="lr=0.003"):
        enc.matches(cfg, demo.replace(encoder_lr=1e-3))
    with pytest.raises(ValueError, match="compressor='perceiver'"):
        enc.matches(cfg.replace(compressor="cells"), demo)
    with pytest.raises(ValueError, match="encoder_fresh"):
        enc.matches(cfg, demo.replace(encoder_fresh=False))


def test_committed_warmup_is_what_the_guide_reads():
    spec = artifact_specs()["clip-cells-tiny"]
    assert spec == CLIP_CELLS_TINY and spec.builder == "vlmbook.fusion.warmup:build_cell_encoder"
    assert (REPO_ARTIFACTS / spec.key / "model.safetensors").is_file()
    enc = load_artifact("clip-cells-tiny", CellEncoder)
    assert enc.config == CellEncoderConfig(seed=spec.seed)
    guide = load_artifact("vlm-tiny", VisionLanguageModel)
    for a, b in zip(enc.vision.state_dict().values(), guide.encoder.state_dict().values()):
        assert torch.equal(a, b)  # vlm-tiny's ViT is this warm-up, bit for bit
    for a, b in zip(enc.compressor.state_dict().values(), guide.compressor.state_dict().values()):
        assert torch.equal(a, b)
    vision, compressor = clip_encoder(VLMConfig.tiny(), DemoConfig.tiny(), None)
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(compressor(vision(x)), enc(x))  # the run loads it instead of warming up again
