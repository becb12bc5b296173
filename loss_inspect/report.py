"""`LossReport`: what one ``%%losses`` cell recorded, as a result object.

Like IPython's ``TimeitResult``: a readable ``str`` (the aligned table), an
HTML table for notebooks, and the figure on demand. `last` returns the most
recent report, also when the cell failed or was interrupted.
"""

from __future__ import annotations

from .history import LossHistory

__all__ = ["LossReport", "last"]

_LAST: list["LossReport"] = []


class LossReport:
    """The records one ``%%losses`` cell made, with their breakdown.

    Attributes:
        model_name: name of the recorded model.
        recorder: the `Recorder` (detached once the cell ended, unless you
            attached it yourself before the cell).
        history: a `LossHistory` of the records made during the cell only.
        phase: the phase the table shows (``"train"``, ``"eval"`` or None for all).
        view: the figure's view (``"stack"``, ``"lines"``, ``"share"``).
        logy: log-scale figure.
        error: the exception that ended the cell, or None.
    """

    def __init__(self, recorder, start: int, *, phase="train", view="stack",
                 logy=False, error: BaseException | None = None):
        full = recorder.history
        self.recorder = recorder
        self.model_name = recorder._model_name
        self.history: LossHistory = full.since(start)
        self.view = view
        self.logy = logy
        self.error = error
        self.phase = effective_phase(self.history, phase)

    def breakdown(self):
        """`BreakdownRow` per term, plus the total, for `phase`."""
        return self.history.breakdown(self.phase)

    def figure(self, **kwargs):
        """A new matplotlib ``Figure`` of the terms over steps (not registered with pyplot)."""
        from .plotting import plot_history

        options = dict(view=self.view, phase=self.phase or "all", logy=self.logy,
                       title=f"Loss breakdown of {self.model_name!r}")
        options.update(kwargs)
        return plot_history(self.history, **options)

    def png(self, **kwargs) -> bytes:
        from .plotting import figure_to_png

        return figure_to_png(self.figure(**kwargs))

    def __str__(self) -> str:
        from ._text import breakdown_table

        text = breakdown_table(self.history, self.phase)
        if self.error is not None:
            text += f"\n(cell ended with {type(self.error).__name__}; records up to then)"
        return text

    def __repr__(self) -> str:
        return (
            f"<LossReport {self.model_name!r}: {self.history.records} records, "
            f"{len(self.history.keys())} terms>"
        )

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self) if cycle else str(self))

    def _repr_html_(self) -> str:
        from ._html import breakdown_html

        return breakdown_html(self.history, self.phase)


def last() -> "LossReport | None":
    """The report of the most recent ``%%losses`` cell (kept on errors too)."""
    return _LAST[-1] if _LAST else None


def _remember(report: LossReport) -> None:
    _LAST[:] = [report]


def effective_phase(history: LossHistory, phase: str | None) -> str | None:
    """``phase``, or every record when the cell made none of that phase."""
    if phase in (None, "all"):
        return None
    if history.phase_counts().get(phase, 0) == 0:
        return None
    return phase
