"""The museum as a ``datasets`` dataset and an lmms-eval task, offline (Chapter 7 §7.6)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from vlmbook.data.museum import Museum, generate_scene, questions, support_patches
from vlmbook.eval.export import TASK_NAME, export_museum, load_museum, museum_dataset
from vlmbook.eval.harness import lookup
from vlmbook.eval.lmms import doc_to_text, doc_to_visual, pil_to_tensor, process_results


def test_dataset_rows_match_the_museum():
    ds = museum_dataset("test", n_scenes=3)
    n = sum(1 for i in range(3) for qa in questions(generate_scene("test", i)) if qa.qtype != "plaque")
    assert len(ds) == n and str(ds.split) == "test"
    row = ds[0]
    scene, qa = lookup(row["question_id"])
    assert (row["question"], row["answer"], row["qtype"]) == (qa.question, qa.answer, qa.qtype)
    assert row["support_patches"] == support_patches(scene, qa, 3)
    # the image is the exhibit, pixel for pixel (PNG is lossless)
    img = np.asarray(row["image"].convert("RGB"))
    assert np.array_equal(img, Museum("test", size=72, length=3).images(row["scene"], 1)[0])
    t = pil_to_tensor(row["image"], 72)
    assert t.shape == (3, 72, 72) and t.dtype.is_floating_point and float(t.max()) <= 1.0
    assert pil_to_tensor(row["image"], 64).shape == (3, 64, 64)


def test_export_and_reload(tmp_path):
    task = export_museum(tmp_path, "test", n_scenes=2)
    assert task.name == f"{TASK_NAME}.yaml"
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_constructor("!function", lambda loader, node: ("function", loader.construct_scalar(node)))
    cfg = yaml.load(task.read_text(), Loader=_Loader)
    assert cfg["task"] == TASK_NAME and cfg["output_type"] == "generate_until"
    assert cfg["doc_to_visual"] == ("function", "utils.doc_to_visual")
    data = cfg["dataset_kwargs"]["data_files"]["test"]
    ds = load_museum(tmp_path)
    assert len(ds) == len(museum_dataset("test", n_scenes=2)) and data.endswith(".parquet")
    # the generated utils.py exposes the hooks lmms-eval will call
    sys.path.insert(0, str(tmp_path))
    try:
        import utils  # noqa: F401  (the generated module)

        assert utils.process_results is process_results
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("utils", None)
    with pytest.raises(FileNotFoundError):
        load_museum(tmp_path / "nothing")


def test_hooks():
    doc = museum_dataset("test", n_scenes=1)[0]
    assert doc_to_text(doc, {}) == doc["question"]
    assert doc_to_visual(doc)[0].mode == "RGB"
    cites = " ".join(f"[CITE:<p_{k}>]" for k in doc["support_patches"])
    assert process_results(doc, [f"{doc['answer']} {cites}"]) == {"exact_match": 1.0, "citation_precision": 1.0}
    other = next(k for k in range(9) if k not in doc["support_patches"])  # a patch that proves nothing
    wrong = process_results(doc, [f"[CITE:<p_{other}>] nonsense"])
    assert wrong == {"exact_match": 0.0, "citation_precision": 0.0}


def test_wrapper_is_lazy():
    import vlmbook.eval.lmms as m

    import importlib.util

    if importlib.util.find_spec("lmms_eval") is None:  # the locked test environment has no lmms-eval
        assert "lmms_eval" not in sys.modules  # importing the hooks did not need it
        with pytest.raises(ModuleNotFoundError, match="lmms_eval"):
            m.VLMBookLMM  # noqa: B018
    else:
        assert m.VLMBookLMM.__name__ == "VLMBookLMM" and m.manifests()[0].model_id == "vlmbook"
    with pytest.raises(AttributeError):
        m.NotAThing  # noqa: B018
