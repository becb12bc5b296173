"""Re-execute tutorial notebooks in place, storing fresh outputs (maintainers).

The committed outputs are the reference for strict nbval on JAX, so run this
with the same environment the tests use (JAX, one core, quiet TensorFlow):

    python notebooks/execute.py                 # every notebook
    python notebooks/execute.py notebooks/03_add_loss.ipynb
"""

from __future__ import annotations

import glob
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import conftest  # noqa: E402,F401  the repository's test environment


def execute(path: str) -> float:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    start = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": HERE}}).execute()
    elapsed = time.perf_counter() - start
    nb.metadata.pop("widgets", None)  # widget state is not reproducible
    nbformat.write(nb, path)
    return elapsed


def main(paths):
    paths = paths or sorted(glob.glob(os.path.join(HERE, "[0-9]*.ipynb")))
    for path in paths:
        print(f"{os.path.basename(path)}: {execute(path):.1f} s "
              f"({os.environ['KERAS_BACKEND']})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
