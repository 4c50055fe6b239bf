"""The half-width student distilled with Chapter 5's recipe (Chapter 6 §6.4)."""
import pytest
import torch
import torch.nn.functional as F

from vlmbook.fusion import VisionLanguageModel, VLMConfig
from vlmbook.fusion.train import Batcher, DemoConfig, answer_loss, museum_qa
from vlmbook.train.losses import distill_loss
from vlmbook.train.student import distill_student, half_width_config, kd_loss, lm_parameters


def test_half_width_config_halves_the_language_model():
    cfg = VLMConfig.tiny()
    half = half_width_config(cfg)
    assert (half.hidden, half.intermediate, half.layers, half.heads) == (40, 120, cfg.layers, cfg.heads)
    n_t, n_s = lm_parameters(VisionLanguageModel(cfg)), lm_parameters(VisionLanguageModel(half))
    assert n_s <= n_t / 2 and n_s > 0.4 * n_t  # the widest that fits in half
    assert (half.hidden // half.heads) % 2 == 0  # RoPE needs an even head size
    base = half_width_config(VLMConfig.base())
    assert base.hidden == 176 and base.hidden % (2 * base.heads) == 0
    with pytest.raises(ValueError, match="too narrow"):
        half_width_config(cfg.replace(hidden=8, heads=4, kv_heads=4))


def test_kd_loss_is_the_mix_of_its_two_terms():
    torch.manual_seed(0)
    cfg = VLMConfig(route="continuous", image_side="features", compressor="none", feature_dim=8, hidden=32,
                    intermediate=64, layers=2, corpus_scenes=200, grid=3)
    teacher, student = VisionLanguageModel(cfg).eval(), VisionLanguageModel(cfg.replace(seed=1)).eval()
    data = museum_qa("train", 6)
    data.features = torch.randn(len(data.images), 9, 8)
    batch = Batcher(student, data, 8).batch(0)
    with torch.no_grad():
        ce = answer_loss(student, batch)[0]
        s_logits = student(batch["input_ids"], positions=batch["targets"], features=batch["features"])
        t_logits = teacher(batch["input_ids"], positions=batch["targets"], features=batch["features"])
        kd = distill_loss(s_logits, t_logits, 2.0)
        assert torch.allclose(kd_loss(teacher, 2.0, 0.0)(student, batch)[0], ce)
        assert torch.allclose(kd_loss(teacher, 2.0, 1.0)(student, batch)[0], kd)
        assert torch.allclose(kd_loss(teacher, 2.0, 0.3)(student, batch)[0], 0.3 * kd + 0.7 * ce)
        assert float(kd_loss(teacher, 2.0, 1.0)(teacher, batch)[0]) == pytest.approx(0.0, abs=1e-6)  # itself
        assert torch.allclose(ce, F.cross_entropy(s_logits.float(), batch["labels"]))
    with pytest.raises(ValueError, match="alpha"):
        kd_loss(teacher, 2.0, 1.5)


def test_distill_student_shares_the_frozen_image_side_and_learns():
    torch.manual_seed(0)
    teacher = VisionLanguageModel(VLMConfig.tiny().replace(corpus_scenes=200)).eval()
    demo = DemoConfig.tiny().replace(steps=12, train_scenes=30, test_scenes=3, warmup=2, curriculum=6, batch_size=16)
    train, test = museum_qa("train", 30), museum_qa("test", 3)
    student, hist = distill_student(teacher, demo, train=train, eval_data=test, device="cpu")
    assert student.config.hidden == 40 and len(hist) >= 2
    assert hist[-1]["loss"] < hist[0]["loss"]
    for a, b in zip(student.encoder.parameters(), teacher.encoder.parameters()):
        assert torch.equal(a, b) and not a.requires_grad
    for a, b in zip(student.compressor.parameters(), teacher.compressor.parameters()):
        assert torch.equal(a, b)
    assert 0.0 <= student.training_log[-1]["all"] <= 100.0
    with pytest.raises(ValueError, match="clip image side"):
        distill_student(VisionLanguageModel(VLMConfig(route="continuous", hidden=32, intermediate=64,
                                                      corpus_scenes=200)), demo)


def test_summarise_students(tmp_path):
    import json

    from vlmbook.train.student import summarise_students

    def rec(seed, alpha, acc):
        return {"seed": seed, "alpha": alpha, "steps": 10, "accuracy": {"all": acc}, "retention": round(acc / 80, 4),
                "teacher_accuracy": 80.0, "lm_parameters": 47, "teacher_lm_parameters": 100}
    p = tmp_path / "s.jsonl"
    hidden = {**rec(2, 0.5, 88.0), "hidden_weight": 1.0}
    p.write_text("".join(json.dumps(rec(*a)) + "\n" for a in ((0, 0.5, 76.0), (1, 0.5, 80.0), (0, 0.0, 60.0)))
                 + json.dumps(hidden) + "\n")
    out = summarise_students(p)
    assert set(out) == {"logits", "answers only", "logits + hidden states"}
    assert out["logits"]["accuracy"] == {"mean": 78.0, "min": 76.0, "max": 80.0}
    assert out["logits"]["retention"]["mean"] == 0.975 and out["logits"]["seeds"] == [0, 1]
    assert out["logits + hidden states"]["hidden_weight"] == 1.0 and out["logits + hidden states"]["seeds"] == [2]
    assert out["answers only"]["parameter_ratio"] == 0.47
    with pytest.raises(ValueError, match="not found"):
        summarise_students(tmp_path / "missing.jsonl")


def test_hidden_projection_and_hidden_mse_term():
    from vlmbook.train.student import hidden_projection

    P = hidden_projection(40, 64, seed=3)
    assert P.shape == (64, 40) and torch.allclose(P.T @ P, torch.eye(40), atol=1e-5)
    assert torch.equal(P, hidden_projection(40, 64, seed=3))
    with pytest.raises(ValueError, match="wider"):
        hidden_projection(65, 64)
    torch.manual_seed(0)
    cfg = VLMConfig(route="continuous", image_side="features", compressor="none", feature_dim=8, hidden=32,
                    intermediate=64, layers=2, corpus_scenes=200, grid=3)
    teacher, student = VisionLanguageModel(cfg).eval(), VisionLanguageModel(cfg.replace(hidden=16, seed=1)).eval()
    data = museum_qa("train", 6)
    data.features = torch.randn(len(data.images), 9, 8)
    batch = Batcher(student, data, 8).batch(0)
    Q = hidden_projection(16, 32)
    with torch.no_grad():
        base, _ = kd_loss(teacher, 2.0, 0.5)(student, batch)
        full, stats = kd_loss(teacher, 2.0, 0.5, hidden_weight=0.5, projection=Q)(student, batch)
        keep = batch["input_ids"] != student.ids["pad"]

        def states(m):
            e, media, ids = m.embed(batch["input_ids"], features=batch["features"])
            return m._run_lm(e, media, ids, None)[0]
        mse = F.mse_loss(states(student)[keep], states(teacher)[keep] @ Q)
    assert torch.allclose(full, base + 0.5 * mse, atol=1e-6) and stats["hidden_mse"] == pytest.approx(float(mse))
    with pytest.raises(ValueError, match="projection"):
        kd_loss(teacher, 2.0, 0.5, hidden_weight=1.0)
