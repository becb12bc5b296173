"""Live views of a recorder: `LiveView` (inside ``%%losses``) and `Dashboard`.

Only core ipywidgets (``Image``, ``HTML``, ``VBox`` and plain controls), no
custom JavaScript, so they render in JupyterLab, Notebook 7, VS Code and Colab.
The figure is rendered to PNG and pushed into one persistent ``Image`` (no
``clear_output`` flicker, no pyplot figures). Redraws run on the main thread
right after a step function returns, throttled by wall clock: at least
``min_interval`` seconds apart (4 per second at most) and spaced so that
drawing takes at most ``max_overhead`` of the time (3 %, so that with the
recorder's own cost a watched fit stays within 5 %); the final state is
always drawn (by ``%%losses`` after ``fit()`` returns). Before
the second frame is timed, a frame is assumed to cost ``first_frame_cost``
(the first one builds the figure and costs more than the in-place updates). Their text repr is constant, so frontend-less runs (nbval) stay
deterministic.
"""

from __future__ import annotations

import time
from html import escape

import ipywidgets as widgets

from . import plotting
from .report import effective_phase
from ._text import fmt_number

__all__ = ["LiveView", "Dashboard"]


class _Box(widgets.VBox):
    """A VBox whose text/plain repr is a fixed label instead of its state."""

    def __init__(self, children, label: str, **kwargs):
        super().__init__(children, **kwargs)
        self._label = label

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, tuple):
            bundle = bundle[0]
        bundle = dict(bundle or {})
        bundle["text/plain"] = self._label
        return bundle

    def __repr__(self) -> str:
        return self._label


class LiveView:
    """A figure and a status line that follow a `Recorder` while it records.

    Register it with ``recorder.add_listener(view)``; it redraws itself.

    Args:
        recorder: the `Recorder` to follow.
        view, phase, logy, smoothing, hidden: passed to `plotting.plot_history`.
        min_interval: smallest time between two redraws, in seconds.
        max_overhead: largest share of wall time spent drawing.
        first_frame_cost: assumed cost of a frame until one has been timed.
        dpi: resolution of the live frames.
        final_in_fit: draw the final frame when ``fit()`` returns. ``%%losses``
            passes False and draws it when the cell ends, so that no frame
            is drawn inside ``fit()`` but the throttled ones.
        clock: a monotonic clock (tests pass a fake one).
    """

    def __init__(self, recorder, *, view="stack", phase="train", logy=False,
                 smoothing=0, hidden=(), min_interval=0.25, max_overhead=0.03,
                 first_frame_cost=0.1, dpi=80, final_in_fit=True, clock=time.monotonic):
        self.recorder = recorder
        self.final_in_fit = final_in_fit
        self.options = dict(view=view, phase=phase, logy=logy, smoothing=smoothing,
                            hidden=tuple(hidden))
        self.min_interval = min_interval
        self.first_frame_cost = first_frame_cost
        self.max_overhead = max_overhead
        self.dpi = dpi
        self.renders = 0
        self._clock = clock
        self._interval = self._spacing(first_frame_cost)
        self._last = clock()  # the first redraw also respects the budget
        self._drawn_records = -1
        self._figure = None
        # align_self: a VBox stretches its children to its width, which showed
        # the PNG upscaled and blurry in JupyterLab and Notebook 7 (tests/e2e).
        self.image = widgets.Image(format="png", layout=widgets.Layout(
            max_width="100%", align_self="flex-start"))
        self.status = widgets.HTML(value=_status(recorder, "waiting for the first step"))
        self.widget = _Box([self.status, self.image],
                           label=f"LiveView(model={recorder._model_name!r})")

    def __call__(self, recorder, final: bool) -> None:
        if final and not self.final_in_fit:
            return  # the owner draws the final state later
        self.update(final=final)

    def update(self, final: bool = False, force: bool = False) -> bool:
        """Redraw if the throttle allows it (always when ``final``); True if drawn.

        ``force`` redraws even when nothing new was recorded (a control changed).
        """
        now = self._clock()
        if not final and now - self._last < self._interval:
            return False
        history = self.recorder.history
        if final and not force and history.records == self._drawn_records and self.renders:
            return False  # the final state is already on screen
        phase = effective_phase(history, self.options["phase"])
        self._figure = plotting.plot_history(
            history, figure=self._figure, title=f"{self.recorder._model_name}",
            **{**self.options, "phase": phase},
        )
        self.image.value = plotting.figure_to_png(self._figure, dpi=self.dpi, fast=True)
        self.status.value = _status(self.recorder, "done" if final else "training")
        cost = self._clock() - now
        if self.renders == 0:
            # The first frame builds the figure (layout, legend): a one-off.
            # Later frames update it in place, several times cheaper, so it
            # does not set the pace; from the second frame on, cost does.
            cost = min(cost, self.first_frame_cost)
        self._interval = self._spacing(cost)
        self._last = self._clock()
        self._drawn_records = history.records
        self.renders += 1
        return True

    def _spacing(self, frame_cost: float) -> float:
        """Seconds between frames so that drawing stays under max_overhead."""
        return max(self.min_interval, frame_cost * (1 - self.max_overhead) / self.max_overhead)

    def close(self) -> None:
        self.widget.close()
        self._figure = None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return repr(self.widget)


