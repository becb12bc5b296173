"""The recorded loss breakdown as pure data: terms, records and exports.

`LossHistory` knows nothing about Keras, IPython or plotting; it is a table with
one row per record (a train step, an eval batch or an eager forward pass) and
one column per loss term, kept in numpy arrays that grow while training runs.
Everything that renders or exports the breakdown reads it through this class.
"""

from __future__ import annotations

import dataclasses
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
            term, else ``None``; also ``None`` once the factor changed while
            recording (the model was compiled again with other
            ``loss_weights``): each record holds that step's weighted loss.
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

    Indexing returns float64 numpy arrays with one value per row:
    ``h["total"]`` is the loss Keras optimised (or, for an eager forward pass,
    the sum of the added terms) and ``h[key]`` one term.  A term that is absent
    from a record (for example an ``add_loss`` guarded by ``if training:`` seen
    in an eval record) reads as NaN there; `present` tells absence apart from a
    real NaN.  At every row the present terms sum to the total.

    **Compaction.** Up to ``full_resolution`` records a row is one record.
    Past that, the oldest records are merged into buckets so that memory stays
    bounded (1,000,000 records of 16 terms hold about 20 MB): a bucket is one
    row holding consecutive records of one phase, one epoch, one batch size
    and the same terms. For a bucket row, ``h[key]`` is the mean over its
    records, `min` / `max` their extremes (spikes survive), `counts` how many
    records it holds and `steps` the step of its last record. So every
    statistic the tables show (means, min, max, per-epoch means) stays exact;
    only the per-record detail of old records is gone. The most recent
    ``full_resolution`` records always keep full resolution; buckets double
    in size whenever there are more than ``max_buckets`` of them.
    """

    #: Records kept at full resolution (the most recent ones).
    FULL_RESOLUTION = 32_768
    #: Bucket rows kept before neighbouring buckets are merged pairwise.
    MAX_BUCKETS = 8_192

    def __init__(
        self,
        terms: Iterable[Term] = (),
        *,
        full_resolution: int | None = None,
        max_buckets: int | None = None,
    ):
        self.full_resolution = int(
            self.FULL_RESOLUTION if full_resolution is None else full_resolution)
        self.max_buckets = int(self.MAX_BUCKETS if max_buckets is None else max_buckets)
        if self.full_resolution < 1 or self.max_buckets < 1:
            raise ValueError(
                f"full_resolution and max_buckets must be positive; got "
                f"full_resolution={full_resolution!r}, max_buckets={max_buckets!r}."
            )
        self._terms: list[Term] = []
        self._columns: dict[str, int] = {}
        self._n = 0
        self._buckets = 0  # leading rows that are buckets (compacted records)
        self._bucket_records = 8  # most records a new bucket holds
        self._step = np.empty(0, np.int64)
        self._epoch = np.empty(0, np.int64)
        self._phase = np.empty(0, np.int8)
        self._batch = np.empty(0, np.float64)
        self._total = np.empty(0, np.float64)
        self._count = np.empty(0, np.int64)
        self._values = np.empty((0, 0), np.float64)
        self._present = np.empty((0, 0), bool)
        # Extremes of bucket rows; allocated at the first compaction. For a
        # one-record row they are not kept: its value is its min and max.
        self._total_min: np.ndarray | None = None
        self._total_max: np.ndarray | None = None
        self._min: np.ndarray | None = None
        self._max: np.ndarray | None = None
        for term in terms:
            self._add_term(term)

    # ------------------------------------------------------------------ read
    def __len__(self) -> int:
        """Number of rows: records, until old records are compacted into buckets."""
        return self._n

    @property
    def records(self) -> int:
        """Number of records held, compacted ones included."""
        return int(self._count[: self._n].sum())

    def record(self, row: int = -1) -> dict:
        """One row as a dict: ``step``, ``epoch``, ``phase``, ``total`` and the
        value of every term present there, in `keys` order (no column copies:
        a live status line reads the latest row this way)."""
        n = self._n
        if not -n <= row < n:
            raise IndexError(f"row {row} is out of range for a history of {n} rows.")
        row %= n
        out = {"step": int(self._step[row]), "epoch": int(self._epoch[row]),
               "phase": PHASES[self._phase[row]], "total": float(self._total[row])}
        for col in self._display_columns():
            if self._present[row, col]:
                out[self._terms[col].key] = float(self._values[row, col])
        return out

    def phase_counts(self) -> dict[str, int]:
        """Records per phase, e.g. ``{"train": 640, "eval": 40}`` (no copies made)."""
        phases, counts = self._phase[: self._n], self._count[: self._n]
        return {name: int(counts[phases == i].sum())
                for i, name in enumerate(PHASES) if np.any(phases == i)}

    @property
    def counts(self) -> np.ndarray:
        """Records in each row (int64): 1, or the size of a compacted bucket."""
        return self._count[: self._n].copy()

    @property
    def compacted(self) -> bool:
        """True once some rows are buckets of several records."""
        return bool(np.any(self._count[: self._n] > 1))

    def min(self, key: str = "total") -> np.ndarray:
        """Per row, the smallest value of ``key`` among its records."""
        return self._extreme(key, low=True)

    def max(self, key: str = "total") -> np.ndarray:
        """Per row, the largest value of ``key`` among its records."""
        return self._extreme(key, low=False)

    def _extreme(self, key: str, low: bool) -> np.ndarray:
        values = self[key]
        kept = self._total_min if low else self._total_max
        if key != "total" and kept is not None:
            kept = (self._min if low else self._max)[: self._n, self._column(key)]
        if kept is None:
            return values
        bucket = self._count[: self._n] > 1
        values[bucket] = kept[: self._n][bucket]
        return values

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (capacity included)."""
        arrays = [self._step, self._epoch, self._phase, self._batch, self._total,
                  self._count, self._values, self._present, self._total_min,
                  self._total_max, self._min, self._max]
        return int(sum(a.nbytes for a in arrays if a is not None))

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
        # A bucket row is the mean of `count` records of one batch size.
        weights = np.where(np.isnan(weights), 1.0, weights) * sub.counts[keep]
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
        counts = sub.counts

        def stats(key, keep):
            values = sub[key][keep]
            mean = (
                float(np.sum(values * counts[keep]) / np.sum(counts[keep]))
                if len(values) else math.nan
            )
            return (_last(values), mean, _safe_min(sub.min(key)[keep]),
                    _safe_max(sub.max(key)[keep]))

        total = stats("total", slice(None))
        total_mean = total[1]
        rows = []
        for term in sub.terms:
            last, mean, low, high = stats(term.key, sub.present(term.key))
            share = 100.0 * mean / total_mean if total_mean not in (0.0,) else math.nan
            rows.append(BreakdownRow(term, term.key, last, mean, low, high, share))
        rows.append(
            BreakdownRow(None, "total", *total, 100.0 if len(sub) else math.nan)
        )
        return rows

    # --------------------------------------------------------------- export
    def to_dict(self) -> dict[str, np.ndarray]:
        """Columns as numpy arrays: step, epoch, phase, batch_size, total, terms.

        A compacted history adds ``count`` and, for the total and each term,
        ``min:<key>`` and ``max:<key>`` (see the class docstring).
        """
        out = {
            "step": self.steps,
            "epoch": self.epochs,
            "phase": self.phases,
            "batch_size": self.batch_sizes,
            "total": self["total"],
        }
        for key in self.keys():
            out[key] = self[key]
        if self.compacted:
            out["count"] = self.counts
            for key in ["total", *self.keys()]:
                out[f"min:{key}"] = self.min(key)
                out[f"max:{key}"] = self.max(key)
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
        from ._history_csv import write_csv

        write_csv(self, path)

    @classmethod
    def from_csv(cls, path) -> "LossHistory":
        """Read a file written by `to_csv`."""
        from ._history_csv import read_csv

        return read_csv(cls, path)

    def __repr__(self) -> str:
        parts = ", ".join(f"{name} {n}" for name, n in self.phase_counts().items())
        inner = f" ({parts})" if parts else ""
        rows = f" in {self._n} rows" if self.compacted else ""
        return f"<LossHistory: {self.records} records{inner}{rows}, {len(self.keys())} terms>"

    # ------------------------------------------------------------ recording
    def _add_term(self, term: Term) -> int:
        """Register ``term`` (idempotent for an equal term) and return its column.

        A compiled term whose loss weight changed (a recompile with other
        ``loss_weights``) keeps its column, so its series goes on; its
        ``weight`` becomes None, since no one factor applies to all records.
        """
        if term.key in self._columns:
            col = self._columns[term.key]
            known = self._terms[col]
            if known != term:
                if dataclasses.replace(known, weight=term.weight) != term:
                    raise ValueError(
                        f"Term key {term.key!r} is already used by {known}; cannot add "
                        f"{term}. This is a loss_inspect bug; please report it."
                    )
                self._terms[col] = dataclasses.replace(known, weight=None)
            return col
        col = len(self._terms)
        self._terms.append(term)
        self._columns[term.key] = col
        if col >= self._values.shape[1]:
            self._resize(self._values.shape[0], max(8, 2 * self._values.shape[1]))
        return col

    def _append(
        self, phase, steps, epochs, batch, totals, cols, values, *, compact: bool = True
    ) -> None:
        """Append records that share one phase and one set of term columns.

        Args:
            phase: index into `PHASES`.
            steps, epochs, batch, totals: 1-D arrays, one entry per record.
            cols: column indices (from `_add_term`) of the recorded terms.
            values: (records, len(cols)) array of term values.
            compact: merge old records into buckets when past `full_resolution`.
        """
        k = len(totals)
        if k == 0:
            return
        needed = self._n + k
        if needed > self._values.shape[0]:
            grown = min(2 * self._values.shape[0], self._row_limit())
            self._resize(max(needed, grown, 64), self._values.shape[1])
        s = slice(self._n, needed)
        self._step[s] = steps
        self._epoch[s] = epochs
        self._phase[s] = phase
        self._batch[s] = batch
        self._total[s] = totals
        self._count[s] = 1
        if len(cols):
            self._values[s, cols] = values
            self._present[s, cols] = True
        self._n = needed
        if compact and self._n - self._buckets > self.full_resolution + self._slack():
            self._compact()

    # ----------------------------------------------------------- compaction
    def _slack(self) -> int:
        """Records past `full_resolution` before compacting (amortises the copy)."""
        return max(1, self.full_resolution // 4)

    def _row_limit(self) -> int:
        return self.max_buckets + self.full_resolution + self._slack() + 256

    def _compact(self) -> None:
        """Merge all but the newest `full_resolution` records into buckets."""
        self._ensure_extrema()
        self._merge(self._buckets, self._n - self.full_resolution, self._bucket_records)
        while self._buckets > self.max_buckets:
            before = self._buckets
            self._bucket_records *= 2
            self._merge(0, self._buckets, self._bucket_records)
            if self._buckets >= before:  # only phase/epoch boundaries left
                break

    def _merge(self, start: int, stop: int, most: int) -> None:
        """Replace rows [start, stop) by buckets of at most ``most`` records.

        A bucket never spans a change of phase, epoch, batch size or set of
        present terms, so its mean is exact for every statistic and its
        records all weigh the same in a batch-size weighted mean.
        """
        if stop - start < 2:
            return
        rows = slice(start, stop)
        count = self._count[rows]
        batch = self._batch[rows]
        same = (
            (self._phase[rows][1:] == self._phase[rows][:-1])
            & (self._epoch[rows][1:] == self._epoch[rows][:-1])
            & ((batch[1:] == batch[:-1]) | (np.isnan(batch[1:]) & np.isnan(batch[:-1])))
            & np.all(self._present[rows][1:] == self._present[rows][:-1], axis=1)
        )
        run = np.concatenate([[0], np.cumsum(~same)])
        before_in_run = np.cumsum(count) - count
        run_start = np.concatenate([[0], np.flatnonzero(~same) + 1])
        chunk = (before_in_run - before_in_run[run_start][run]) // most
        new_group = np.concatenate([[True], ~same | (chunk[1:] != chunk[:-1])])
        starts = np.flatnonzero(new_group)
        ends = np.concatenate([starts[1:], [stop - start]]) - 1
        groups = len(starts)

        ones = count == 1
        counts = np.add.reduceat(count, starts)
        weights = count.astype(np.float64)

        def merged(mean, low, high):
            low = np.where(ones, mean, low) if mean.ndim == 1 else np.where(ones[:, None], mean, low)
            high = np.where(ones, mean, high) if mean.ndim == 1 else np.where(ones[:, None], mean, high)
            scale = weights if mean.ndim == 1 else weights[:, None]
            sums = np.add.reduceat(mean * scale, starts, axis=0)
            divide = counts if mean.ndim == 1 else counts[:, None]
            return (sums / divide, np.minimum.reduceat(low, starts, axis=0),
                    np.maximum.reduceat(high, starts, axis=0))

        ncols = self._values.shape[1]
        total = merged(self._total[rows], self._total_min[rows], self._total_max[rows])
        values = merged(self._values[rows], self._min[rows, :ncols], self._max[rows, :ncols])
        firsts = starts + start
        self._step[start : start + groups] = self._step[ends + start]
        for name in ("_epoch", "_phase", "_batch", "_present"):
            arr = getattr(self, name)
            arr[start : start + groups] = arr[firsts]
        self._count[start : start + groups] = counts
        self._total[start : start + groups], self._total_min[start : start + groups], \
            self._total_max[start : start + groups] = total
        self._values[start : start + groups], self._min[start : start + groups], \
            self._max[start : start + groups] = values

        tail = self._n - stop
        if groups < stop - start:
            for arr in self._row_arrays():
                arr[start + groups : start + groups + tail] = arr[stop : self._n]
            freed = slice(start + groups + tail, self._n)
            self._values[freed] = np.nan  # appends write only their own columns
            self._present[freed] = False
        self._n = start + groups + tail
        self._buckets = start + groups

    def _ensure_extrema(self) -> None:
        if self._min is None:
            rows, cols = self._values.shape
            self._total_min = np.full(rows, np.nan)
            self._total_max = np.full(rows, np.nan)
            self._min = np.full((rows, cols), np.nan)
            self._max = np.full((rows, cols), np.nan)

    def _row_arrays(self) -> list[np.ndarray]:
        arrays = [self._step, self._epoch, self._phase, self._batch, self._total,
                  self._count, self._values, self._present]
        if self._min is not None:
            arrays += [self._total_min, self._total_max, self._min, self._max]
        return arrays

    def _resize(self, rows: int, cols: int) -> None:
        old_cols = self._values.shape[1]
        for name in ("_step", "_epoch", "_phase", "_batch", "_total", "_count",
                     "_total_min", "_total_max"):
            arr = getattr(self, name)
            if arr is not None and rows != arr.shape[0]:
                new = np.zeros(rows, arr.dtype)
                new[: self._n] = arr[: self._n]
                setattr(self, name, new)
        keep = min(old_cols, cols)
        for name, fill, dtype in (("_values", np.nan, np.float64), ("_present", False, bool),
                                  ("_min", np.nan, np.float64), ("_max", np.nan, np.float64)):
            arr = getattr(self, name)
            if arr is None:
                continue
            new = np.full((rows, cols), fill, dtype)
            new[: self._n, :keep] = arr[: self._n, :keep]
            setattr(self, name, new)

    def _subset(self, rows: np.ndarray) -> "LossHistory":
        out = LossHistory(
            self._terms, full_resolution=self.full_resolution, max_buckets=self.max_buckets
        )
        k = len(rows)
        if self._min is not None:
            out._resize(1, 1)
            out._ensure_extrema()
        out._resize(max(k, 1), max(len(self._terms), 1))
        for name in ("_step", "_epoch", "_phase", "_batch", "_total", "_count",
                     "_total_min", "_total_max"):
            if getattr(self, name) is not None:
                getattr(out, name)[:k] = getattr(self, name)[rows]
        ncols = len(self._terms)
        for name in ("_values", "_present", "_min", "_max"):
            if getattr(self, name) is not None:
                getattr(out, name)[:k, :ncols] = getattr(self, name)[rows, :ncols]
        out._n = k
        buckets = np.flatnonzero(out._count[:k] > 1)
        out._buckets = int(buckets[-1] + 1) if len(buckets) else 0
        out._bucket_records = self._bucket_records
        return out

    def since(self, records: int) -> "LossHistory":
        """The rows holding records made after the first ``records`` ones.

        Stable under compaction (row numbers are not): a ``%%losses`` cell
        notes `records` when it starts. A bucket that straddles the point is
        included whole.
        """
        ends = np.cumsum(self._count[: self._n])
        return self._subset(np.flatnonzero(ends > records))

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
        present = self._present[:n, col]
        values = [self._values[:n, col][present]]
        if self._min is not None:  # a bucket's mean can be 0 while its records are not
            values += [self._min[:n, col][present & (self._count[:n] > 1)],
                       self._max[:n, col][present & (self._count[:n] > 1)]]
        return all(bool(np.all(v == 0.0)) for v in values)


def _safe_mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _safe_min(values: np.ndarray) -> float:
    return float(np.min(values)) if len(values) else math.nan


def _safe_max(values: np.ndarray) -> float:
    return float(np.max(values)) if len(values) else math.nan


def _last(values: np.ndarray) -> float:
    return float(values[-1]) if len(values) else math.nan
