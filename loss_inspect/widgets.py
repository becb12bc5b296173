"""Live views of a recorder: `LiveView` (inside ``%%losses``) and `Dashboard`.

Only core ipywidgets (``Image``, ``HTML``, ``VBox`` and plain controls), no
custom JavaScript, so they render in JupyterLab, Notebook 7, VS Code and Colab.
The figure is rendered to PNG and pushed into one persistent ``Image`` (no
``clear_output`` flicker, no pyplot figures). Frames are asked for on the
main thread right after a step function returns, throttled by wall clock: at
least ``min_interval`` seconds apart (4 per second at most) and spaced so
that drawing takes at most ``max_overhead`` of the time (1 %: the recorder's
own cost is 3 % of a 1.6 ms PyTorch step on a fast 2-core CPU, and a watched
fit must stay within 5 %); the final state is always drawn (by ``%%losses``
after ``fit()`` returns). In a kernel the frames during a run are drawn by a
helper process (`loss_inspect._render_process`): the main thread prepares
the frame's arrays (about a millisecond) and shows the PNG that comes back
at a later step, so training does not wait for matplotlib's 30-70 ms. The
helper draws at the lowest CPU priority, so its time is paced by a larger
budget (`HELPER_SHARE`, 4 % of the time): at that priority a second of its
drawing cost training at most 0.21 s (JAX), 0.11 s (TensorFlow) and nothing
readable on torch (`tests/bench/helper_priority.py`), so 4 % of the time costs
training under 1 %, and a slow host still gets frames while a cell trains.
The final frame is drawn here, and a frame the helper finishes after one
drawn here is dropped. Every frame counts, the first included: it lays out
the figure and costs two to four times an in-place update (0.08-0.3 s on a
2-core host), so the next frame waits until it is paid for. The first frame
itself waits for a budget sized from the last first frame this process drew,
but never more than ``max_first_wait`` (2 s): at 1 % an 80 ms first frame
would otherwise wait 8 s, and a view that shows nothing for a whole 8 s fit
is not live. That one frame is the only drawing over budget (in-process:
about 80 ms per run on a slow host, 1 % of an 8 s fit). A view's text repr
is constant, so frontend-less runs (nbval) stay deterministic.

The status line always ends on how the run ended: ``done``, or ``stopped by
ValueError at step N`` when the cell or fit raised (``LiveView.finish``). This
module imports without ipywidgets; creating a view without it raises an
`ImportError` that says what to install and what failed.
"""

from __future__ import annotations

import time
from functools import lru_cache
from html import escape

from . import plotting
from .report import effective_phase
from ._text import fmt_number

#: Largest share of wall time the helper process may spend drawing one
#: view's frames (see the module docstring); this process's part of each of
#: those frames stays within the view's ``max_overhead``.
HELPER_SHARE = 0.04

__all__ = ["LiveView", "Dashboard"]

_WAITING = "waiting for the first step"
#: Seconds a frame may take in the helper process before the view gives up on it.
_RENDER_TIMEOUT = 30.0


def _ipywidgets(feature: str):
    """ipywidgets, or an ImportError that names the feature, the fix and the cause."""
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError(
            f"{feature} needs ipywidgets: pip install ipywidgets "
            f"(import ipywidgets failed: {type(exc).__name__}: {exc})"
        ) from exc
    return ipywidgets


@lru_cache(maxsize=None)
def _box_class():
    widgets = _ipywidgets("a loss_inspect widget")

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

    return _Box


