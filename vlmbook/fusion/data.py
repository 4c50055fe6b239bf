"""Museum question answering as training data: QA items, oracle cell features, batches (Chapter 5 §5.7).

Questions, answers and the patches that prove each answer come from :class:`vlmbook.data.Museum`.
A :class:`Batcher` turns them into padded id tensors with the positions whose next token is
part of the answer (the only positions the loss reads); ``batch(step)`` is a pure function of the
step, as :func:`vlmbook.loop.fit` requires.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from ..util import step_generator
from ..data.museum import (COLOUR_NAMES, QUESTION_TYPES, SHAPES, SIZE_NAMES, Museum, generate_scene, questions,
                           support_patches)

#: Question types left out: plaque digits are a few pixels tall at 64–72 px and unreadable.
EXCLUDED_TYPES = ("plaque",)
#: The instruction that asks for a caption (captioning can be trained alongside QA).
CAPTION_PROMPT = "Describe the exhibit."


@dataclasses.dataclass
class QAData:
    """Images (n, 3, H, W) in [0, 1] and QA items ``(image index, question, answer, qtype)``.

    ``patches`` holds, per item, the grid patches that prove its answer (the citation targets).
    ``codes`` (discrete route) and ``features`` (a frozen encoder's output, or oracle cell
    features) are filled in once, so that training does not recompute them every step; so is
    ``compressed`` (n, M, D), a frozen compressor's output on those features, which then
    replaces them in the batches (the projector is all that runs on the image side).
    """

    images: torch.Tensor
    items: list[tuple[int, str, str, str]]
    codes: torch.Tensor | None = None
    captions: list[str] | None = None
    features: torch.Tensor | None = None
    patches: list[list[int]] | None = None
    split: str = "train"
    start: int = 0
    n_objects: list[int] | None = None
    compressed: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.items)


def museum_qa(split: str, n_scenes: int, size: int = 64, start: int = 0,
              exclude: Sequence[str] = EXCLUDED_TYPES, grid: int = 3) -> QAData:
    """Every question of ``n_scenes`` museum exhibits (minus ``exclude`` types) with images and the
    ``grid × grid`` patches that support each answer. §5.7."""
    if n_scenes < 1:
        raise ValueError(f"n_scenes must be >= 1, got {n_scenes}")
    bad = set(exclude) - set(QUESTION_TYPES)
    if bad:
        raise ValueError(f"unknown question types {sorted(bad)}; known: {QUESTION_TYPES}")
    m = Museum(split, size=size, length=start + n_scenes)
    items, caps, patches, counts = [], [], [], []
    for i in range(n_scenes):
        s = m[start + i]
        counts.append(len(s.scene.objects))
        for qa in s.qas:
            if qa.qtype in exclude:
                continue
            items.append((i, qa.question, qa.answer, qa.qtype))
            patches.append(support_patches(s.scene, qa, grid))
        caps.append(s.caption)
    return QAData(m.tensors(start, n_scenes), items, captions=caps, patches=patches, split=split, start=start,
                  n_objects=counts)


def patch_labels(split: str, n_scenes: int, grid: int, start: int = 0) -> torch.Tensor:
    """(n, grid², 3) int64 (colour, shape, size) of the object centred in each patch; 0 = empty. §5.7."""
    out = torch.zeros(n_scenes, grid * grid, 3, dtype=torch.long)
    for i in range(n_scenes):
        for o in generate_scene(split, start + i).objects:
            k = min(int(o.cy * grid), grid - 1) * grid + min(int(o.cx * grid), grid - 1)
            out[i, k] = torch.tensor([COLOUR_NAMES.index(o.colour) + 1, SHAPES.index(o.shape) + 1,
                                      SIZE_NAMES.index(o.size) + 1])
    return out


#: Width of :func:`oracle_features`: one-hot colour, shape and size, each with an "empty" slot.
ORACLE_DIM = len(COLOUR_NAMES) + len(SHAPES) + len(SIZE_NAMES) + 3


def oracle_features(labels: torch.Tensor) -> torch.Tensor:
    """(n, M, 3) cell labels -> (n, M, ORACLE_DIM) perfect one-hot cell features. §5.7.

    What a flawless encoder would say about each cell: it separates the language model's job
    (find the object a question names, read another attribute from it) from the encoder's.
    """
    if labels.ndim != 3 or labels.shape[-1] != 3:
        raise ValueError(f"labels must be (n, M, 3), got shape {tuple(labels.shape)}")
    sizes = (len(COLOUR_NAMES) + 1, len(SHAPES) + 1, len(SIZE_NAMES) + 1)
    return torch.cat([torch.nn.functional.one_hot(labels[..., j], n).float() for j, n in enumerate(sizes)], -1)


def with_oracle_features(data: QAData, grid: int = 3) -> QAData:
    """A copy of ``data`` whose ``features`` are :func:`oracle_features` of its exhibits."""
    labels = patch_labels(data.split, len(data.images), grid, data.start)
    return dataclasses.replace(data, features=oracle_features(labels))


class Batcher:
    """Pre-tokenised QA items -> padded batches; ``batch(step)`` is a pure function of the step. §5.7.

    ``batch_size`` counts QA items per step. With ``pack = k`` they come as ``batch_size / k``
    sequences, each one exhibit's question with ``k - 1`` follow-up questions about it (a
    conversation: the image tokens appear once, every answer has its loss).
    """

    def __init__(self, vlm, data: QAData, batch_size: int = 64, seed: int = 0, caption_frac: float = 0.0,
                 curriculum: int = 0, pack: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pack < 1 or batch_size % pack:
            raise ValueError(f"pack must be >= 1 and divide batch_size ({batch_size}), got {pack}")
        if pack > 1 and caption_frac:
            raise ValueError("pack > 1 packs questions about one exhibit; it does not mix with caption_frac")
        if curriculum < 0 or (curriculum and data.n_objects is None):
            raise ValueError(f"curriculum must be >= 0 and needs data with n_objects, got {curriculum}")
        if not 0.0 <= caption_frac < 1.0:
            raise ValueError(f"caption_frac must lie in [0, 1), got {caption_frac}")
        if caption_frac and not data.captions:
            raise ValueError("caption_frac > 0 needs data with captions")
        if vlm.config.cite and data.patches is None:
            raise ValueError("a citing model needs data with supporting patches (QAData.patches)")
        self.batch_size, self.seed, self.caption_frac, self.curriculum = batch_size, seed, caption_frac, curriculum
        self.pack = pack
        self.pad = vlm.ids["pad"]
        # questions and answers repeat across exhibits: tokenise each distinct one once
        qcache: dict[str, list[int]] = {}
        pcache: dict[str, list[int]] = {}
        acache: dict[tuple, list[int]] = {}
        self.seqs, self.answer_len = [], []
        for n, (_, q, a, _) in enumerate(data.items):
            if q not in qcache:
                qcache[q] = vlm.encode_text(q)
                pcache[q] = vlm.prompt_ids(qcache[q])
            cites = tuple(data.patches[n]) if data.patches is not None else None
            if (a, cites) not in acache:
                acache[a, cites] = vlm.answer_ids(a, cites)
            ans = acache[a, cites]
            self.seqs.append(pcache[q] + ans)
            self.answer_len.append(len(ans))
        self.image_of = [it[0] for it in data.items]
        self.n_qa = len(self.seqs)
        if pack > 1:
            # a follow-up turn about the same exhibit: the image is already in the sequence
            i = vlm.ids
            self.turns = [[i["user"]] + qcache[q] + [i["assistant"]] + seq[-n:]
                          for (_, q, _, _), seq, n in zip(data.items, self.seqs, self.answer_len)]
            self.qas_of: dict[int, list[int]] = {}
            for n, img in enumerate(self.image_of):
                self.qas_of.setdefault(img, []).append(n)
        if curriculum:
            n = torch.tensor([data.n_objects[i] for i in self.image_of])
            # QA items ordered by how many objects their exhibit holds (stable, so ties keep data order)
            self.by_difficulty = torch.argsort(n, stable=True)
            self.n_sorted = n[self.by_difficulty]
        if caption_frac:
            q = vlm.encode_text(CAPTION_PROMPT)
            for i, c in enumerate(data.captions):
                a = vlm.encode_text(" " + c) + [vlm.ids["end"]]
                self.seqs.append(vlm.prompt_ids(q) + a)
                self.answer_len.append(len(a))
                self.image_of.append(i)
        # every sequence right-padded once, so that a batch is a gather, not a Python loop per row
        lens = [len(q) for q in self.seqs]
        self._len, self._ans = torch.tensor(lens), torch.tensor(self.answer_len)
        self._ids = torch.full((len(self.seqs), max(lens)), self.pad, dtype=torch.long)
        for r, q in enumerate(self.seqs):
            self._ids[r, :len(q)] = torch.tensor(q)
        # The batches carry only what this model reads, on a private copy of the data: codes from
        # this model's quantizer belong to it, not to a test set that other models share.
        if vlm.config.route == "discrete":
            codes = data.codes
            if codes is None:
                codes = torch.cat([vlm.quantizer.encode(data.images[i:i + 512]) for i in range(0, len(data.images), 512)])
            self.data = dataclasses.replace(data, codes=codes, features=None, compressed=None)
        else:
            self.data = dataclasses.replace(data, codes=None)

    def collate(self, idx: Sequence[int], follow: Sequence[Sequence[int]] | None = None) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``, boolean ``targets`` (positions predicting answer tokens), ``labels``,
        and the image side: cached ``codes``, ``compressed`` or ``features`` if the data holds them, else
        ``images``.

        ``follow[r]`` (packing) lists QA items about the same exhibit appended to row ``r`` as
        follow-up turns, each answer with its own loss.
        """
        if follow is None:
            ids, targets = self._gather(idx)
        else:
            ids, targets = self._pack(idx, follow)
        labels = torch.roll(ids, -1, 1)[targets]
        img = torch.tensor([self.image_of[i] for i in idx])
        out = {"input_ids": ids, "targets": targets, "labels": labels}
        # cached codes or features stand in for the images: gathering (and moving) pixels that the
        # model will not read would cost every step
        if self.data.codes is not None:
            out["codes"] = self.data.codes[img]
        if self.data.compressed is not None:
            out["compressed"] = self.data.compressed[img]
        elif self.data.features is not None:
            out["features"] = self.data.features[img]
        if not {"codes", "features", "compressed"} & set(out):
            out["images"] = self.data.images[img]
        return out

    def _gather(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        it = torch.as_tensor(list(idx), dtype=torch.long)
        n, a = self._len[it], self._ans[it]
        T = int(n.max())
        t = torch.arange(T)
        # position t predicts token t + 1: the answer's n_a tokens end the sequence
        targets = (t >= (n - 1 - a)[:, None]) & (t < (n - 1)[:, None])
        return self._ids[it, :T].contiguous(), targets

    def _pack(self, idx: Sequence[int], follow: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        rows, spans = [], []
        for r, i in enumerate(idx):
            s, ends = list(self.seqs[i]), [(len(self.seqs[i]), self.answer_len[i])]
            for j in follow[r]:
                s += self.turns[j]
                ends.append((len(s), self.answer_len[j]))
            rows.append(s)
            spans.append(ends)
        T = max(len(s) for s in rows)
        ids = torch.full((len(idx), T), self.pad, dtype=torch.long)
        targets = torch.zeros(len(idx), T, dtype=torch.bool)
        for r, s in enumerate(rows):
            ids[r, :len(s)] = torch.tensor(s)
            for end, n in spans[r]:
                targets[r, end - 1 - n:end - 1] = True  # position t predicts token t + 1
        return ids, targets

    def pool_size(self, step: int) -> int:
        """How many QA items (easiest first) step ``step`` draws from: with a curriculum, exhibits of
        up to 2 objects at step 0, widening linearly to all of them at step ``curriculum``. §5.7."""
        if not self.curriculum or step >= self.curriculum:
            return self.n_qa
        lo, hi = int(self.n_sorted[0]), int(self.n_sorted[-1])
        limit = lo + (hi - lo) * step / self.curriculum
        return max(1, int((self.n_sorted <= limit).sum()))

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of training step ``step`` (seeded by ``seed`` and ``step`` only)."""
        g = step_generator(self.seed, step)
        n_cap = int(round(self.batch_size * self.caption_frac))
        pool = self.pool_size(step)
        idx = torch.randint(pool, ((self.batch_size - n_cap) // self.pack,), generator=g)
        idx = (self.by_difficulty[idx] if pool < self.n_qa else idx).tolist()
        if self.pack > 1:
            return self.collate(idx, [self._follow_ups(i, g) for i in idx])
        if n_cap:
            idx += (self.n_qa + torch.randint(len(self.seqs) - self.n_qa, (n_cap,), generator=g)).tolist()
        return self.collate(idx)

    def _follow_ups(self, i: int, g: torch.Generator) -> list[int]:
        """Up to ``pack - 1`` other QA items about item ``i``'s exhibit, in random order. §5.7."""
        others = [j for j in self.qas_of[self.image_of[i]] if j != i]
        order = torch.randperm(len(others), generator=g)[:self.pack - 1].tolist()
        return [others[k] for k in order]
