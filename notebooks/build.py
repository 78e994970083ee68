"""Execute every notebook in this directory in a Jupyter kernel and save it with its outputs.

Run: ``python notebooks/build.py`` (all notebooks) or ``python notebooks/build.py 01_quickstart`` (some).
Needs the ``notebooks`` extra: ``pip install ".[notebooks]"`` (nbclient, nbformat, ipykernel). Prints the
time each notebook took; the test suite runs the same code cells without a kernel
(``tests/test_notebooks.py``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    import nbformat
    from nbclient import NotebookClient

    paths = sorted(HERE.glob("*.ipynb"))
    if names:
        paths = [p for p in paths if any(p.stem.startswith(n) or p.name == n for n in names)]
    total = 0.0
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        NotebookClient(nb, timeout=900, kernel_name="python3", coalesce_streams=True,
                       resources={"metadata": {"path": str(HERE)}}).execute()
        took = time.perf_counter() - start
        total += took
        nbformat.write(nb, path)
        print(f"{path.name}: {took:.1f} s")
    print(f"{len(paths)} notebooks in {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