class LiveView:
    """A figure and a status line that follow a `Recorder` while it records.

    Register it with ``recorder.add_listener(view)``; it redraws itself.

    Args:
        recorder: the `Recorder` to follow.
        view, phase, logy, smoothing, hidden: passed to `plotting.plot_history`.
        min_interval: smallest time between two redraws, in seconds.
        max_overhead: largest share of wall time spent drawing.
        max_first_wait: the first frame is drawn at most this many seconds
            into the run, whatever the budget says (see the module docstring).
        first_frame_cost: assumed cost of the first frame, in seconds. By
            default the cost of the last first frame a default view drew in
            this process (`LiveView.first_frame_seconds`; 0.1 before any).
        dpi: resolution of the live frames.
        final_in_fit: draw the final frame when ``fit()`` returns. ``%%losses``
            passes False and calls `finish` when the cell ends, so that no
            frame is drawn inside ``fit()`` but the throttled ones.
        clock: a monotonic clock (tests pass a fake one).
        render_process: draw the frames during a run in a helper process
            (`loss_inspect._render_process`), so that the training thread
            only prepares them (about a millisecond instead of 30-70). The
            final frame is always drawn here. ``"auto"`` (the default): in
            a Jupyter kernel, unless ``LOSS_INSPECT_RENDER_PROCESS=0``. A
            helper that cannot start or fails falls back to drawing here.

    Raises:
        ImportError: ipywidgets cannot be imported.
        ValueError: ``max_overhead`` is not between 0 and 1, or
            ``min_interval`` / ``max_first_wait`` is negative or not a number.
    """

    #: What the last first frame of a default view cost in this process, in
    #: seconds: the next view's first frame is paced by it.
    first_frame_seconds = 0.1

    def __init__(self, recorder, *, view="stack", phase="train", logy=False,
                 smoothing=0, hidden=(), min_interval=0.25, max_overhead=0.01,
                 max_first_wait=2.0, first_frame_cost=None, dpi=80, final_in_fit=True,
                 clock=time.monotonic, render_process="auto"):
        _check_pacing(min_interval=min_interval, max_overhead=max_overhead,
                      max_first_wait=max_first_wait)
        widgets = _ipywidgets("li.LiveView")
        self.recorder = recorder
        self.final_in_fit = final_in_fit
        self.options = dict(view=view, phase=phase, logy=logy, smoothing=smoothing,
                            hidden=tuple(hidden))
        self.min_interval = min_interval
        self._learns_first_frame = first_frame_cost is None
        if first_frame_cost is None:
            first_frame_cost = LiveView.first_frame_seconds
        self.first_frame_cost = first_frame_cost
        self.max_overhead = max_overhead
        self.max_first_wait = max_first_wait
        self.dpi = dpi
        self.renders = 0
        #: What the status line says: waiting, "training", "done" or "stopped by ...".
        self.state = _WAITING
        self._clock = clock
        self._interval = max(min_interval, min(self._spacing(first_frame_cost), max_first_wait))
        self._last = clock()  # the first redraw also respects the budget
        self._drawn_records = -1
        self._figure = None
        self._renderer = _render_process_for(render_process)
        self._render_key = _new_render_key() if self._renderer is not None else None
        self._helper_has_figure = False  # else the next frame sends this process's style
        self._sequence = 0  # frames asked for; a reply older than the last is dropped
        self._in_flight = None  # (sequence, records, state, asked at) of the frame being drawn
        self._helper_seconds = 0.0  # what the helper's last frame took
        #: Why the helper process stopped drawing for this view (None: it did not).
        self.render_failure = None
        # align_self: a VBox stretches its children to its width, which showed
        # the PNG upscaled and blurry in JupyterLab and Notebook 7 (tests/e2e).
        self.image = widgets.Image(format="png", layout=widgets.Layout(
            max_width="100%", align_self="flex-start"))
        self.status = widgets.HTML(value=_status(recorder, _WAITING))
        self.widget = _box_class()([self.status, self.image],
                                   label=f"LiveView(model={recorder._model_name!r})")

    def __call__(self, recorder, final: bool) -> None:
        if final and not self.final_in_fit:
            return  # the owner draws the final state later
        self.update(final=final)

    def update(self, final: bool = False, force: bool = False) -> bool:
        """Redraw if the throttle allows it (always when ``final``); True if drawn.

        ``final`` marks the run as done: the status says so even when the
        last throttled frame already shows every record (no redraw then).
        ``force`` redraws even when nothing new was recorded (a control changed).
        """
        return self._draw(final, force, "done" if final else "training")

    def finish(self, error: BaseException | None = None) -> bool:
        """Show the final state: every record, and ``done`` or how it stopped.

        With ``error`` (the exception that ended the run, Ctrl-C included)
        the status reads ``stopped by <ExceptionType> at step N``. The frame
        is redrawn only if records are missing from it; True if drawn.
        """
        if error is None:
            return self._draw(True, False, "done")
        return self._draw(True, False, f"stopped by {type(error).__name__}")

    @property
    def current(self) -> bool:
        """True when the view shows every record and how the run ended."""
        return (self.state not in (_WAITING, "training")
                and self.recorder.history.records == self._drawn_records)

    def redraw(self) -> bool:
        """Redraw now (the options changed), keeping what the status says."""
        return self._draw(True, True, self.state)

    def _draw(self, final: bool, force: bool, state: str) -> bool:
        now = self._clock()
        if self._in_flight is not None:  # only then can a reply be waiting
            self._show_rendered(now)
        if not final and now - self._last < self._interval:
            return False
        if not final and self._renderer is not None:
            return self._ask_renderer(now, state)
        if final:
            self._end_helper_run()
        history = self.recorder.history
        if final and not force and history.records == self._drawn_records and self.renders:
            self._set_status(state)  # the frame is up to date; only the state changes
            return False
        phase = effective_phase(history, self.options["phase"])
        self._figure = plotting.plot_history(
            history, figure=self._figure, title=f"{self.recorder._model_name}",
            **{**self.options, "phase": phase},
        )
        self.image.value = plotting.figure_to_png(self._figure, dpi=self.dpi, fast=True)
        self._set_status(state)
        cost = self._clock() - now
        self._learn_first_frame(cost)
        # The next frame waits until this one is paid for, the costly first
        # one included: drawing stays within max_overhead of the time.
        self._interval = self._spacing(cost)
        self._last = self._clock()
        self._drawn_records = history.records
        self.renders += 1
        return True

    def _end_helper_run(self) -> None:
        """The run is over (a final frame): a frame still being drawn by the
        helper is older than this state and is dropped, and the helper lets
        go of this view's figure (``%%losses`` never closes its view)."""
        self._sequence += 1
        self._in_flight = None
        if self._renderer is not None and self._helper_has_figure:
            self._renderer.forget(self._render_key)
            self._helper_has_figure = False

    def _learn_first_frame(self, cost: float) -> None:
        if self.renders == 0 and self._learns_first_frame:
            # The next view's first frame waits for its real cost (the
            # first frame lays out the figure and its legend: 2-3 frames).
            LiveView.first_frame_seconds = cost

    def _ask_renderer(self, now: float, state: str) -> bool:
        """Send the next frame to the helper process (one at a time)."""
        if self._in_flight is not None:
            if now - self._in_flight[3] < _RENDER_TIMEOUT:
                return False  # still drawing the last one
            reason = f"no frame came back in {_RENDER_TIMEOUT:.0f} s"
            self._renderer.abandon(reason)  # the next view starts a new helper
            self._renderer_failed(reason)
            return self._draw(False, False, state)
        history = self.recorder.history
        phase = effective_phase(history, self.options["phase"])
        frame = plotting.prepare_frame(history, title=f"{self.recorder._model_name}",
                                       **{**self.options, "phase": phase}).reduced()
        self._sequence += 1
        rc = None if self._helper_has_figure else _user_rc_params()
        if not self._renderer.submit(self._render_key, self._sequence, frame, self.dpi, rc):
            self._renderer_failed(self._renderer.last_error)
            return self._draw(False, False, state)
        self._in_flight = (self._sequence, history.records, state, now)
        self._helper_has_figure = True
        # Paced by the dearer of this thread's part (max_overhead) and the
        # helper's last frame (HELPER_SHARE: it draws at the lowest priority).
        self._interval = max(self._spacing(self._clock() - now),
                             self._spacing(self._helper_seconds, self._helper_share))
        self._last = self._clock()
        return True

    def _show_rendered(self, now: float) -> None:
        """Show the frame the helper finished, if it is the latest asked for."""
        reply = self._renderer.take(self._render_key)
        if reply is None:
            if not self._renderer.alive:
                self._renderer_failed(self._renderer.failure)
            return
        if self._in_flight is None or reply.sequence != self._in_flight[0]:
            return  # a frame drawn here since: this one is older
        _, records, state, _ = self._in_flight
        self._in_flight = None
        if reply.png is None:
            self._renderer_failed(reply.error)
            return
        self.image.value = reply.png
        self._set_status(state)
        self._learn_first_frame(reply.seconds)
        self._helper_seconds = reply.seconds
        self._interval = max(self._interval, self._spacing(reply.seconds, self._helper_share))
        self._drawn_records = records
        self.renders += 1

    def _renderer_failed(self, reason) -> None:
        """Draw in this process from now on, and say so once."""
        self._renderer, self._in_flight = None, None
        self.render_failure = reason or "unknown"
        import warnings

        warnings.warn(f"loss_inspect: the live view's render process failed "
                      f"({self.render_failure}); drawing in the kernel instead.",
                      RuntimeWarning, stacklevel=3)

    def _set_status(self, state: str) -> None:
        self.status.value = _status(self.recorder, state)
        self.state = state

    @property
    def _helper_share(self) -> float:
        """The helper's budget: `HELPER_SHARE`, or this view's if larger."""
        return max(HELPER_SHARE, self.max_overhead)

    def _spacing(self, frame_cost: float, share: float | None = None) -> float:
        """Seconds between frames so that drawing stays under ``share`` of
        the time (the view's ``max_overhead`` unless given)."""
        share = self.max_overhead if share is None else share
        return max(self.min_interval, frame_cost * (1 - share) / share)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.forget(self._render_key)
            self._renderer = None
        self.widget.close()
        self._figure = None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return repr(self.widget)


