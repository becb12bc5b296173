"""HTML tables of a breakdown for notebooks (same rows as `_text`)."""

from __future__ import annotations

from html import escape

from ._text import (
    BREAKDOWN_HEADER, BREAKDOWN_NUMERIC, NO_RECORDS, SNAPSHOT_HEADER, breakdown_cells,
    snapshot_cells,
)
from .history import LossHistory

_STYLE = (
    "border-collapse:collapse;font-family:monospace;font-size:12px;"
)
_CELL = "padding:2px 8px;border-bottom:1px solid #ddd;"


def _table(caption: str, header: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    def cells(row, tag, bold=False):
        out = []
        for i, value in enumerate(row):
            align = "right" if i in numeric else "left"
            weight = "font-weight:bold;" if bold else ""
            out.append(f'<{tag} style="{_CELL}text-align:{align};{weight}">{escape(value)}</{tag}>')
        return "".join(out)

    body = "".join(
        f"<tr>{cells(row, 'td', bold=(n == len(rows) - 1 and row[0] == 'total'))}</tr>"
        for n, row in enumerate(rows)
    )
    return (
        f'<table style="{_STYLE}"><caption style="text-align:left;font-weight:bold">'
        f"{escape(caption)}</caption><thead><tr>{cells(header, 'th')}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def breakdown_html(history: LossHistory, phase: str | None = "train") -> str:
    title, rows = breakdown_cells(history, phase)
    if not rows:
        return f"<p><b>{escape(title)}</b><br>{escape(NO_RECORDS)}</p>"
    return _table(title, BREAKDOWN_HEADER, rows, numeric=BREAKDOWN_NUMERIC)


def snapshot_html(snapshot) -> str:
    title, rows = snapshot_cells(snapshot)
    html = _table(title, SNAPSHOT_HEADER, rows, numeric={3})
    if snapshot.message:
        html += f"<p><b>Note:</b> {escape(snapshot.message)}</p>"
    return html