class Dashboard:
    """A live breakdown widget for a model, with view controls.

    Display it in one cell; it keeps updating while later cells train the
    model. The controls (terms shown, log scale, smoothing, stacked / lines /
    share) apply at once and between runs.

    Args:
        model_or_recorder: a Keras 3 model (a recorder is attached, and
            detached again by `close`) or a `Recorder`.
    """

    def __init__(self, model_or_recorder, *, view="stack", logy=False, smoothing=0,
                 min_interval=0.25):
        from .recorder import Recorder, attach, recorder_for

        if isinstance(model_or_recorder, Recorder):
            self.recorder, self._owns = model_or_recorder, False
        else:
            existing = recorder_for(model_or_recorder)
            self.recorder = existing or attach(model_or_recorder)
            self._owns = existing is None
        self.live = LiveView(self.recorder, view=view, phase="all", logy=logy,
                             smoothing=smoothing, min_interval=min_interval)
        self.view = widgets.ToggleButtons(options=list(plotting.VIEWS), value=view,
                                          description="view")
        self.logy = widgets.Checkbox(value=logy, description="log scale")
        self.smoothing = widgets.IntSlider(value=smoothing, min=0, max=50,
                                           description="smoothing")
        self.terms = widgets.SelectMultiple(options=[], description="terms",
                                            rows=6, layout=widgets.Layout(width="auto"))
        for control in (self.view, self.logy, self.smoothing, self.terms):
            control.observe(self._on_control, names="value")
        controls = widgets.HBox([widgets.VBox([self.view, self.logy, self.smoothing]),
                                 self.terms])
        self.widget = _Box([controls, self.live.widget],
                           label=f"Dashboard(model={self.recorder._model_name!r})")
        self._syncing = False
        self.recorder.add_listener(self._on_records)
        if len(self.recorder.history):
            self._sync_terms()
            self.live.update(final=True, force=True)

    def _on_records(self, recorder, final: bool) -> None:
        self._sync_terms()
        self.live.update(final=final)

    def _sync_terms(self) -> None:
        keys = self.recorder.history.keys()
        if list(self.terms.options) == keys:
            return
        shown = set(self.terms.value) | (set(keys) - set(self.terms.options))
        self._syncing = True
        try:
            self.terms.options = keys
            self.terms.value = tuple(k for k in keys if k in shown)
        finally:
            self._syncing = False

    def _on_control(self, change) -> None:
        if self._syncing:
            return
        keys = list(self.terms.options)
        self.live.options.update(
            view=self.view.value, logy=self.logy.value, smoothing=self.smoothing.value,
            hidden=tuple(k for k in keys if k not in self.terms.value),
        )
        self.live.update(final=True, force=True)

    def close(self) -> None:
        """Stop following the recorder (and detach it if the dashboard attached it)."""
        self.recorder.remove_listener(self._on_records)
        if self._owns:
            self.recorder.detach()
        self.live.close()
        self.widget.close()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return repr(self.widget)


def _status(recorder, state: str, max_terms: int = 6) -> str:
    """One line: state, step / epoch, record count, then the latest values."""
    history = recorder.history
    n = history.records
    name = f"<code>{escape(recorder._model_name)}</code>"
    if n == 0:
        return f"{name}: {escape(state)}"
    last = history.record(-1)
    epoch = last["epoch"]
    where = f"step {last['step']}" + (f", epoch {epoch + 1}" if epoch >= 0 else "")
    keys = history.keys()
    latest = [("total", last["total"])]
    latest += [(key, last[key]) for key in keys[:max_terms] if key in last]
    values = " &middot; ".join(
        f"{escape(key)} <b>{escape(fmt_number(value))}</b>" for key, value in latest
    )
    more = len(keys) - max_terms
    tail = f" &middot; +{more} more" if more > 0 else ""
    return (
        f"{name}: {escape(state)} &middot; {escape(where)} &middot; {n} records"
        f"<br><span style='font-size:90%'>{values}{tail}</span>"
    )
