"""Chapter 5: the committed ``vlm-tiny`` artifact (``vlmbook artifacts build vlm-tiny``).

``vlmbook.fusion.train.build_vlm_tiny`` trains ``VLMConfig.tiny()`` — Chapter 4's ``clip-tiny`` ViT
(trained further on per-cell labels, then frozen), cell pooling to nine image tokens and the
recipe of §5.7 — for ``DemoConfig.offline().steps`` LM steps on one thread, and scores the 200
test exhibits greedily; the score travels with the weights. Rebuilding takes minutes of one core,
so that check runs only with ``VLMBOOK_SLOW=1`` (as ``make test`` sets it).
"""
from __future__ import annotations

import os

import pytest

from vlmbook.fusion import VLM_TINY, CellPool, VisionLanguageModel, VLMConfig
from vlmbook.fusion.data import museum_qa
from vlmbook.fusion.evaluate import evaluate, majority_baseline
from vlmbook.hub import REPO_ARTIFACTS, artifact_specs, load_artifact
from vlmbook.vision import VisionEncoder


@pytest.fixture(scope="module")
def guide():
    return load_artifact("vlm-tiny", VisionLanguageModel)


@pytest.fixture(scope="module")
def test_set(guide):
    return museum_qa("test", 200, guide.config.image_size, grid=guide.config.grid)


def test_registered_and_committed():
    spec = artifact_specs()["vlm-tiny"]
    assert spec == VLM_TINY and spec.builder == "vlmbook.fusion.train:build_vlm_tiny" and spec.seed == 0
    for f in ("model.safetensors", "training_log.json", "tokenizer/tokenizer.json"):
        assert (REPO_ARTIFACTS / spec.key / f).is_file(), f


def test_artifact_is_the_composed_guide(guide):
    assert guide.config == VLMConfig.tiny().replace(seed=artifact_specs()["vlm-tiny"].seed)
    assert isinstance(guide.encoder, VisionEncoder) and isinstance(guide.compressor, CellPool)
    assert guide.config.image_tokens == 9 and guide.config.cite


def test_committed_model_scores_its_logged_accuracy(guide, test_set):
    log = guide.training_log[-1]
    acc = evaluate(guide, test_set)
    # 1,400-odd answers: one flipped answer moves "all" by under 0.1 point.
    assert acc["all"] == pytest.approx(log["all"], abs=0.25)
    assert acc["cite_precision"] == pytest.approx(log["cite_precision"], abs=0.5)
    base = majority_baseline(museum_qa("train", 500, guide.config.image_size), test_set)
    assert acc["all"] > base["all"]  # it reads the images


@pytest.mark.skipif(os.environ.get("VLMBOOK_SLOW") != "1", reason="retrains the guide (minutes); set VLMBOOK_SLOW=1")
def test_rebuild_reproduces_the_artifact(guide):
    from vlmbook.fusion.train import build_vlm_tiny

    rebuilt = build_vlm_tiny(artifact_specs()["vlm-tiny"].seed)
    assert rebuilt.training_log[-1]["all"] == pytest.approx(guide.training_log[-1]["all"], abs=1.0)
