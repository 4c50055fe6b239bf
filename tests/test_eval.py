"""vlmbook.eval: results schema, adapter, harness and CLI (Chapter 7 §7.1)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from vlmbook.eval import (COLUMNS, SCHEMA_VERSION, EvalBatch, SchemaError, concat, evaluate_model, lookup,
                          majority_predictions, make_table, model_info, parse_output, predict, question_id,
                          read_predictions, runs, score_citations, select_run, write_predictions)
from vlmbook.data.museum import generate_scene, questions, support_patches


def _row(i: int = 0, run: str = "r1", correct: bool = True, **kw) -> dict:
    ref = "red"
    row = {
        "run_id": run, "model": "m", "config_hash": "abc", "route": "continuous", "compressor": "none",
        "image_tokens": 9, "seed": 0, "split": "test", "question_id": question_id("test", 0, i, 0),
        "qtype": "colour", "question": "What colour is the circle?", "reference": ref,
        "output": ref if correct else "blue [CITE:<v_1>]", "answer": ref if correct else "blue",
        "correct": correct, "cited_patches": [] if correct else [1], "citation_precision": 1.0,
        "citation_recall": None, "encode_ms": 1.5, "ttft_ms": None, "tokens_per_s": 10.0, "peak_mem_mb": 100.0,
        "versions": json.dumps({"torch": "x"}), "device": "cpu", "threads": 1,
    }
    row.update(kw)
    return row


ROWS = [_row(0), _row(1, correct=False), _row(2, answer="", output="", correct=False)]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_round_trip(tmp_path, suffix):
    t = make_table(ROWS)
    assert t.column_names == list(COLUMNS) and t.num_rows == 3
    path = write_predictions(ROWS, tmp_path / f"p{suffix}")
    back = read_predictions(path)
    assert back.equals(t)
    assert back.column("cited_patches").to_pylist() == [[], [1], [1]]
    assert back.column("ttft_ms").to_pylist() == [None] * 3
    assert back.column("answer").to_pylist()[2] == ""  # an empty answer is not a missing one
    assert set(back.column("schema_version").to_pylist()) == {SCHEMA_VERSION}


def test_schema_errors(tmp_path):
    with pytest.raises(SchemaError, match="missing columns \\['seed'\\]"):
        make_table([{k: v for k, v in _row().items() if k != "seed"}])
    with pytest.raises(SchemaError, match="unknown columns \\['extra'\\]"):
        make_table([_row(extra=1)])
    with pytest.raises(SchemaError, match="correct=True but answer"):
        make_table([_row(answer="blue")])
    with pytest.raises(SchemaError, match="citation_precision"):
        make_table([_row(citation_precision=1.5)])
    with pytest.raises(SchemaError, match="appears twice"):
        make_table([_row(0), _row(0)])
    with pytest.raises(SchemaError, match="missing values"):
        make_table([_row(route=None)])
    with pytest.raises(SchemaError, match="do not fit"):
        make_table([_row(image_tokens="many")])
    with pytest.raises(ValueError, match=".parquet or .csv"):
        write_predictions(ROWS, tmp_path / "p.json")
    with pytest.raises(FileNotFoundError):
        read_predictions(tmp_path / "none.parquet")


def test_mixed_and_foreign_files(tmp_path):
    t = make_table(ROWS)
    # rows of two schema versions in one file
    mixed = t.set_column(0, "schema_version", pa.array([1, 2, 1], pa.int32()))
    pq.write_table(mixed, tmp_path / "mixed.parquet")
    with pytest.raises(SchemaError, match="mixed schema versions \\[1, 2\\]"):
        read_predictions(tmp_path / "mixed.parquet")
    newer = t.set_column(0, "schema_version", pa.array([2, 2, 2], pa.int32()))
    pq.write_table(newer, tmp_path / "newer.parquet")
    with pytest.raises(SchemaError, match="schema version 2"):
        read_predictions(tmp_path / "newer.parquet")
    # a CSV of something else (another benchmark's table)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SchemaError, match="missing columns"):
        read_predictions(tmp_path / "other.csv")
    # a CSV whose list column is not a JSON list
    write_predictions(ROWS, tmp_path / "p.csv")
    text = (tmp_path / "p.csv").read_text().replace('"[1]"', '"1;2"')
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(SchemaError, match="cited_patches"):
        read_predictions(tmp_path / "bad.csv")
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match="not a readable Parquet"):
        read_predictions(tmp_path / "garbage.parquet")


def test_concat_and_runs():
    t = concat([make_table(ROWS), make_table([_row(0, run="r2")])])
    assert runs(t) == ["r1", "r2"] and select_run(t, "r2").num_rows == 1
    with pytest.raises(SchemaError, match="appears twice"):
        concat([make_table(ROWS), make_table(ROWS)])
    with pytest.raises(ValueError, match="no run"):
        select_run(t, "r3")


def test_parse_output_and_lookup():
    assert parse_output("red [CITE:<p_3>] [CITE:<p_4>]") == ("red", [3, 4])
    assert parse_output("[CITE:<p_3><p_4>] red") == ("red", [3, 4])  # cite-first, as vlm-tiny v2 answers
    assert parse_output("red [CITE:<v_3>]") == ("red [CITE:<v_3>]", [])  # <v_k> is a codebook word, not a patch
    assert parse_output("red [CITE:<v_") == ("red [CITE:<v_", [])
    with pytest.raises(TypeError):
        parse_output(3)
    sc, qa = lookup("test:0:5:2")
    assert qa == questions(generate_scene("test", 5, 0))[2]
    with pytest.raises(ValueError, match="question id"):
        lookup("test:0:5")
    patches = support_patches(sc, qa, 3)
    assert score_citations(patches, sc, qa, 3) == (1.0, 1.0)
    assert score_citations([], sc, qa, 3)[0] == 1.0
    if patches:
        assert score_citations([99], sc, qa, 3) == (0.0, 0.0)  # out-of-grid cites count as wrong


def test_majority_rows():
    t = majority_predictions("test", n_scenes=10, train_scenes=50)
    assert t.num_rows > 30 and set(t.column("route").to_pylist()) == {"baseline"}
    c = np.array(t.column("correct").to_pylist())
    assert 0.05 < c.mean() < 0.6
    # the baseline answers each type with one answer
    by_type = {}
    for qt, a in zip(t.column("qtype").to_pylist(), t.column("answer").to_pylist()):
        by_type.setdefault(qt, set()).add(a)
    assert all(len(v) == 1 for v in by_type.values())


@pytest.fixture(scope="module")
def vlm():
    from vlmbook.fusion import VisionLanguageModel, VLMConfig

    cfg = VLMConfig.tiny().replace(hidden=32, intermediate=64, enc_channels=8, layers=1, corpus_scenes=50,
                                   bpe_vocab=300)
    return VisionLanguageModel(cfg).eval()


def test_predict_matches_generate(vlm):
    torch.manual_seed(0)
    s = vlm.config.image_size  # 64 px: the clip-tiny encoder of VLMConfig.tiny
    img = torch.rand(3, s, s)
    qs = ["What colour is the star?", "Where is the red ring?"]
    preds = predict(vlm, EvalBatch(img, qs), max_new_tokens=5)
    assert len(preds) == 2
    for q, p in zip(qs, preds):
        assert p.output == vlm.ask(img, q, max_new_tokens=5)  # prompt caching changes nothing
        assert p.encode_ms > 0 and p.ttft_ms > p.encode_ms * 0  # timings recorded
    assert predict(vlm, EvalBatch(img, qs), max_new_tokens=5, timing=False)[0].ttft_ms is None
    with pytest.raises(ValueError, match="one \\(3, H, W\\) image"):
        predict(vlm, EvalBatch(img[None], qs))
    info = model_info(vlm)
    assert info["image_tokens"] == 9 and info["route"] == "continuous" and len(info["config_hash"]) == 16


def test_evaluate_model_rows(vlm, tmp_path):
    t = evaluate_model(vlm, "test", n_scenes=2, name="tiny", timing=False)
    n_q = sum(1 for i in range(2) for qa in questions(generate_scene("test", i)) if qa.qtype != "plaque")
    assert t.num_rows == n_q
    row = t.slice(0, 1).to_pylist()[0]
    assert row["question_id"] == "test:0:0:0" and row["reference"] == lookup("test:0:0:0")[1].answer
    assert row["threads"] == torch.get_num_threads() and row["device"] == "cpu"
    write_predictions(t, tmp_path / "e.csv")
    assert read_predictions(tmp_path / "e.csv").equals(t)


def test_cli_eval(vlm, tmp_path, capsys):
    from vlmbook.cli import main

    vlm.save_pretrained(tmp_path / "m")
    out = tmp_path / "p.parquet"
    assert main(["eval", str(tmp_path / "m"), "--scenes", "1", "--out", str(out), "--no-timing"]) == 0
    assert "predictions" in capsys.readouterr().out
    t = read_predictions(out)
    assert t.num_rows > 0 and set(t.column("model").to_pylist()) == {"m"}
    assert main(["eval", str(tmp_path / "nope/x"), "--out", str(out)]) == 2


def test_jpeg_round_trip():
    from vlmbook.data.museum import Museum
    from vlmbook.eval.harness import jpeg_round_trip

    img = Museum("test", size=72, length=1).tensors(0, 1)[0]
    hi, lo = jpeg_round_trip(img, 95), jpeg_round_trip(img, 5)
    assert hi.shape == img.shape and hi.dtype == torch.float32
    err_hi, err_lo = float((hi - img).abs().mean()), float((lo - img).abs().mean())
    assert 0 < err_hi < err_lo < 0.2
    assert torch.equal(jpeg_round_trip(img, 50), jpeg_round_trip(img, 50))
    with pytest.raises(ValueError, match="quality"):
        jpeg_round_trip(img, 0)


def test_evaluate_with_transform(vlm):
    plain = evaluate_model(vlm, "test", n_scenes=1, timing=False)
    same = evaluate_model(vlm, "test", n_scenes=1, timing=False, transform=lambda im: im.clone())
    assert plain.equals(same)
    with pytest.raises(ValueError, match="changed the image shape"):
        evaluate_model(vlm, "test", n_scenes=1, timing=False, transform=lambda im: im[:, :-8, :-8])


def test_predict_with_a_cached_prefix_matches_generate(vlm):
    """An image-first model reuses its image prefix across questions; the answers do not change."""
    from vlmbook.eval.adapter import can_cache_prefix
    from vlmbook.fusion import VisionLanguageModel, VLMConfig

    torch.manual_seed(0)
    m = VisionLanguageModel(VLMConfig(route="continuous", hidden=32, intermediate=64, enc_channels=8, layers=1,
                                      corpus_scenes=50, bpe_vocab=300, image_size=48, grid=3)).eval()
    assert can_cache_prefix(m) and not can_cache_prefix(vlm)  # vlm: question first, like VLMConfig.tiny
    img = torch.rand(3, 48, 48)
    qs = ["What colour is the star?", "Where is the red ring?"]
    preds = predict(m, EvalBatch(img, qs), max_new_tokens=5)
    for q, p in zip(qs, preds):
        assert p.output == m.ask(img, q, max_new_tokens=5)
        assert p.ttft_ms > 0 and p.encode_ms > 0