def _user_rc_params():
    """This process's matplotlib style for the helper (None: matplotlib was
    never imported here, so the defaults hold)."""
    import sys

    if "matplotlib" not in sys.modules:
        return None
    import matplotlib

    return {key: value for key, value in matplotlib.rcParams.items()
            if key != "backend"}  # the helper draws with Agg whatever this one uses


def _new_render_key() -> int:
    from ._render_process import new_view_key

    return new_view_key()


def _render_process_for(requested):
    """The helper process a new view draws with, or None (draw here)."""
    if requested == "auto":
        from ._display import render_process_enabled

        requested = render_process_enabled()
    if requested is not True and requested is not False:
        raise ValueError(f"render_process must be True, False or 'auto'; "
                         f"got render_process={requested!r}.")
    if not requested:
        return None
    from . import _render_process

    return _render_process.shared()


def _check_pacing(*, min_interval, max_overhead, max_first_wait) -> None:
    """A bad pacing argument would divide by zero at the first frame, inside
    training, or never draw: refuse it when the view is made."""
    def is_number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not (is_number(max_overhead) and 0 < max_overhead < 1):
        raise ValueError(
            "max_overhead is the largest share of wall time spent drawing, a number "
            f"between 0 and 1 (0.01 is 1 %); got max_overhead={max_overhead!r}.")
    for name, value in (("min_interval", min_interval), ("max_first_wait", max_first_wait)):
        if not (is_number(value) and value >= 0):
            raise ValueError(f"{name} is a time in seconds, a number >= 0; "
                             f"got {name}={value!r}.")


