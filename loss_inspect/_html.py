"""HTML tables of a breakdown for notebooks (same rows as `_text`)."""

from __future__ import annotations

from html import escape

from ._text import NO_RECORDS, fmt_number, fmt_share
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
    sub = history if phase is None else history.select(phase=phase)
    if len(sub) == 0:
        return (f"<p><b>Loss breakdown ({escape(phase or 'all')} records: 0)</b><br>"
                f"{escape(NO_RECORDS)}</p>")
    header = ["term", "kind", "layer", "last", "mean", "min", "max", "share"]
    rows = []
    for row in history.breakdown(phase):
        term = row.term
        rows.append([
            row.key,
            term.kind if term else "",
            (term.layer or "") if term else "",
            fmt_number(row.last), fmt_number(row.mean), fmt_number(row.min),
            fmt_number(row.max), fmt_share(row.share),
        ])
    sub = history if phase is None else history.select(phase=phase)
    caption = f"Loss breakdown ({phase or 'all'} records: {len(sub)})"
    return _table(caption, header, rows, numeric={3, 4, 5, 6, 7})


def snapshot_html(snapshot) -> str:
    rows = [
        [t.key, t.kind, t.layer or "", fmt_number(float(v))]
        for t, v in zip(snapshot.terms, snapshot.values)
    ]
    rows.append(["total", "", "", fmt_number(snapshot.total)])
    html = _table(
        f"model.losses of {snapshot.model_name!r} ({len(snapshot)} terms)",
        ["term", "kind", "layer", "value"], rows, numeric={3},
    )
    if snapshot.message:
        html += f"<p><b>Note:</b> {escape(snapshot.message)}</p>"
    return html
