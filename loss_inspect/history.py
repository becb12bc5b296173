"""The recorded loss breakdown as pure data: terms, records and exports.

`LossHistory` knows nothing about Keras, IPython or plotting; it is a table with
one row per record (a train step, an eval batch or an eager forward pass) and
one column per loss term, kept in numpy arrays that grow while training runs.
Everything that renders or exports the breakdown reads it through this class.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from typing import Iterable, NamedTuple

import numpy as np

__all__ = [
    "Term", "LossHistory", "NonFinite", "NonFiniteLossError", "BreakdownRow", "KINDS", "PHASES",
]

#: Term kinds in display order.
KINDS = ("compiled", "add_loss", "activity", "regularizer", "residual")
#: Record phases: optimizer steps, evaluation batches, eager forward passes.
PHASES = ("train", "eval", "call")
#: Epoch recorded for records made outside `fit()` (evaluate, *_on_batch, calls).
NO_EPOCH = -1

_CSV_MAGIC = "# loss_inspect history v1"
_FIXED_COLUMNS = ("step", "epoch", "phase", "batch_size", "total")


@dataclasses.dataclass(frozen=True)
class Term:
    """One named part of the total loss.

    Attributes:
        key: unique name of the term in its history, e.g. ``"compiled"``,
            ``"add_loss:vae/sampling"`` or ``"regularizer:mlp/hidden/kernel"``.
        kind: one of `KINDS`.
        layer: qualified path of the layer (or variable, for regularizers)
            the term comes from, or ``None`` for compiled and residual terms.
        output: model output a compiled term belongs to, else ``None``.
        weight: the ``loss_weights`` factor already applied to a compiled
            term, else ``None``.
    """

    key: str
    kind: str
    layer: str | None = None
    output: str | None = None
    weight: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(
                f"Term kind must be one of {KINDS}; got kind={self.kind!r} "
                f"for key={self.key!r}."
            )
        if self.key == "total" or not self.key:
            raise ValueError(f"Term key {self.key!r} is reserved or empty.")


class NonFinite(NamedTuple):
    """Where a history first went non-finite (see `LossHistory.first_nonfinite`)."""

    record: int
    key: str
    value: float
    step: int
    epoch: int
    phase: str


class NonFiniteLossError(FloatingPointError):
    """Raised by a recorder with ``nan="raise"`` at the first NaN/inf term.

    Attributes:
        where: the `NonFinite` record that went non-finite.
        layer: the layer (or variable) path of that term, or None.
    """

    def __init__(self, message: str, where: NonFinite, layer: str | None):
        super().__init__(message)
        self.where = where
        self.layer = layer


class BreakdownRow(NamedTuple):
    """Statistics of one term over a history (see `LossHistory.breakdown`)."""

    term: Term | None  # None for the total row
    key: str
    last: float
    mean: float
    min: float
    max: float
    share: float  # mean of the term / mean of the total, in percent


class LossHistory:
    """Per-record values of every loss term, growing while training runs.

    Indexing returns float64 numpy arrays with one value per record:
    ``h["total"]`` is the loss Keras optimised (or, for an eager forward pass,
    the sum of the added terms) and ``h[key]`` one term.  A term that is absent
    from a record (for example an ``add_loss`` guarded by ``if training:`` seen
    in an eval record) reads as NaN there; `present` tells absence apart from a
    real NaN.  At every record the present terms sum to the total.
    """

    def __init__(self, terms: Iterable[Term] = ()):
        self._terms: list[Term] = []
        self._columns: dict[str, int] = {}
        self._n = 0
        self._step = np.empty(0, np.int64)
        self._epoch = np.empty(0, np.int64)
        self._phase = np.empty(0, np.int8)
        self._batch = np.empty(0, np.float64)
        self._total = np.empty(0, np.float64)
        self._values = np.empty((0, 0), np.float64)
        self._present = np.empty((0, 0), bool)
        for term in terms:
            self._add_term(term)

    # ------------------------------------------------------------------ read
    def __len__(self) -> int:
        return self._n

    @property
    def terms(self) -> list[Term]:
        """Terms in display order: by kind (see `KINDS`), then first seen."""
        return [self._terms[i] for i in self._display_columns()]

    def keys(self) -> list[str]:
        """Term keys in display order, without ``"total"``.

        A residual that is exactly zero at every record is left out.
        """
        return [self._terms[i].key for i in self._display_columns()]

    def term(self, key: str) -> Term:
        """The `Term` named ``key``."""
        return self._terms[self._column(key)]

    def __contains__(self, key: object) -> bool:
        return key == "total" or key in self._columns

    def __getitem__(self, key: str) -> np.ndarray:
        if key == "total":
            return self._total[: self._n].copy()
        return self._values[: self._n, self._column(key)].copy()

    def present(self, key: str) -> np.ndarray:
        """Boolean array: was term ``key`` part of each record."""
        if key == "total":
            return np.ones(self._n, bool)
        return self._present[: self._n, self._column(key)].copy()

    @property
    def steps(self) -> np.ndarray:
        """Global optimizer step of each record (int64).

        A train record carries the number of its optimizer update (1-based,
        counted from the optimizer's iterations when the recorder attached);
        eval and call records carry the number of updates done before them.
        """
        return self._step[: self._n].copy()

    @property
    def epochs(self) -> np.ndarray:
        """Epoch of each record inside ``fit()`` (int64; -1 outside fit)."""
        return self._epoch[: self._n].copy()

    @property
    def phases(self) -> np.ndarray:
        """Phase of each record: ``"train"``, ``"eval"`` or ``"call"``."""
        return np.asarray(PHASES, dtype=object)[self._phase[: self._n]]

    @property
    def batch_sizes(self) -> np.ndarray:
        """Number of samples in each record's batch (float64; NaN if unknown)."""
        return self._batch[: self._n].copy()

    def values(self) -> np.ndarray:
        """All term values as a (records, terms) float64 array in `keys` order."""
        cols = [self._columns[key] for key in self.keys()]
        return self._values[: self._n, cols].copy()

    # --------------------------------------------------------------- derive
    def select(
        self,
        phase: str | Iterable[str] | None = None,
        epoch: int | Iterable[int] | None = None,
    ) -> "LossHistory":
        """A new history holding only the records of ``phase`` / ``epoch``."""
        mask = np.ones(self._n, bool)
        if phase is not None:
            wanted = [phase] if isinstance(phase, str) else list(phase)
            for name in wanted:
                if name not in PHASES:
                    raise ValueError(
                        f"phase must be one of {PHASES}; got phase={name!r}."
                    )
            codes = [PHASES.index(name) for name in wanted]
            mask &= np.isin(self._phase[: self._n], codes)
        if epoch is not None:
            wanted = [epoch] if isinstance(epoch, (int, np.integer)) else list(epoch)
            mask &= np.isin(self._epoch[: self._n], wanted)
        return self._subset(np.flatnonzero(mask))

    def first_nonfinite(self) -> NonFinite | None:
        """The first record and term whose value is NaN or infinite, or None.

        Terms are checked before the total, so the culprit is named when a
        term makes the total non-finite.
        """
        n = self._n
        if n == 0:
            return None
        bad = self._present[:n] & ~np.isfinite(self._values[:n])
        bad_term = bad.any(axis=1)
        bad_total = ~np.isfinite(self._total[:n])
        rows = np.flatnonzero(bad_term | bad_total)
        if rows.size == 0:
            return None
        row = int(rows[0])
        if bad_term[row]:
            shown = {key: i for i, key in enumerate(self.keys())}
            cols = sorted(
                np.flatnonzero(bad[row]),
                key=lambda c: shown.get(self._terms[c].key, len(shown) + c),
            )
            key = self._terms[cols[0]].key
            value = float(self._values[row, cols[0]])
        else:
            key, value = "total", float(self._total[row])
        return NonFinite(
            row,
            key,
            value,
            int(self._step[row]),
            int(self._epoch[row]),
            PHASES[self._phase[row]],
        )

    def epoch_means(self, key: str = "total", phase: str = "train"):
        """Per-epoch mean of ``key`` over ``phase`` records, batch-size weighted.

        Records where ``key`` is absent are skipped. This is how Keras averages its ``loss`` log: a ragged last batch counts
        in proportion to its number of samples, so these values equal
        ``history.history["loss"]`` (train) and ``["val_loss"]`` (eval).

        Returns:
            ``(epochs, means)``: two numpy arrays.
        """
        sub = self.select(phase=phase)
        keep = sub.present(key)
        epochs = sub.epochs[keep]
        values = sub[key][keep]
        weights = sub.batch_sizes[keep]
        weights = np.where(np.isnan(weights), 1.0, weights)
        unique = np.unique(epochs)
        means = np.array(
            [
                np.sum(values[epochs == e] * weights[epochs == e])
                / np.sum(weights[epochs == e])
                for e in unique
            ],
            dtype=np.float64,
        )
        return unique, means

    def breakdown(self, phase: str | None = "train") -> list[BreakdownRow]:
        """Last / mean / min / max and share of the total for every term.

        Statistics skip records where a term is absent. The last row is the
        total. ``phase=None`` uses every record.
        """
        sub = self if phase is None else self.select(phase=phase)
        total = sub["total"]
        total_mean = _safe_mean(total)
        rows = []
        for term in sub.terms:
            values = sub[term.key][sub.present(term.key)]
            mean = _safe_mean(values)
            share = 100.0 * mean / total_mean if total_mean not in (0.0,) else math.nan
            rows.append(
                BreakdownRow(
                    term, term.key, _last(values), mean, _safe_min(values),
                    _safe_max(values), share,
                )
            )
        rows.append(
            BreakdownRow(
                None, "total", _last(total), total_mean, _safe_min(total),
                _safe_max(total), 100.0 if len(total) else math.nan,
            )
        )
        return rows

    # --------------------------------------------------------------- export
    def to_dict(self) -> dict[str, np.ndarray]:
        """Columns as numpy arrays: step, epoch, phase, batch_size, total, terms."""
        out = {
            "step": self.steps,
            "epoch": self.epochs,
            "phase": self.phases,
            "batch_size": self.batch_sizes,
            "total": self["total"],
        }
        for key in self.keys():
            out[key] = self[key]
        return out

    def to_pandas(self):
        """A `pandas.DataFrame` with one row per record (pandas is imported here)."""
        import pandas as pd

        frame = pd.DataFrame(self.to_dict())
        frame.attrs["terms"] = [dataclasses.asdict(t) for t in self.terms]
        return frame

    def to_csv(self, path) -> None:
        """Write the history as CSV; `from_csv` reads it back with its terms.

        Two ``#`` comment lines carry the format version and the term metadata
        (JSON), so pandas can read the file too with ``comment="#"``. An absent
        term is an empty cell; NaN and infinities are written as ``nan``/``inf``.
        """
        keys = self.keys()
        with open(path, "w", newline="", encoding="utf-8") as handle:
            handle.write(_CSV_MAGIC + "\n")
            meta = [dataclasses.asdict(self.term(k)) for k in keys]
            handle.write("# terms: " + json.dumps(meta) + "\n")
            writer = csv.writer(handle)
            writer.writerow(list(_FIXED_COLUMNS) + keys)
            cols = [self._columns[k] for k in keys]
            n = self._n
            for i in range(n):
                row = [
                    int(self._step[i]),
                    int(self._epoch[i]),
                    PHASES[self._phase[i]],
                    _fmt(self._batch[i]),
                    _fmt(self._total[i]),
                ]
                row += [
                    _fmt(self._values[i, c]) if self._present[i, c] else ""
                    for c in cols
                ]
                writer.writerow(row)

    @classmethod
    def from_csv(cls, path) -> "LossHistory":
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
            keys = header[len(_FIXED_COLUMNS):]
            if header[: len(_FIXED_COLUMNS)] != list(_FIXED_COLUMNS) or keys != [
                t.key for t in terms
            ]:
                raise ValueError(f"{path}: header {header} does not match its terms.")
            cols = np.array([history._columns[k] for k in keys], dtype=np.intp)
            for row in reader:
                present = np.array(
                    [cell != "" for cell in row[len(_FIXED_COLUMNS):]], dtype=bool
                )
                values = np.array(
                    [float(c) if c != "" else np.nan for c in row[len(_FIXED_COLUMNS):]]
                )
                history._append(
                    PHASES.index(row[2]),
                    np.array([int(row[0])]),
                    np.array([int(row[1])]),
                    np.array([float(row[3])]),
                    np.array([float(row[4])]),
                    cols[present],
                    values[present][None, :],
                )
        return history

    def __repr__(self) -> str:
        counts = ", ".join(
            f"{name} {int(np.sum(self._phase[: self._n] == i))}"
            for i, name in enumerate(PHASES)
            if np.any(self._phase[: self._n] == i)
        )
        inner = f" ({counts})" if counts else ""
        return f"<LossHistory: {self._n} records{inner}, {len(self.keys())} terms>"

    # ------------------------------------------------------------ recording
    def _add_term(self, term: Term) -> int:
        """Register ``term`` (idempotent for an equal term) and return its column."""
        if term.key in self._columns:
            col = self._columns[term.key]
            if self._terms[col] != term:
                raise ValueError(
                    f"Term key {term.key!r} is already used by {self._terms[col]}; "
                    f"cannot add {term}. This is a loss_inspect bug; please report it."
                )
            return col
        col = len(self._terms)
        self._terms.append(term)
        self._columns[term.key] = col
        if col >= self._values.shape[1]:
            self._resize(self._values.shape[0], max(8, 2 * self._values.shape[1]))
        return col

    def _append(self, phase, steps, epochs, batch, totals, cols, values) -> None:
        """Append records that share one phase and one set of term columns.

        Args:
            phase: index into `PHASES`.
            steps, epochs, batch, totals: 1-D arrays, one entry per record.
            cols: column indices (from `_add_term`) of the recorded terms.
            values: (records, len(cols)) array of term values.
        """
        k = len(totals)
        if k == 0:
            return
        needed = self._n + k
        if needed > self._values.shape[0]:
            self._resize(max(needed, 2 * self._values.shape[0], 64), self._values.shape[1])
        s = slice(self._n, needed)
        self._step[s] = steps
        self._epoch[s] = epochs
        self._phase[s] = phase
        self._batch[s] = batch
        self._total[s] = totals
        if len(cols):
            self._values[s, cols] = values
            self._present[s, cols] = True
        self._n = needed

    def _resize(self, rows: int, cols: int) -> None:
        old_rows, old_cols = self._values.shape
        for name in ("_step", "_epoch", "_phase", "_batch", "_total"):
            arr = getattr(self, name)
            if rows != arr.shape[0]:
                new = np.zeros(rows, arr.dtype)
                new[: self._n] = arr[: self._n]
                setattr(self, name, new)
        values = np.full((rows, cols), np.nan)
        present = np.zeros((rows, cols), bool)
        keep = min(old_cols, cols)
        values[: self._n, :keep] = self._values[: self._n, :keep]
        present[: self._n, :keep] = self._present[: self._n, :keep]
        self._values, self._present = values, present

    def _subset(self, rows: np.ndarray) -> "LossHistory":
        out = LossHistory(self._terms)
        k = len(rows)
        out._resize(max(k, 1), max(len(self._terms), 1))
        out._step[:k] = self._step[rows]
        out._epoch[:k] = self._epoch[rows]
        out._phase[:k] = self._phase[rows]
        out._batch[:k] = self._batch[rows]
        out._total[:k] = self._total[rows]
        ncols = len(self._terms)
        out._values[:k, :ncols] = self._values[rows, :ncols]
        out._present[:k, :ncols] = self._present[rows, :ncols]
        out._n = k
        return out

    def _column(self, key: str) -> int:
        try:
            return self._columns[key]
        except KeyError:
            known = ", ".join(repr(k) for k in ["total", *self.keys()])
            raise KeyError(
                f"No loss term {key!r} in this history. Known keys: {known}."
            ) from None

    def _display_columns(self) -> list[int]:
        order = {kind: i for i, kind in enumerate(KINDS)}
        ranked = sorted(
            range(len(self._terms)), key=lambda i: (order[self._terms[i].kind], i)
        )
        return [
            i for i in ranked
            if not (self._terms[i].kind == "residual" and self._is_zero(i))
        ]

    def _is_zero(self, col: int) -> bool:
        n = self._n
        values = self._values[:n, col][self._present[:n, col]]
        return bool(np.all(values == 0.0))


def _fmt(value: float) -> str:
    return repr(float(value))


def _safe_mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _safe_min(values: np.ndarray) -> float:
    return float(np.min(values)) if len(values) else math.nan


def _safe_max(values: np.ndarray) -> float:
    return float(np.max(values)) if len(values) else math.nan


def _last(values: np.ndarray) -> float:
    return float(values[-1]) if len(values) else math.nan
