"""loss_inspect: see what a Keras 3 model's loss is made of, step by step.

``import loss_inspect`` stays light: Keras, the backends, matplotlib and
ipywidgets are imported only when a function that needs them is called.

Example:
    ```python
    import loss_inspect as li

    with li.attach(model) as rec:
        model.fit(x, y, epochs=2, verbose=0)
    print(li.breakdown_table(rec.history))
    rec.history["total"], rec.history.keys()
    ```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from .history import (
        KINDS, PHASES, BreakdownRow, LossHistory, NonFinite, NonFiniteLossError, Term,
    )
    from .recorder import Recorder
    from .snapshots import Snapshot

#: Names of `loss_inspect.history` re-exported here, imported on first access
#: (numpy alone is most of an import's 100 ms budget).
_FROM_HISTORY = ("KINDS", "PHASES", "BreakdownRow", "LossHistory", "NonFinite",
                 "NonFiniteLossError", "Term")

__all__ = [
    "__version__",
    "attach",
    "snapshot",
    "recorders",
    "breakdown_table",
    "last",
    "Dashboard",
    "load_ipython_extension",
    "unload_ipython_extension",
    "Recorder",
    "Snapshot",
    "LossHistory",
    "Term",
    "NonFinite",
    "NonFiniteLossError",
    "BreakdownRow",
    "KINDS",
    "PHASES",
]


def attach(model, *, capacity: int | None = None, every: int = 1, nan: str = "ignore") -> "Recorder":
    """Attach a `Recorder` to a Keras 3 model; see `loss_inspect.recorder.attach`."""
    from .recorder import attach as _attach

    return _attach(model, capacity=capacity, every=every, nan=nan)


def snapshot(model) -> "Snapshot":
    """The attributed terms of ``model.losses`` from the last eager forward pass."""
    from .snapshots import snapshot as _snapshot

    return _snapshot(model)


def recorders() -> list["Recorder"]:
    """Recorders attached now (empty if Keras was never imported by loss_inspect)."""
    import sys

    if "loss_inspect.recorder" not in sys.modules:
        return []
    from .recorder import recorders as _recorders

    return _recorders()


def breakdown_table(history: "LossHistory", phase: str | None = "train") -> str:
    """Aligned text table: one row per term with last/mean/min/max and share."""
    from ._text import breakdown_table as _table

    return _table(history, phase)


def last():
    """The `LossReport` of the most recent ``%%losses`` cell, or None."""
    from .report import last as _last

    return _last()


def load_ipython_extension(ipython):
    """Register ``%losses`` / ``%%losses``. Called by ``%load_ext loss_inspect``."""
    from .magics import load

    load(ipython)


def unload_ipython_extension(ipython):
    """Remove the magics and detach the recorders they attached (``%unload_ext``)."""
    from .magics import unload

    unload(ipython)


def __getattr__(name: str):
    # Classes that need numpy or Keras are imported on first access.
    if name in _FROM_HISTORY:
        from . import history

        return getattr(history, name)
    if name == "Recorder":
        from .recorder import Recorder

        return Recorder
    if name == "Snapshot":
        from .snapshots import Snapshot

        return Snapshot
    if name == "Dashboard":
        from .widgets import Dashboard

        return Dashboard
    raise AttributeError(f"module 'loss_inspect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
