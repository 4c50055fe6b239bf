"""Copy markdown cells and cell tags/metadata from a notebook's .py pair into its executed
.ipynb without re-executing it — only when every code cell's source is unchanged.

    python tools/sync_md.py notebooks/01_rate_distortion.ipynb [...]

For prose edits on a busy machine; any code change needs `make notebooks NB=...` instead.
"""
import sys
from pathlib import Path

import jupytext
import nbformat


def sync(ipynb: Path) -> None:
    src = jupytext.read(ipynb.with_suffix(".py"))
    nb = nbformat.read(ipynb, as_version=4)
    if [c.cell_type for c in src.cells] != [c.cell_type for c in nb.cells]:
        raise SystemExit(f"{ipynb}: cells added or removed; re-execute with `make notebooks`")
    for a, b in zip(src.cells, nb.cells):
        if a.cell_type == "code" and a.source != b.source:
            raise SystemExit(f"{ipynb}: code changed ({a.source[:60]!r}); re-execute with `make notebooks`")
        if a.cell_type == "markdown":
            b.source = a.source
        for key in ("tags", "mystnb"):
            if key in a.metadata:
                b.metadata[key] = a.metadata[key]
            else:
                b.metadata.pop(key, None)
    nbformat.write(nb, ipynb)
    ipynb.with_suffix(".py").write_text(jupytext.writes(jupytext.read(ipynb), fmt="py:percent"))
    print(f"{ipynb}: markdown and metadata synced")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        sync(Path(name).with_suffix(".ipynb"))