class Dashboard:
    """A live breakdown widget for a model, with view controls.

    Display it in one cell; it keeps updating while later cells train the
    model. The controls (terms shown, log scale, smoothing, stacked / lines /
    share) apply at once and between runs. In IPython, the end of every cell
    that recorded something draws the final state too (a custom loop, or a
    ``fit()`` that raised: ``stopped by ...``).

    Args:
        model_or_recorder: a Keras 3 model (a recorder is attached, and
            detached again by `close`) or a `Recorder`.
        view, logy, smoothing: the controls' initial values.
        min_interval, clock: passed to `LiveView`.

    Raises:
        ImportError: ipywidgets cannot be imported (the message says how to
            install it and what failed).
    """

    def __init__(self, model_or_recorder, *, view="stack", logy=False, smoothing=0,
                 min_interval=0.25, clock=time.monotonic):
        widgets = _ipywidgets("li.Dashboard")
        from ._display import shell
        from .recorder import Recorder, attach, recorder_for

        if isinstance(model_or_recorder, Recorder):
            self.recorder, self._owns = model_or_recorder, False
        else:
            existing = recorder_for(model_or_recorder)
            self.recorder = existing or attach(model_or_recorder)
            self._owns = existing is None
        self.live = LiveView(self.recorder, view=view, phase="all", logy=logy,
                             smoothing=smoothing, min_interval=min_interval, clock=clock)
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
        self.widget = _box_class()([controls, self.live.widget],
                                   label=f"Dashboard(model={self.recorder._model_name!r})")
        self._syncing = False
        self.recorder.add_listener(self._on_records)
        # A fit() that raises, and custom loops, never send a final notice;
        # the end of the cell does. Bound method: unregistered by close().
        self._shell = shell()
        if self._shell is not None:
            self._shell.events.register("post_run_cell", self._after_cell)
        if len(self.recorder.history):
            self._sync_terms()
            self.live.update(final=True, force=True)

    def _on_records(self, recorder, final: bool) -> None:
        self._sync_terms()
        self.live.update(final=final)

    def _after_cell(self, result=None) -> None:
        """IPython ``post_run_cell``: show how the cell's training ended.

        An exception here would print a traceback under every later cell
        (IPython's event trigger), so a failure is reported once and the
        callback removes itself.
        """
        try:
            if self.live.current or self.recorder.history.records == 0:
                return
            self._sync_terms()
            self.live.finish(getattr(result, "error_in_exec", None))
        except Exception as exc:
            self._stop_following_cells()
            import warnings

            warnings.warn(
                f"loss_inspect: the dashboard could not show the end of the cell "
                f"({type(exc).__name__}: {exc}); it no longer redraws at cell ends.",
                RuntimeWarning, stacklevel=2,
            )

    def _stop_following_cells(self) -> None:
        if self._shell is not None:
            try:
                self._shell.events.unregister("post_run_cell", self._after_cell)
            except ValueError:
                pass  # already unregistered
            self._shell = None

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
        self.live.redraw()

    def close(self) -> None:
        """Stop following the recorder (and detach it if the dashboard attached it)."""
        self.recorder.remove_listener(self._on_records)
        self._stop_following_cells()
        if self._owns:
            self.recorder.detach()
        self.live.close()
        self.widget.close()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return repr(self.widget)


def _status(recorder, state: str, max_terms: int = 6) -> str:
    """One line: state, step / epoch, record count, then the latest values.

    ``stopped by X`` reads ``stopped by X at step N, epoch E``; the other
    states are followed by `` · step N, epoch E``.
    """
    history = recorder.history
    n = history.records
    name = f"<code>{escape(recorder._model_name)}</code>"
    if n == 0:
        return f"{name}: {escape(state)}"
    last = history.record(-1)
    epoch = last["epoch"]
    where = f"step {last['step']}" + (f", epoch {epoch + 1}" if epoch >= 0 else "")
    joiner = " at " if state.startswith("stopped") else " &middot; "
    keys = history.keys()
    latest = [("total", last["total"])]
    latest += [(key, last[key]) for key in keys[:max_terms] if key in last]
    values = " &middot; ".join(
        f"{escape(key)} <b>{escape(fmt_number(value))}</b>" for key, value in latest
    )
    more = len(keys) - max_terms
    tail = f" &middot; +{more} more" if more > 0 else ""
    return (
        f"{name}: {escape(state)}{joiner}{escape(where)} &middot; {n} records"
        f"<br><span style='font-size:90%'>{values}{tail}</span>"
    )
