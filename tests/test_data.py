"""Tests for vlmbook.data: the museum, the bundled photos, readers' folders."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vlmbook.data import (
    COLOUR_NAMES,
    LOCATIONS,
    QUESTION_TYPES,
    SHAPES,
    EVAL_PHOTOS,
    TRAIN_PHOTOS,
    ImageFolder,
    Museum,
    caption,
    cite,
    eval_images,
    generate_scene,
    load_image,
    load_photo,
    patch_box,
    preference_pairs,
    questions,
    random_crops,
    render,
    scene_seed,
    support_patches,
)


def test_scene_is_deterministic_and_golden():
    a, b = generate_scene("train", 0), generate_scene("train", 0)
    assert a == b
    assert caption(a) == (
        "An exhibit with five objects: a medium white star at the top left, a large orange bowl at the "
        "top right, a medium yellow diamond at the left, a large orange ring at the centre, a large "
        "yellow vase at the bottom left."
    )
    img = render(a, 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert np.array_equal(img, render(b, 64))
    assert float(img.mean()) == pytest.approx(GOLDEN_MEAN_TRAIN0_64, abs=0.05)


GOLDEN_MEAN_TRAIN0_64 = 163.871  # mean pixel value of train #0 at 64 px


def test_rendering_is_bit_identical_to_the_recorded_images():
    # sha256 of 270 rendered exhibits (3 splits, 3 sizes): speed-ups to render must not change a single pixel
    import hashlib

    h = hashlib.sha256()
    for split, n, size in (("train", 200, 64), ("val", 50, 32), ("test", 20, 128)):
        for i in range(n):
            img = render(generate_scene(split, i), size)
            assert img.flags.c_contiguous
            h.update(img.tobytes())
    assert h.hexdigest() == RENDER_DIGEST


RENDER_DIGEST = "356e4890a612c90d1e2c659fca85a89ef6c8792ca39f048bfb87f26a886a7192"


def test_splits_never_share_keys_or_images():
    keys = {split: {scene_seed(split, i) for i in range(500)} for split in ("train", "val", "test")}
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"]) and not (keys["val"] & keys["test"])
    train = {render(generate_scene("train", i), 32).tobytes() for i in range(200)}
    test = {render(generate_scene("test", i), 32).tobytes() for i in range(200)}
    assert not train & test
    assert generate_scene("train", 0, seed=1) != generate_scene("train", 0, seed=0)


def test_scene_invariants():
    counts = set()
    for i in range(400):
        s = generate_scene("val", i)
        counts.add(len(s.objects))
        assert 2 <= len(s.objects) <= 6
        assert len({(o.colour, o.shape) for o in s.objects}) == len(s.objects)
        cells = [o.cell for o in s.objects] + ([s.plaque.cell] if s.plaque else [])
        assert len(set(cells)) == len(cells)
        for o in s.objects:
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            # the object stays inside its own grid cell, so objects never overlap
            assert o.cell % 3 / 3 <= x0 and x1 <= (o.cell % 3 + 1) / 3
            assert o.cell // 3 / 3 <= y0 and y1 <= (o.cell // 3 + 1) / 3
    assert counts == {2, 3, 4, 5, 6}


@pytest.mark.parametrize("size", [32, 64, 100, 256])
def test_render_sizes(size):
    img = render(generate_scene("train", 5), size)
    assert img.shape == (size, size, 3)


@pytest.mark.parametrize("size", [16, 257, 64.0])
def test_render_bad_size(size):
    with pytest.raises(ValueError, match="size"):
        render(generate_scene("train", 0), size)


def test_object_is_drawn_where_the_scene_says():
    s = generate_scene("train", 3)
    img = render(s, 128).astype(float) / 255
    from vlmbook.data.museum import COLOURS

    for o in s.objects:
        if o.shape in ("ring",):
            continue  # a ring's centre is the wall
        cx, cy = int(o.cx * 128), int(o.cy * 128)
        if o.shape == "vase":
            cy = int((o.cy + 0.3 * o.radius) * 128)  # the vase body sits low
        assert np.abs(img[cy, cx] - COLOURS[o.colour]).max() < 0.12, (o, img[cy, cx])


def test_questions_cover_all_types_and_answers_are_true():
    seen = set()
    for i in range(300):
        s = generate_scene("train", i)
        for qa in questions(s):
            seen.add(qa.qtype)
            objs = [s.objects[k] for k in qa.objects]
            if qa.qtype == "colour":
                assert qa.answer == objs[0].colour and qa.answer in COLOUR_NAMES
                assert sum(o.shape == objs[0].shape for o in s.objects) == 1
            elif qa.qtype == "shape":
                assert qa.answer == objs[0].shape and qa.answer in SHAPES
            elif qa.qtype == "count":
                assert int(qa.answer) == len(qa.objects)
                if qa.question.startswith("How many objects"):
                    assert int(qa.answer) == len(s.objects)
            elif qa.qtype == "exists":
                assert qa.answer == ("yes" if qa.objects else "no")
            elif qa.qtype == "locate":
                assert qa.answer == LOCATIONS[objs[0].cell]
            elif qa.qtype == "spatial":
                a, b = objs
                truth = {"left": a.cx < b.cx, "right": a.cx > b.cx, "above": a.cy < b.cy, "below": a.cy > b.cy}
                word = next(w for w in truth if f" {w} " in qa.question)
                assert qa.answer == ("yes" if truth[word] else "no")
            elif qa.qtype == "compare":
                big = max(objs, key=lambda o: o.radius)
                assert qa.answer == big.name
            elif qa.qtype == "plaque":
                assert qa.answer == s.plaque.text
    assert seen == set(QUESTION_TYPES)


def test_yes_no_answers_are_balanced():
    answers = [qa.answer for i in range(600) for qa in questions(generate_scene("train", i))
               if qa.qtype in ("exists", "spatial")]
    share = answers.count("yes") / len(answers)
    assert 0.4 < share < 0.6


def test_support_patches_cover_the_objects():
    s = generate_scene("train", 7)
    qa = next(q for q in questions(s) if q.qtype == "locate")
    o = s.objects[qa.objects[0]]
    for grid in (4, 8, 16):
        patches = support_patches(s, qa, grid)
        centre = int(o.cy * grid) * grid + int(o.cx * grid)
        assert centre in patches
        for k in patches:  # every cited patch touches the object's box
            x0, y0, x1, y1 = patch_box(k, grid, 1000)
            bx0, by0, bx1, by1 = (v * 1000 for v in o.box)
            assert x0 < bx1 and bx0 < x1 and y0 < by1 and by0 < y1
    absent = next(q for i in range(50) for q in questions(generate_scene("train", i)) if q.qtype == "exists" and q.answer == "no")
    assert support_patches(generate_scene("train", 0), absent, 8) == []
    with pytest.raises(ValueError):
        support_patches(s, qa, 0)


def test_patch_box_and_cite():
    assert patch_box(0, 4, 64) == (0, 0, 16, 16)
    assert patch_box(5, 4, 64) == (16, 16, 32, 32)
    with pytest.raises(ValueError):
        patch_box(16, 4, 64)
    assert cite("red", [3, 4]) == "[CITE:<p_3><p_4>] red"
    assert cite("no", []) == "[CITE:] no"


def test_preference_pairs():
    s = generate_scene("train", 2)
    for qa in questions(s):
        pairs = preference_pairs(s, qa, 8)
        kinds = [p.kind for p in pairs]
        assert kinds[0] == "wrong_answer"
        for p in pairs:
            assert p.chosen != p.rejected and p.question == qa.question
            assert p.chosen.endswith("] " + qa.answer) and p.chosen.startswith("[CITE:")
        if support_patches(s, qa, 8):
            assert kinds == ["wrong_answer", "missing_citation", "wrong_citation"]
    assert preference_pairs(s, questions(s)[0], 8) == preference_pairs(s, questions(s)[0], 8)


def test_museum_dataset():
    m = Museum("test", size=48, length=10)
    s = m[3]
    assert s.image.shape == (48, 48, 3) and s.caption and s.qas
    t = m.tensors(0, 4)
    assert t.shape == (4, 3, 48, 48) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    assert np.array_equal((t[3].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), s.image)
    assert len(list(m)) == 10
    with pytest.raises(IndexError):
        m[10]
    with pytest.raises(ValueError, match="split"):
        Museum("holdout")
    with pytest.raises(ValueError, match="size"):
        Museum("train", size=8)


# -- photos ----------------------------------------------------------------------------
def test_photos_split_and_shapes():
    assert not set(TRAIN_PHOTOS) & set(EVAL_PHOTOS)
    for name in TRAIN_PHOTOS + EVAL_PHOTOS:
        img = load_photo(name)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and min(img.shape[:2]) >= 256
    ev = eval_images(256)
    assert len(ev) == 3 and all(e.shape == (256, 256, 3) for e in ev)
    ev[0][0, 0] = 0  # returned arrays are the caller's to edit
    with pytest.raises(ValueError):
        load_photo("lena")


def test_random_crops_deterministic():
    a, b = random_crops(6, 32, seed=3), random_crops(6, 32, seed=3)
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, random_crops(6, 32, seed=4))
    assert 0 <= a.min() and a.max() <= 1
    with pytest.raises(ValueError):
        random_crops(2, 32, split="test")


# -- folders ---------------------------------------------------------------------------
def test_image_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no files"):
        ImageFolder(tmp_path)
    sub = tmp_path / "a"
    sub.mkdir()
    Image.fromarray(render(generate_scene("val", 0), 64)).save(sub / "one.png")
    Image.fromarray(render(generate_scene("val", 1), 64)[..., 0]).save(tmp_path / "grey.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.warns(UserWarning, match="unreadable"):
        f = ImageFolder(tmp_path)
    assert len(f) == 2 and [p.name for p in f.skipped] == ["bad.jpg"]
    assert f[1].shape == (64, 64, 3)  # grey images are converted to RGB
    crops = f.random_crops(3, 32, seed=0)
    assert crops.shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="at least"):
        f.random_crops(1, 128)
    only_bad = tmp_path / "bad_only"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no readable"):
            ImageFolder(only_bad)
    with pytest.raises(ValueError, match="cannot read"):
        load_image(tmp_path / "bad.jpg")
