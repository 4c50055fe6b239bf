"""Encode and decode two images with the committed codecs; print SHA-256 of the bytes and pixels.

Run by tests/test_bitexact.py under different thread counts and CPU kernels.
"""
import hashlib
import sys

import numpy as np
import torch

torch.set_num_threads(int(sys.argv[1]))

from vlmbook.codec.fileformat import decode_image, encode_image  # noqa: E402
from vlmbook.data import eval_images  # noqa: E402

rng = np.random.default_rng(0)
images = [eval_images(128)[0], np.clip(rng.normal(128, 60, (72, 136, 3)), 0, 255).astype(np.uint8)]
for q in (1, 4):
    for im in images:
        data = encode_image(im, q)
        pixels = decode_image(data)
        print(q, hashlib.sha256(data).hexdigest(), hashlib.sha256(pixels.tobytes()).hexdigest())
