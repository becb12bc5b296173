"""Plain-text tables of a breakdown, for terminals, scripts and nbval.

Numbers use 5 significant digits, so outputs are stable across machines once
float noise is sanitized; columns are aligned with spaces only.
"""

from __future__ import annotations

import math

from .history import LossHistory


NO_RECORDS = (
    "No records: nothing ran fit(), evaluate(), *_on_batch() or an eager model(x) "
    "while attached (a step traced by tf.function / jax.jit is not recorded)."
)


def fmt_number(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan" if value is not None else "-"
    return f"{value:.5g}"


def fmt_share(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}%"


def align(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


BREAKDOWN_HEADER = ["term", "kind", "layer", "last", "mean", "min", "max", "share"]
BREAKDOWN_NUMERIC = {3, 4, 5, 6, 7}
SNAPSHOT_HEADER = ["term", "kind", "layer", "value"]


def breakdown_cells(history: LossHistory, phase: str | None = "train"):
    """Title and formatted rows (terms, then total) shared by the text and HTML tables.

    The rows are empty when ``phase`` has no records.
    """
    sub = history if phase is None else history.select(phase=phase)
    title = f"Loss breakdown ({phase or 'all'} records: {len(sub)})"
    if len(sub) == 0:
        return title, []
    rows = []
    for row in sub.breakdown(None):
        term = row.term
        rows.append([
            row.key,
            term.kind if term else "",
            (term.layer or "") if term else "",
            fmt_number(row.last), fmt_number(row.mean), fmt_number(row.min),
            fmt_number(row.max), fmt_share(row.share),
        ])
    return title, rows


def snapshot_cells(snapshot):
    """Title and formatted rows (terms, then total) of a `Snapshot`."""
    rows = [
        [term.key, term.kind, term.layer or "", fmt_number(float(value))]
        for term, value in zip(snapshot.terms, snapshot.values)
    ]
    rows.append(["total", "", "", fmt_number(snapshot.total)])
    return f"model.losses of {snapshot.model_name!r} ({len(snapshot)} terms)", rows


def breakdown_table(history: LossHistory, phase: str | None = "train") -> str:
    """One row per term (key, kind, layer, last, mean, min, max, share) plus total."""
    title, rows = breakdown_cells(history, phase)
    if not rows:
        return title + "\n" + NO_RECORDS
    return title + "\n" + align([BREAKDOWN_HEADER, *rows], right=BREAKDOWN_NUMERIC)


def snapshot_table(snapshot) -> str:
    title, rows = snapshot_cells(snapshot)
    text = title + "\n"
    text += align([SNAPSHOT_HEADER, *rows], right={3})
    if snapshot.message:
        text += "\n\nNote: " + snapshot.message
    return text
