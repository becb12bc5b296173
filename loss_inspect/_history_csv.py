"""CSV export and import of a `LossHistory` (``to_csv`` / ``from_csv``).

The format: a version line, a JSON line of term metadata, then a header and
one row per history row (``step, epoch, phase, batch_size, total``, one
column per term; a compacted history adds ``count`` and ``min:``/``max:``
columns). A friend module of `loss_inspect.history`: it reads and fills the
history's arrays directly, so that a million rows load without a million
method calls.
"""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np

from .history import _CSV_MAGIC, _FIXED_COLUMNS, PHASES, Term


def write_csv(history, path) -> None:
    """Write the history as CSV; `from_csv` reads it back with its terms.

    Two ``#`` comment lines carry the format version and the term metadata
    (JSON), so pandas can read the file too with ``comment="#"``. An absent
    term is an empty cell; NaN and infinities are written as ``nan``/``inf``.
    """
    keys = history.keys()
    extra = _extrema_columns(keys) if history.compacted else []
    columns = history.to_dict()
    with open(path, "w", newline="", encoding="utf-8") as handle:
        handle.write(_CSV_MAGIC + "\n")
        meta = [dataclasses.asdict(history.term(k)) for k in keys]
        handle.write("# terms: " + json.dumps(meta) + "\n")
        writer = csv.writer(handle)
        writer.writerow(list(_FIXED_COLUMNS) + keys + extra)
        present = {k: history.present(k) for k in ["total", *keys]}
        for i in range(history._n):
            row = [
                int(history._step[i]),
                int(history._epoch[i]),
                PHASES[history._phase[i]],
                _fmt(history._batch[i]),
                _fmt(history._total[i]),
            ]
            row += [_fmt(columns[k][i]) if present[k][i] else "" for k in keys]
            for name in extra:
                key = name.partition(":")[2]
                if name == "count":
                    row.append(str(int(columns[name][i])))
                else:
                    row.append(_fmt(columns[name][i]) if present[key][i] else "")
            writer.writerow(row)


def read_csv(cls, path):
    """Read a file written by `to_csv`."""
    with open(path, newline="", encoding="utf-8") as handle:
        magic = handle.readline().rstrip("\r\n")
        if magic != _CSV_MAGIC:
            raise ValueError(
                f"{path} is not a loss_inspect history CSV: its first line "
                f"is {magic!r}, expected {_CSV_MAGIC!r}. Write it with "
                "LossHistory.to_csv()."
            )
        meta_line = handle.readline()
        if not meta_line.startswith("# terms: "):
            raise ValueError(f"{path}: second line must start with '# terms: '.")
        terms = [Term(**meta) for meta in json.loads(meta_line[len("# terms: "):])]
        history = cls(terms)
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: the CSV header row is missing (file cut off?).")
        fixed, n_terms = len(_FIXED_COLUMNS), len(terms)
        keys = header[fixed : fixed + n_terms]
        extra = header[fixed + n_terms :]
        if (
            header[:fixed] != list(_FIXED_COLUMNS)
            or keys != [t.key for t in terms]
            or extra not in ([], _extrema_columns(keys))
        ):
            raise ValueError(f"{path}: header {header} does not match its terms.")
        cols = np.array([history._columns[k] for k in keys], dtype=np.intp)
        rows = list(reader)
    for row in rows:
        cells = row[fixed : fixed + n_terms]
        present = np.array([cell != "" for cell in cells], dtype=bool)
        values = np.array([float(c) if c != "" else np.nan for c in cells])
        history._append(
            PHASES.index(row[2]),
            np.array([int(row[0])]),
            np.array([int(row[1])]),
            np.array([float(row[3])]),
            np.array([float(row[4])]),
            cols[present],
            values[present][None, :],
            compact=False,
        )
    if extra:
        _load_extrema(history, cols, rows, fixed + n_terms)
    return history


def _load_extrema(history, cols, rows, first: int) -> None:
    """Counts and extremes of a compacted history read from CSV."""
    n, k = len(rows), len(cols)
    table = np.array(
        [[float(c) if c != "" else np.nan for c in row[first + 1 :]] for row in rows]
    ).reshape(n, 2 * (k + 1))
    history._count[:n] = [int(row[first]) for row in rows]
    history._ensure_extrema()
    history._total_min[:n], history._total_max[:n] = table[:, 0], table[:, 1]
    history._min[:n, cols], history._max[:n, cols] = table[:, 2::2], table[:, 3::2]
    buckets = np.flatnonzero(history._count[:n] > 1)
    history._buckets = int(buckets[-1] + 1) if len(buckets) else 0


def _extrema_columns(keys: list[str]) -> list[str]:
    columns = ["count"]
    for key in ["total", *keys]:
        columns += [f"min:{key}", f"max:{key}"]
    return columns


def _fmt(value: float) -> str:
    return repr(float(value))
