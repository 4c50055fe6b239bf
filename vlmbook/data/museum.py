"""The museum: procedurally drawn exhibits with known ground truth (used in every chapter).

An exhibit is 2–6 objects (a shape, a colour and a size each) placed in distinct cells of a
3 × 3 grid on a textured wall, sometimes with a numbered plaque. Because the scene is known,
captions, visitor questions, answers, boxes, the image patches that prove each answer, and
preference pairs all follow exactly. Everything is a pure function of ``(seed, split, index)``.
Introduced in the book's "The museum" page; Chapter 1 §1.1 onwards uses it.
"""
from __future__ import annotations

import dataclasses
import functools
import random
from typing import Iterator, Sequence

import numpy as np
from matplotlib.path import Path as _MplPath

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "ring", "vase", "bowl")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "green": (0.10, 0.62, 0.20),
    "blue": (0.12, 0.28, 0.90),
    "yellow": (0.98, 0.86, 0.08),
    "purple": (0.58, 0.18, 0.74),
    "orange": (1.00, 0.52, 0.02),
    "white": (0.98, 0.98, 0.98),
    "black": (0.06, 0.06, 0.06),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
#: Object radius as a fraction of the image side, per size class.
SIZES: dict[str, float] = {"small": 0.075, "medium": 0.105, "large": 0.14}
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)
ROWS = ("top", "middle", "bottom")
COLS = ("left", "centre", "right")
#: Location answers, indexed by grid cell ``3 * row + col``.
LOCATIONS: tuple[str, ...] = ("top left", "top", "top right", "left", "centre", "right",
                              "bottom left", "bottom", "bottom right")
QUESTION_TYPES: tuple[str, ...] = ("colour", "shape", "count", "exists", "locate", "spatial", "compare", "plaque")
#: Question types about one object, and about a relation between two (Chapter 7's breakdown).
SINGLE_OBJECT_TYPES = ("colour", "shape", "exists", "locate")
RELATIONAL_TYPES = ("spatial", "compare")
SPLITS = {"train": 0, "val": 1, "test": 2}
MIN_SIZE, MAX_SIZE = 32, 256
_CELL = 1.0 / 3.0


@dataclasses.dataclass(frozen=True)
class MuseumObject:
    """One exhibit object; positions are normalised to [0, 1] (x right, y down)."""

    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    radius: float
    cell: int

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in normalised coordinates."""
        r = self.radius
        return (self.cx - r, self.cy - r, self.cx + r, self.cy + r)


@dataclasses.dataclass(frozen=True)
class Plaque:
    """A numbered plaque occupying a free grid cell."""

    text: str
    cx: float
    cy: float
    cell: int
    w: float = 0.24
    h: float = 0.12

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.cx - self.w / 2, self.cy - self.h / 2, self.cx + self.w / 2, self.cy + self.h / 2)


@dataclasses.dataclass(frozen=True)
class Scene:
    """The ground truth of one exhibit."""

    seed: tuple[int, ...]
    objects: tuple[MuseumObject, ...]
    wall: int
    tint: tuple[float, float, float]
    plaque: Plaque | None

    def find(self, colour: str | None = None, shape: str | None = None) -> list[int]:
        """Indices of objects matching a colour and/or a shape."""
        return [i for i, o in enumerate(self.objects)
                if (colour is None or o.colour == colour) and (shape is None or o.shape == shape)]


@dataclasses.dataclass(frozen=True)
class QA:
    """A visitor question, its answer, its type and the objects that prove the answer."""

    question: str
    answer: str
    qtype: str
    objects: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """A prompt with a preferred and a rejected response; ``kind`` says what is wrong."""

    question: str
    chosen: str
    rejected: str
    kind: str


# ---------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------
def scene_seed(split: str, index: int, seed: int = 0) -> tuple[int, int, int]:
    """The key ``(seed, split id, index)`` of a scene; different splits never share a key."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
    _check_int("index", index)
    _check_int("seed", seed)
    if not 0 <= index < 2**40 or seed < 0:
        raise ValueError(f"need 0 <= index < 2**40 and seed >= 0, got index={index}, seed={seed}")
    return (seed, SPLITS[split], index)


def _check_int(name: str, value: object) -> None:
    # 1.5 or "10" would otherwise fail deep inside the generator, or silently truncate.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")


