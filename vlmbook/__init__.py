"""vlmbook: compressing images into tokens for vision-language models — the package behind the book.

Subpackages follow the chapters: :mod:`vlmbook.rd` (1), :mod:`vlmbook.vq` (2),
:mod:`vlmbook.codec` (3), :mod:`vlmbook.vision` and :mod:`vlmbook.resample` (4),
:mod:`vlmbook.fusion` (5), :mod:`vlmbook.train` (6), :mod:`vlmbook.bench` (7); shared pieces are
:mod:`vlmbook.data`, :mod:`vlmbook.plot`, :mod:`vlmbook.config`, :mod:`vlmbook.hub`,
:mod:`vlmbook.loop` and :mod:`vlmbook.device`. Importing ``vlmbook`` is cheap: subpackages load
on first use.
"""
__version__ = "0.1.0"
