"""The long metrics schema and ``python -m vlmbook.bench all`` (Chapter 7 §7.5)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from vlmbook.bench import BenchResult, available
from vlmbook.eval import SchemaError
from vlmbook.eval.metrics import flatten, metrics_table, read_metrics, write_metrics

TABLE = {"N256": {"full_ms": 2.5, "time_ratio": 4.0, "flags": [True, None]}, "label": "x", "nan": float("nan"),
         "arr": np.array([1, 2])}


def test_flatten():
    rows = flatten(TABLE)
    assert ("N256", "full_ms", 2.5, None) in rows and ("N256", "time_ratio", 4.0, None) in rows
    assert ("N256/flags", "0", 1.0, None) in rows and ("N256/flags", "1", None, None) in rows
    assert ("", "label", None, "x") in rows and ("", "nan", None, "nan") in rows
    assert ("arr", "1", 2.0, None) in rows  # arrays become lists
    assert flatten(3.0) == [("", "value", 3.0, None)]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_metrics_round_trip(tmp_path, suffix):
    t = BenchResult("demo", 4.0, "x faster", TABLE).metrics(quick=True)
    assert t.column("path").to_pylist()[:2] == ["headline", "headline"]
    assert t.column("value").to_pylist()[0] == 4.0 and t.column("text").to_pylist()[1] == "x faster"
    back = read_metrics(write_metrics(t, tmp_path / f"m{suffix}"))
    assert back.equals(t)


def test_metrics_errors(tmp_path):
    t = metrics_table("demo", TABLE)
    with pytest.raises(SchemaError, match="versions"):
        from vlmbook.eval.metrics import validate_metrics
        validate_metrics(t.set_column(0, "schema_version", pa.array([2] * t.num_rows, pa.int32())))
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SchemaError):
        read_metrics(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="benchmark name"):
        metrics_table("", TABLE)


def test_all_is_not_a_benchmark():
    assert "all" not in available() and "eval" in available()


def test_run_all_report(tmp_path):
    from vlmbook.bench.all import run_all

    calls = []

    def fake(name, quick, out_dir):
        calls.append((name, quick))
        if name == "data":
            raise RuntimeError("boom")
        return BenchResult(name, 2.0, "x vs reference", {"ours_ms": 1.0, "speed_ratio": 2.0})

    path = run_all(quick=True, out_dir=tmp_path, names=["coder", "data"], runner=fake)
    assert calls == [("coder", True), ("data", True)]
    text = path.read_text()
    assert path.name == "all.quick.md"
    assert "`coder: 2 x vs reference`" in text and "error: RuntimeError: boom" in text
    assert "| torch |" in text and "load avg" in text and "'torch':" in text
    assert "| table | speed_ratio | 2 |" in text.split("all figures")[0]  # ratios reported
    m = read_metrics(tmp_path / "all.quick.metrics.csv")
    assert set(m.column("benchmark").to_pylist()) == {"coder"}
    with pytest.raises(ValueError, match="unknown benchmarks"):
        run_all(names=["nope"], out_dir=tmp_path, runner=fake)


def test_main_dispatch(tmp_path, monkeypatch):
    import vlmbook.bench.all as all_mod
    from vlmbook.bench.__main__ import main

    seen = {}
    monkeypatch.setattr(all_mod, "run_all", lambda quick, out, names: seen.update(q=quick, out=out, names=names))
    assert main(["all", "--quick", "--only", "data,vq", "--out", str(tmp_path)]) == 0
    assert seen == {"q": True, "out": str(tmp_path), "names": ["data", "vq"]}


def test_cli_bench_dispatches_like_python_m(tmp_path, monkeypatch, capsys):
    # `vlmbook bench …` and `python -m vlmbook.bench …` parse and run the same arguments (no benchmark runs here)
    import vlmbook.bench.__main__ as bench_main
    import vlmbook.bench.all as all_mod
    from vlmbook.cli import main as cli_main

    seen = []
    monkeypatch.setattr(all_mod, "run_all", lambda quick, out, names: seen.append(("all", quick, out, names)))
    monkeypatch.setattr(bench_main, "run_benchmark", lambda name, quick, out_dir, **kw: seen.append((name, quick, out_dir, kw)))
    assert cli_main(["bench", "all", "--quick", "--out", str(tmp_path)]) == 0
    assert cli_main(["bench", "all", "--only", "data,vq"]) == 0
    assert cli_main(["bench", "data", "--quick", "--seeds", "2", "--out", str(tmp_path)]) == 0
    assert bench_main.main(["all", "--quick", "--out", str(tmp_path)]) == 0
    assert seen == [("all", True, str(tmp_path), None), ("all", False, "bench/results", ["data", "vq"]),
                    ("data", True, str(tmp_path), {"seeds": 2}), ("all", True, str(tmp_path), None)]
    # options that do not fit the name are user errors (one line, exit 2), not silently ignored
    assert cli_main(["bench", "all", "--seeds", "2"]) == 2 and cli_main(["bench", "data", "--only", "vq"]) == 2
    assert "--seeds goes with one benchmark" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["bench", "nope"])
    assert len(seen) == 4


def test_vq_quick_reads_the_full_record_and_rescores_the_artifact(tmp_path):
    import json

    from vlmbook.bench import vq

    table = vq.recorded_psnr_vs_tokens()
    assert table["source"].startswith("committed full record vq.json")
    full = json.loads(vq.RECORD.read_text())["table"]["psnr_vs_tokens"]
    assert {k: v for k, v in table.items() if k != "source"} == full
    (tmp_path / "q.json").write_text(json.dumps({"quick": True, "table": {"psnr_vs_tokens": {}}}))
    with pytest.raises(ValueError, match="not a full vq record"):
        vq.recorded_psnr_vs_tokens(tmp_path / "q.json")
    with pytest.raises(ValueError, match="not found"):
        vq.recorded_psnr_vs_tokens(tmp_path / "missing.json")
    check = vq.artifact_check()  # property: the committed weights reproduce their recorded metrics
    assert check["live"] == check["recorded"] and check["psnr_diff_db"] == 0.0