def _rng(key: tuple[int, ...], stream: int) -> random.Random:
    # An injective integer from the key: Python's Mersenne Twister seeds from the whole int,
    # and is ~10x cheaper to create than a NumPy Generator (it matters at 5,000 scenes/s).
    seed, split, index = key
    return random.Random(((seed * 4 + split) * 2**40 + index) * 16 + stream)


def generate_scene(split: str = "train", index: int = 0, seed: int = 0) -> Scene:
    """Draw the ground truth of one exhibit (deterministic in its arguments)."""
    key = scene_seed(split, index, seed)
    rng = _rng(key, 0)
    n = rng.randint(2, 6)
    has_plaque = rng.random() < 0.35
    cells = rng.sample(range(9), n + has_plaque)
    combos = rng.sample(range(len(SHAPES) * len(COLOURS)), n)  # (shape, colour) pairs are unique
    objects = []
    for k in range(n):
        size = SIZE_NAMES[rng.randrange(3)]
        jx, jy = rng.random(), rng.random()
        r = SIZES[size] * (0.95 + 0.1 * rng.random())
        cell = cells[k]
        slack = _CELL / 2 - r - 0.01
        cx = (cell % 3 + 0.5) * _CELL + (2 * jx - 1) * slack
        cy = (cell // 3 + 0.5) * _CELL + (2 * jy - 1) * slack
        objects.append(MuseumObject(SHAPES[combos[k] // len(COLOURS)], COLOUR_NAMES[combos[k] % len(COLOURS)],
                                    size, float(cx), float(cy), float(r), cell))
    plaque = None
    if has_plaque:
        cell = cells[n]
        plaque = Plaque(str(rng.randint(1, 99)), (cell % 3 + 0.5) * _CELL, (cell // 3 + 0.5) * _CELL, cell)
    tint = (0.62 + 0.22 * rng.random(), 0.62 + 0.22 * rng.random(), 0.62 + 0.22 * rng.random())
    return Scene(key, tuple(objects), rng.randrange(_N_WALLS), tint, plaque)


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------
_N_WALLS = 6
_SS = 4  # supersampling factor for anti-aliased sprites


def _polygon(points: Sequence[tuple[float, float]]) -> _MplPath:
    return _MplPath(np.asarray(points, dtype=float))


def _star_points(n: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    ang = -np.pi / 2 + np.arange(2 * n) * np.pi / n
    rad = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return list(zip(rad * np.cos(ang), rad * np.sin(ang)))


_POLYS = {
    "triangle": _polygon([(0.0, -0.95), (0.95, 0.78), (-0.95, 0.78)]),
    "diamond": _polygon([(0.0, -1.0), (0.85, 0.0), (0.0, 1.0), (-0.85, 0.0)]),
    "star": _polygon(_star_points()),
}


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean membership of points (u, v) in [-1, 1]² (v down) for each shape."""
    r2 = u * u + v * v
    if shape == "circle":
        return r2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "ring":
        return (r2 <= 1.0) & (r2 >= 0.52**2)
    if shape == "vase":
        body = ((u / 0.68) ** 2 + ((v - 0.32) / 0.62) ** 2) <= 1.0
        neck = (np.abs(u) <= 0.24) & (v >= -0.72) & (v <= 0.3)
        lip = (np.abs(u) <= 0.42) & (v >= -0.95) & (v <= -0.7)
        return body | neck | lip
    if shape == "bowl":
        cup = (v >= -0.25) & ((u * u + (v + 0.25) ** 2) <= 0.95**2)
        foot = (np.abs(u) <= 0.35) & (v >= 0.6) & (v <= 0.92)
        rim = (np.abs(u) <= 0.95) & (v >= -0.38) & (v <= -0.25)
        return cup | foot | rim
    path = _POLYS[shape]
    pts = np.stack([u.ravel(), v.ravel()], 1)
    return path.contains_points(pts).reshape(u.shape)


@functools.lru_cache(maxsize=2048)
def _sprite(shape: str, diameter: int) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased fill and outline alpha masks of side ``diameter + 2`` pixels (cached)."""
    side = diameter + 2
    grow = side / max(diameter, 1)
    t = (np.arange(side * _SS) + 0.5) / (side * _SS) * 2 - 1
    u, v = np.meshgrid(t * grow, t * grow)
    fill = _inside(shape, u, v)
    edge = max(0.08, 1.2 / max(diameter, 1))  # outline about one pixel wide
    outer = _inside(shape, u / (1 + edge), v / (1 + edge))
    pool = lambda m: m.reshape(side, _SS, side, _SS).mean(axis=(1, 3)).astype(np.float32)  # noqa: E731
    a_fill = pool(fill)
    return a_fill, np.clip(pool(outer) - a_fill, 0, 1)


@functools.lru_cache(maxsize=64)
def _walls(size: int) -> np.ndarray:
    """(_N_WALLS, size, size) smooth textures in [0.8, 1.05] (cached per resolution)."""
    rng = np.random.default_rng(12345)
    out = np.empty((_N_WALLS, size, size), np.float32)
    for w in range(_N_WALLS):
        acc = np.zeros((size, size), np.float32)
        for octave, amp in ((4, 0.6), (8, 0.3), (16, 0.15), (32, 0.08)):
            g = rng.random((octave + 1, octave + 1)).astype(np.float32)
            idx = np.linspace(0, octave, size)
            i0 = np.floor(idx).astype(int).clip(0, octave - 1)
            f = (idx - i0).astype(np.float32)
            rows = g[i0] * (1 - f)[:, None] + g[i0 + 1] * f[:, None]
            acc += amp * (rows[:, i0] * (1 - f) + rows[:, i0 + 1] * f)
        acc = (acc - acc.min()) / (np.ptp(acc) + 1e-6)
        out[w] = 0.8 + 0.25 * acc
    return out


@functools.lru_cache(maxsize=64)
def _wall_rows(size: int) -> np.ndarray:
    """(_N_WALLS, size, size · 3) walls with each pixel repeated per channel, so tinting is one multiply
    along rows of ``3 · size`` values (a (size, size, 1) × (3,) broadcast is ~6x slower)."""
    out = np.repeat(_walls(size)[..., None], 3, axis=3).reshape(_N_WALLS, size, 3 * size)
    out.setflags(write=False)  # cached and shared
    return out


_FONT = {  # 3×5 bitmap digits
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001010010010",
    "8": "111101111101111", "9": "111101111001111",
}


@functools.lru_cache(maxsize=4096)
def _text_mask(text: str, height: int) -> np.ndarray:
    """A binary mask of ``text`` in the 3×5 font, scaled to ``height`` pixels."""
    glyphs = [np.array(list(_FONT[c]), dtype=np.float32).reshape(5, 3) for c in text]
    spaced = []
    for g in glyphs:
        spaced += [g, np.zeros((5, 1), np.float32)]
    m = np.concatenate(spaced[:-1], axis=1)
    scale = max(1, height // 5)
    out = np.kron(m, np.ones((scale, scale), np.float32))
    out.setflags(write=False)  # cached and shared
    return out


_OUTLINE = np.array([0.12, 0.1, 0.08], np.float32)
_INK = np.array([0.1, 0.1, 0.1], np.float32)


@functools.lru_cache(maxsize=8192)
def _coloured_sprite(shape: str, diameter: int, colour: str) -> tuple[np.ndarray, np.ndarray]:
    """Premultiplied RGB and transparency (1 − alpha) of a filled, outlined object: one paste per object."""
    fill, outline = _sprite(shape, diameter)
    rgb = fill[..., None] * np.asarray(COLOURS[colour], np.float32) + outline[..., None] * _OUTLINE
    # cached, so a paste is one multiply and one add; the transparency is repeated per channel
    # because a (h, w, 3) × (h, w, 1) broadcast is much slower than an equal-shape multiply
    transparency = np.repeat(1 - (fill + outline)[..., None], 3, axis=2)
    rgb.setflags(write=False)
    transparency.setflags(write=False)
    return rgb, transparency


def _paste_premultiplied(canvas: np.ndarray, rgb: np.ndarray, transparency: np.ndarray, x0: int, y0: int) -> None:
    h, w = transparency.shape[:2]
    H, W = canvas.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if xa == x0 and ya == y0 and xb == x0 + w and yb == y0 + h:  # the common case: fully inside
        region = canvas[ya:yb, xa:xb]
        region *= transparency
        region += rgb
    elif xa < xb and ya < yb:
        sl = (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
        region = canvas[ya:yb, xa:xb]
        region *= transparency[sl]
        region += rgb[sl]


def _paste(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray, x0: int, y0: int) -> None:
    h, w = alpha.shape
    H, W = canvas.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if xa >= xb or ya >= yb:
        return
    a = alpha[ya - y0: yb - y0, xa - x0: xb - x0, None]
    region = canvas[ya:yb, xa:xb]
    region += a * (colour - region)


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """Draw a scene as a (size, size, 3) uint8 RGB image."""
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be an int in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    tint = np.empty((size, 3), np.float32)
    tint[:] = scene.tint
    canvas = (_wall_rows(size)[scene.wall] * tint.reshape(-1)).reshape(size, size, 3)
    for o in scene.objects:
        d = max(3, int(round(2 * o.radius * size)))
        rgb, transparency = _coloured_sprite(o.shape, d, o.colour)
        _paste_premultiplied(canvas, rgb, transparency, int(round(o.cx * size - (d + 2) / 2)),
                             int(round(o.cy * size - (d + 2) / 2)))
    if scene.plaque is not None:
        _draw_plaque(canvas, scene.plaque, size)
    # Walls, tints and colours are all within [0, 1] and pasting is a convex blend: no clip needed.
    canvas *= 255.0
    canvas += 0.5
    return canvas.astype(np.uint8)


def _draw_plaque(canvas: np.ndarray, p: Plaque, size: int) -> None:
    x0, y0, x1, y1 = (int(round(c * size)) for c in p.box)
    canvas[y0:y1, x0:x1] = (0.93, 0.89, 0.76)
    canvas[y0:y1, x0:x0 + 1] = canvas[y0:y1, x1 - 1:x1] = 0.25
    canvas[y0:y0 + 1, x0:x1] = canvas[y1 - 1:y1, x0:x1] = 0.25
    th = max(5, int((y1 - y0) * 0.7))
    m = _text_mask(p.text, th)
    th, tw = m.shape
    if tw <= x1 - x0 - 2 and th <= y1 - y0 - 2:
        tx, ty = (x0 + x1 - tw) // 2, (y0 + y1 - th) // 2
        _paste(canvas, m, _INK, tx, ty)


# ---------------------------------------------------------------------------------------
# Language: captions, questions, citations, preferences
# ---------------------------------------------------------------------------------------
_CAPTION_OPENERS = ("An exhibit with {n} objects: {items}.", "This exhibit shows {n} objects: {items}.",
                    "On the wall hang {n} objects: {items}.")


def describe(o: MuseumObject) -> str:
    """'a large red star at the top left'."""
    return f"a {o.size} {o.colour} {o.shape} at the {LOCATIONS[o.cell]}"


def caption(scene: Scene, variant: int | None = None) -> str:
    """A one-sentence caption listing every object (reading order) and the plaque."""
    objs = sorted(scene.objects, key=lambda o: o.cell)
    items = ", ".join(describe(o) for o in objs)
    v = scene.seed[-1] % len(_CAPTION_OPENERS) if variant is None else variant % len(_CAPTION_OPENERS)
    text = _CAPTION_OPENERS[v].format(n=_number_word(len(objs)), items=items)
    if scene.plaque is not None:
        text += f" A plaque reads {scene.plaque.text}."
    return text


def _number_word(n: int) -> str:
    return ("zero", "one", "two", "three", "four", "five", "six")[n]


def _yes_no(b: bool) -> str:
    return "yes" if b else "no"


#: Every (colour, shape) pair in the order the "exists" questions draw absent ones from.
_COLOUR_SHAPES = tuple((c, s) for s in SHAPES for c in COLOUR_NAMES)


def questions(scene: Scene, rng: random.Random | None = None) -> list[QA]:
    """Questions of every applicable type, with answers and supporting objects."""
    rng = rng if rng is not None else _rng(scene.seed, 1)
    objs = scene.objects
    n = len(objs)
    out: list[QA] = []
    shape_counts: dict[str, int] = {}
    colour_counts: dict[str, int] = {}
    for o in objs:
        shape_counts[o.shape] = shape_counts.get(o.shape, 0) + 1
        colour_counts[o.colour] = colour_counts.get(o.colour, 0) + 1
    order = rng.sample(range(n), n)
    a = objs[order[0]]
    # colour: of an object whose shape is unique
    for i in order:
        if shape_counts[objs[i].shape] == 1:
            out.append(QA(f"What colour is the {objs[i].shape}?", objs[i].colour, "colour", (i,)))
            break
    for i in order:
        if colour_counts[objs[i].colour] == 1:
            out.append(QA(f"What shape is the {objs[i].colour} object?", objs[i].shape, "shape", (i,)))
            break
    # count: all objects, or one colour/shape
    r = rng.random()
    if r < 0.4:
        out.append(QA("How many objects are in the exhibit?", str(n), "count", tuple(range(n))))
    elif r < 0.7:
        c = COLOUR_NAMES[rng.randrange(len(COLOUR_NAMES))]
        ids = scene.find(colour=c)
        out.append(QA(f"How many {c} objects are there?", str(len(ids)), "count", tuple(ids)))
    else:
        s = SHAPES[rng.randrange(len(SHAPES))]
        ids = scene.find(shape=s)
        out.append(QA(f"How many {_plural(s)} are there?", str(len(ids)), "count", tuple(ids)))
    # exists: balanced yes/no
    if rng.random() < 0.5:
        out.append(QA(f"Is there a {a.colour} {a.shape}?", "yes", "exists", (order[0],)))
    else:
        present = {(o.colour, o.shape) for o in objs}
        absent = [cs for cs in _COLOUR_SHAPES if cs not in present]
        c, s = absent[rng.randrange(len(absent))]
        out.append(QA(f"Is there a {c} {s}?", "no", "exists", ()))
    out.append(QA(f"Where is the {a.name}?", LOCATIONS[a.cell], "locate", (order[0],)))
    # spatial: a pair in different columns (left/right) or rows (above/below)
    i, j = order[0], order[1]
    oi, oj = objs[i], objs[j]
    if oi.cell % 3 != oj.cell % 3 and (oi.cell // 3 == oj.cell // 3 or rng.random() < 0.5):
        if rng.random() < 0.5:
            out.append(QA(f"Is the {oi.name} to the left of the {oj.name}?", _yes_no(oi.cx < oj.cx), "spatial", (i, j)))
        else:
            out.append(QA(f"Is the {oi.name} to the right of the {oj.name}?", _yes_no(oi.cx > oj.cx), "spatial", (i, j)))
    else:
        if rng.random() < 0.5:
            out.append(QA(f"Is the {oi.name} above the {oj.name}?", _yes_no(oi.cy < oj.cy), "spatial", (i, j)))
        else:
            out.append(QA(f"Is the {oi.name} below the {oj.name}?", _yes_no(oi.cy > oj.cy), "spatial", (i, j)))
    # compare: the first pair with different size classes
    for p in range(n):
        for q in range(p + 1, n):
            op, oq = objs[order[p]], objs[order[q]]
            if op.size != oq.size:
                big = op if SIZE_NAMES.index(op.size) > SIZE_NAMES.index(oq.size) else oq
                first, second = (op, oq) if rng.random() < 0.5 else (oq, op)
                out.append(QA(f"Which is larger, the {first.name} or the {second.name}?", big.name, "compare",
                              (order[p], order[q])))
                break
        else:
            continue
        break
    if scene.plaque is not None:
        out.append(QA("What number is on the plaque?", scene.plaque.text, "plaque", ()))
    return out


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def support_patches(scene: Scene, qa: QA, grid: int, min_cover: float | None = None) -> list[int]:
    """Indices ``row * grid + col`` of the ``grid × grid`` patches that prove an answer.

    By default one patch per supporting object: the patch that holds its centre, in the order the
    question names the objects (objects it does not name, as in "How many objects …?", follow in
    reading order). For the book's 3 × 3 grid that patch is the object's exhibit cell. With
    ``min_cover`` every patch that an object's box covers by at least that fraction counts
    instead (sorted). Plaque answers cite the plaque; ``[]`` means nothing in the image proves the
    answer (an absent object).
    """
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    if min_cover is not None and not 0.0 < min_cover <= 1.0:
        raise ValueError(f"min_cover must lie in (0, 1] or be None, got {min_cover}")
    things = [scene.objects[i] for i in qa.objects]
    if qa.qtype == "plaque" and scene.plaque is not None:
        things = [scene.plaque]
    if min_cover is None:
        def named_at(o) -> int:
            at = qa.question.find(o.name) if hasattr(o, "name") else -1
            return at if at >= 0 else len(qa.question) + o.cell
        cells = [min(int(o.cy * grid), grid - 1) * grid + min(int(o.cx * grid), grid - 1)
                 for o in sorted(things, key=named_at)]
        return list(dict.fromkeys(cells))
    covered: set[int] = set()
    for x0, y0, x1, y1 in (t.box for t in things):
        for r in range(grid):
            oy = min(y1, (r + 1) / grid) - max(y0, r / grid)
            if oy <= 0:
                continue
            for c in range(grid):
                ox = min(x1, (c + 1) / grid) - max(x0, c / grid)
                if ox > 0 and ox * oy * grid * grid >= min_cover:
                    covered.add(r * grid + c)
    return sorted(covered)


def patch_box(index: int, grid: int, size: int) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1) of patch ``index`` in a ``grid × grid`` split of a size-px image."""
    if not 0 <= index < grid * grid:
        raise ValueError(f"patch index {index} out of range for a {grid}×{grid} grid")
    r, c = divmod(index, grid)
    return (c * size // grid, r * size // grid, (c + 1) * size // grid, (r + 1) * size // grid)


def cite(answer: str, patches: Sequence[int]) -> str:
    """An answer with its evidence first, as the guide writes it: ``'[CITE:<p_3><p_4>] red'``.

    ``<p_k>`` names patch ``k`` of the exhibit (Chapter 5 §5.8); no patches gives ``'[CITE:] no'``.
    """
    return "[CITE:" + "".join(f"<p_{int(k)}>" for k in patches) + "] " + answer


def preference_pairs(scene: Scene, qa: QA, grid: int, rng: random.Random | None = None) -> list[PreferencePair]:
    """Preferred vs rejected answers: wrong answer, and (when cited) missing or wrong citations."""
    rng = rng if rng is not None else _rng(scene.seed, 2)
    patches = support_patches(scene, qa, grid)
    good = cite(qa.answer, patches)
    wrong = _wrong_answer(qa, scene, rng)
    pairs = [PreferencePair(qa.question, good, cite(wrong, patches), "wrong_answer")]
    if patches:
        pairs.append(PreferencePair(qa.question, good, qa.answer, "missing_citation"))
        others = [k for k in range(grid * grid) if k not in set(patches)]
        if others:
            bad = sorted(rng.sample(others, min(len(patches), len(others))))
            pairs.append(PreferencePair(qa.question, good, cite(qa.answer, bad), "wrong_citation"))
    return pairs


def _wrong_answer(qa: QA, scene: Scene, rng: random.Random) -> str:
    pool: Sequence[str]
    if qa.qtype == "colour":
        pool = COLOUR_NAMES
    elif qa.qtype == "shape":
        pool = SHAPES
    elif qa.qtype in ("count",):
        pool = [str(k) for k in range(7)]
    elif qa.qtype in ("exists", "spatial"):
        pool = ("yes", "no")
    elif qa.qtype == "locate":
        pool = LOCATIONS
    elif qa.qtype == "compare":
        pool = [scene.objects[i].name for i in qa.objects]
    else:
        pool = [str(k) for k in range(1, 100)]
    choices = [p for p in pool if p != qa.answer]
    return choices[rng.randrange(len(choices))]


# ---------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Sample:
    """One rendered exhibit with everything known about it."""

    index: int
    scene: Scene
    image: np.ndarray
    caption: str
    qas: tuple[QA, ...]


class Museum:
    """A deterministic, indexable stream of exhibits for one split and resolution.

    ``Museum("train", size=64)[i]`` is always the same sample; ``val`` and ``test`` come from
    entropy tuples that no training scene uses.
    """

    def __init__(self, split: str = "train", size: int = 64, seed: int = 0, length: int = 10_000):
        scene_seed(split, 0, seed)  # validates split and seed
        if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
            raise ValueError(f"size must be an int in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
        _check_int("length", length)
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.split, self.size, self.seed, self.length = split, int(size), int(seed), int(length)

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        return generate_scene(self.split, self._check(index), self.seed)

    def __getitem__(self, index: int) -> Sample:
        sc = self.scene(index)
        return Sample(index, sc, render(sc, self.size), caption(sc), tuple(questions(sc)))

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(self.length))

    def _check(self, index: int) -> int:
        _check_int("index", index)
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a Museum of length {self.length}")
        return int(index)

    def images(self, start: int, n: int) -> np.ndarray:
        """(n, size, size, 3) uint8 images of samples ``start … start + n - 1``."""
        _check_int("start", start)
        _check_int("n", n)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        return np.stack([render(self.scene(i), self.size) for i in range(start, start + n)])

    def tensors(self, start: int, n: int):
        """(n, 3, size, size) float32 tensor in [0, 1] of samples ``start … start + n - 1``."""
        import torch

        return torch.from_numpy(self.images(start, n)).permute(0, 3, 1, 2).float().div_(255.0)
