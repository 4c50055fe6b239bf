"""vlmbook.eval.taxonomy on constructed cases, and Chapter 7's figures (Chapter 7 §7.3)."""
from __future__ import annotations

import numpy as np
import pytest

from vlmbook.data.museum import QA, MuseumObject, Scene, support_patches
from vlmbook.eval import make_table, majority_predictions
from vlmbook.eval.taxonomy import (CATEGORIES, answer_confusion, category_shares, classify_error, classify_table,
                                   error_counts, valid_answer)


def _obj(shape, colour, size, cell):
    return MuseumObject(shape, colour, size, (cell % 3 + 0.5) / 3, (cell // 3 + 0.5) / 3, 0.1, cell)


# red circle top left (cell 0), blue star centre (cell 4), green vase bottom right (cell 8)
SCENE = Scene((0, 2, 0), (_obj("circle", "red", "small", 0), _obj("star", "blue", "large", 4),
                          _obj("vase", "green", "medium", 8)), 0, (0.7, 0.7, 0.7), None)
COLOUR = QA("What colour is the circle?", "red", "colour", (0,))
SHAPE = QA("What shape is the blue object?", "star", "shape", (1,))
COUNT = QA("How many objects are in the exhibit?", "3", "count", (0, 1, 2))
EXISTS_YES = QA("Is there a red circle?", "yes", "exists", (0,))
EXISTS_NO = QA("Is there a white ring?", "no", "exists", ())
LOCATE = QA("Where is the blue star?", "centre", "locate", (1,))
SPATIAL = QA("Is the red circle above the green vase?", "yes", "spatial", (0, 2))
COMPARE = QA("Which is larger, the red circle or the blue star?", "blue star", "compare", (0, 1))


@pytest.mark.parametrize("qa, answer, cited, expected", [
    (COLOUR, "red", [], None),                          # right
    (COLOUR, "circle", [], "language"),                 # a shape for a colour question
    (COLOUR, "red [CITE:<v_", [], "language"),          # malformed output
    (COLOUR, "", [], "language"),
    (COLOUR, "blue", [], "localisation"),               # the star's colour: read the wrong object
    (COLOUR, "purple", [], "perception"),               # nobody is purple: misread the right object
    (COLOUR, "purple", [8], "localisation"),            # ...but it cites the vase's patch
    (COLOUR, "purple", [0], "perception"),              # cites the right patch, reads it wrong
    (SHAPE, "vase", [], "localisation"),
    (SHAPE, "diamond", [], "perception"),
    (COUNT, "4", [], "reasoning"),
    (COUNT, "four", [], "language"),
    (EXISTS_YES, "no", [], "localisation"),             # did not find an object that is there
    (EXISTS_NO, "yes", [], "perception"),               # saw an object that is absent
    (LOCATE, "top left", [], "localisation"),
    (LOCATE, "middle", [], "language"),
    (SPATIAL, "no", [], "reasoning"),
    (SPATIAL, "no", [0, 8], "reasoning"),
    (SPATIAL, "no", [0], "localisation"),               # only one of the two objects cited
    (COMPARE, "red circle", [], "reasoning"),           # right objects, wrong relation
    (COMPARE, "green vase", [], "localisation"),        # an object outside the comparison
    (COMPARE, "blue", [], "language"),
])
def test_classify_constructed(qa, answer, cited, expected):
    assert classify_error(SCENE, qa, answer, cited, grid=3) == expected


def test_support_patches_of_constructed_scene():
    # the constructed objects sit in the centres of their cells: the rules above rely on it
    assert support_patches(SCENE, COLOUR, 3) == [0] and support_patches(SCENE, SPATIAL, 3) == [0, 8]


def test_valid_answer():
    assert valid_answer("plaque", "42") and not valid_answer("plaque", "042") and not valid_answer("plaque", "0")
    assert valid_answer("compare", "red circle") and not valid_answer("compare", "red")
    with pytest.raises(ValueError, match="unknown question type"):
        valid_answer("mood", "happy")


def test_table_counts_and_confusion():
    t = majority_predictions("test", n_scenes=12, train_scenes=50)
    cats = classify_table(t)
    correct = t.column("correct").to_pylist()
    assert [c is None for c in cats] == correct
    counts = error_counts(t)
    assert sum(sum(v.values()) for v in counts.values()) == correct.count(False)
    assert all(list(v) == list(CATEGORIES) for v in counts.values())
    # the majority baseline always gives a valid answer and never cites: no language errors, and
    # its wrong counts are reasoning by rule
    assert sum(v["language"] for v in counts.values()) == 0
    assert counts["count"]["reasoning"] == sum(1 for q, c in zip(t.column("qtype").to_pylist(), correct)
                                               if q == "count" and not c)
    shares = category_shares(counts)
    assert sum(shares.values()) == pytest.approx(1.0)
    refs, answers, m = answer_confusion(t, "colour")
    assert m.sum() == t.column("qtype").to_pylist().count("colour")
    assert (m > 0).sum(0).nonzero()[0].size == 1  # one answer column used by the baseline
    with pytest.raises(ValueError, match="no 'mood' questions"):
        answer_confusion(t, "mood")


def test_citations_name_the_museum_cells_whatever_the_image_tokens():
    """A guide with M = 4 image tokens still cites the nine cells: a right citation of cell 8 is no
    localisation error, and the verdict does not depend on the row's image tokens."""
    from vlmbook.eval.schema import make_table
    from vlmbook.eval.taxonomy import CITATION_GRID

    assert CITATION_GRID == 3
    t = majority_predictions("test", n_scenes=6, train_scenes=50)
    rows = t.to_pylist()
    wrong = [i for i, r in enumerate(rows) if not r["correct"]]
    base = classify_table(t)
    for m in (1, 4, 16):
        other = make_table([{**r, "image_tokens": m} for r in rows])
        assert classify_table(other) == base
    # wrong answers that cite their true support cells: on the 3 x 3 grid the citation is right, read
    # on a 2 x 2 grid (M = 4) it would not be; the rows are judged on the cells
    cited = [support_patches(*_scene_qa(rows[i]["question_id"]), 3) for i in wrong]
    four = make_table([{**rows[i], "image_tokens": 4, "cited_patches": c} for i, c in zip(wrong, cited)])
    want = [classify_error(*_scene_qa(rows[i]["question_id"]), rows[i]["answer"], c, grid=3) for i, c in zip(wrong, cited)]
    on_four = [classify_error(*_scene_qa(rows[i]["question_id"]), rows[i]["answer"], c, grid=2) for i, c in zip(wrong, cited)]
    assert classify_table(four) == want and want != on_four


def _scene_qa(qid):
    from vlmbook.eval.harness import lookup

    return lookup(qid)


def test_reference_mismatch_raises():
    row = majority_predictions("test", n_scenes=1, train_scenes=20).slice(0, 1).to_pylist()[0]
    row.update(reference="nonsense", answer="nonsense", output="nonsense", correct=True)
    with pytest.raises(ValueError, match="not the museum's answer"):
        classify_table(make_table([row]))


def test_figures():
    from vlmbook.plot.eval import accuracy_intervals, confusion_heatmap, error_heatmap

    counts = {"colour": dict.fromkeys(CATEGORIES, 1), "count": dict.fromkeys(CATEGORIES, 0)}
    fig = error_heatmap(counts)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["colour", "count"]
    fig = confusion_heatmap(["a", "b"], ["a", "b", "c"], np.eye(2, 3))
    assert fig.axes[0].get_xlabel() == "model answer"
    fig = accuracy_intervals({"A": (60.0, 55.0, 65.0), "B": (50.0, 45.0, 56.0)})
    assert len(fig.axes[0].get_yticklabels()) == 2
    with pytest.raises(ValueError):
        accuracy_intervals({"A": (70.0, 55.0, 65.0)})
    with pytest.raises(ValueError):
        confusion_heatmap(["a"], ["a", "b"], np.eye(2))
    with pytest.raises(ValueError):
        error_heatmap({})
