"""Chapter 5: the committed ``vlm-tiny`` artifact (``vlmbook artifacts build vlm-tiny``).

``vlmbook.fusion.train.build_vlm_tiny`` trains the continuous route of ``VLMConfig.tiny()`` with
``DemoConfig.offline()`` (15,000 LM steps, one thread, about ten minutes) and scores the 200 test
exhibits every 1,500 steps; that log is committed with the weights. Rebuilding takes too long
for the test suite; these tests check that the committed model still scores what its log says.
"""
from __future__ import annotations

import pytest

from vlmbook.fusion import VLM_TINY, VisionLanguageModel
from vlmbook.fusion.train import DemoConfig, evaluate, majority_baseline, museum_qa
from vlmbook.hub import REPO_ARTIFACTS, artifact_specs, load_artifact


@pytest.fixture(scope="module")
def guide():
    return load_artifact("vlm-tiny", VisionLanguageModel)


def test_registered_and_committed():
    spec = artifact_specs()["vlm-tiny"]
    assert spec == VLM_TINY and spec.builder == "vlmbook.fusion.train:build_vlm_tiny" and spec.seed == 0
    assert (REPO_ARTIFACTS / spec.key / "model.safetensors").is_file()
    assert (REPO_ARTIFACTS / spec.key / "training_log.json").is_file()


def test_committed_model_scores_its_logged_accuracy(guide):
    demo = DemoConfig.offline()
    log = guide.training_log
    assert [e["step"] for e in log] == list(range(demo.steps // 10, demo.steps + 1, demo.steps // 10))
    cfg = guide.config
    test = museum_qa("test", demo.test_scenes, cfg.image_size)
    acc = evaluate(guide, test)
    # 1,400-odd answers: one flipped arg-max moves "all" by under 0.1 point.
    assert acc["all"] == pytest.approx(log[-1]["all"], abs=0.25)
    base = majority_baseline(museum_qa("train", demo.train_scenes, cfg.image_size), test)
    assert acc["all"] > base["all"] + 20  # it reads the images


def test_guide_counts_on_unseen_exhibits(guide):
    from vlmbook.data import Museum

    val = Museum("val", size=guide.config.image_size)
    said = [guide.ask(val.tensors(i, 1)[0], qa.question) == qa.answer
            for i in range(10) for qa in val[i].qas if qa.qtype == "count"]
    assert sum(said) >= 0.6 * len(said)
