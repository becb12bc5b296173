"""Matplotlib rendering of a `LossHistory`: terms over steps, as one Figure.

Figures are built with `matplotlib.figure.Figure` and the Agg canvas, never
pyplot, so nothing registers with pyplot's figure manager: no "More than 20
figures" warnings and no duplicate images at the end of a notebook cell
(jupyter-notes #24), and the output does not depend on the active backend
(#25). Pass ``figure=`` to redraw one figure in place during live updates.
"""

from __future__ import annotations

import io
from contextlib import nullcontext

import numpy as np

__all__ = ["VIEWS", "plot_history", "prepare_frame", "draw_frame", "figure_to_png",
           "plotted_series"]

#: Ways to draw the terms: stacked areas, one line each, percent of the total.
VIEWS = ("stack", "lines", "share")
_PHASES = ("train", "eval", "call", "all")
#: Above this many records a series is decimated (min/max per bucket) for
#: drawing: Agg time grows with vertices and a 7.5 in axes shows ~750 pixels.
_MAX_POINTS = 1500
_FIGSIZE = (7.5, 3.8)
#: Most epoch boundaries marked; with more epochs every k-th one is.
_MAX_EPOCH_LINES = 40


def plot_history(history, *, view="stack", phase="train", logy=False, smoothing=0,
                 hidden=(), max_terms=8, title=None, figure=None):
    """Draw the terms of `history` over steps.

    Args:
        history: a `LossHistory`; it is only read.
        view: ``"stack"`` (stacked areas and the total as a black line),
            ``"lines"`` (one line per term and the total) or ``"share"``
            (each term in percent of the total, stacked, 0 to 100).
        phase: ``"train"``, ``"eval"``, ``"call"``, or ``"all"``/``None``:
            train records (call records if there are none) with the eval
            totals as markers.
        logy: log y scale (ignored for ``"share"``); non-positive values are
            masked, except zero-height bands of a stack, which are harmless.
        smoothing: trailing moving average over this many records (0 or 1:
            raw values); records that were NaN stay NaN.
        hidden: term keys to leave out (unknown keys are ignored, so a
            live plot can name terms that have not been recorded yet).
        max_terms: at most this many term series; beyond that the
            ``max_terms - 1`` largest by mean |value| are kept and the rest
            summed into ``"other (N terms)"``, so the legend stays readable.
        title: axes title; defaults to ``"Loss breakdown (<phase>)"``.
        figure: a Figure to draw into. A figure this function drew before
            with the same terms and options is updated in place (its axes,
            ticks and legend are kept and only the data artists replaced):
            that is what keeps live redraws of long histories fast.

    Returns:
        The `matplotlib.figure.Figure`; `plotted_series` gives its data.
        For a compacted history (see `LossHistory`) the total's min-max
        range per bucket is shaded, so spikes stay visible.

    Raises:
        ValueError: for an unknown view or phase, or a bad smoothing or
            max_terms.
    """
    frame = prepare_frame(history, view=view, phase=phase, logy=logy, smoothing=smoothing,
                          hidden=hidden, max_terms=max_terms, title=title)
    return draw_frame(frame, figure=figure)


def prepare_frame(history, *, view="stack", phase="train", logy=False, smoothing=0,
                  hidden=(), max_terms=8, title=None) -> "_Frame":
    """What `plot_history` would draw, as arrays and no matplotlib.

    The numpy half of a plot (selection, smoothing, decimation), so that a
    live view can draw the frame in another process (`draw_frame` there):
    ``frame.reduced()`` keeps only the records drawn, so it pickles small
    whatever the history's length. Arguments and errors as `plot_history`.
    """
    _check(view, phase, smoothing, max_terms)
    phase = "all" if phase is None else phase
    hidden = {hidden} if isinstance(hidden, str) else set(hidden)
    frame = _frame(history, view, phase, logy and view != "share", smoothing, hidden, max_terms)
    frame.title = f"Loss breakdown ({phase})" if title is None else title
    return frame


def draw_frame(frame: "_Frame", figure=None):
    """Draw a `prepare_frame` result: `plot_history`'s matplotlib half.

    Needs nothing but the frame, so it also runs in `loss_inspect._render_process`.
    """
    title = frame.title
    key = (frame.layout, title)
    live = getattr(figure, "_loss_inspect_live", None)
    if live is not None and live[0] == key and figure.axes == [live[1]]:
        ax, artists = live[1], live[2]
        for artist in artists:
            artist.remove()
        ax.relim()  # forget the removed data; the new artists add theirs
        artists[:] = _draw_data(ax, frame, figure)
        ax.autoscale_view()
        _keep_layout_unless_ticks_widen(figure, ax)
        return figure
    fig = _prepare_figure(figure)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(frame.xlabel)
    view = frame.view
    ax.set_ylabel("share of total (%)" if view == "share" else "loss")
    if frame.empty:
        fig._loss_inspect_series = {}
        fig._loss_inspect_live = None
        ax.text(0.5, 0.5, "no records yet", transform=ax.transAxes,
                ha="center", va="center", color="0.4")
        return fig
    artists = _draw_data(ax, frame, fig)
    ax.grid(True, alpha=0.3)
    _legend(ax, len(frame.labels) if view != "lines" and frame.stacked else 0)
    fig._loss_inspect_live = (key, ax, artists)
    fig._loss_inspect_tick_width = _tick_width(ax)
    fig._loss_inspect_frozen = False
    return fig


def _tick_width(ax) -> int:
    """Characters in the widest y tick label (what the left margin depends on)."""
    axis = ax.yaxis
    labels = axis.get_major_formatter().format_ticks(axis.get_majorticklocs())
    return max((len(label) for label in labels), default=0)


def _keep_layout_unless_ticks_widen(figure, ax):
    """Freeze the constrained layout between live frames (it costs a third of
    a frame), but lay out again when wider y tick labels need more room."""
    width = _tick_width(ax)
    frozen = width <= figure._loss_inspect_tick_width
    figure._loss_inspect_tick_width = max(width, figure._loss_inspect_tick_width)
    figure.set_layout_engine("none" if frozen else "constrained")
    figure._loss_inspect_frozen = frozen


def _draw_canvas(figure):
    """Draw `figure` on its Agg canvas; a live figure's legend is pasted.

    The legend of a figure updated in place does not change while the
    layout is frozen, and its text is a third of a frame's drawing time:
    its pixels are kept from the frame that drew it and pasted back.
    """
    canvas = figure.canvas
    live = getattr(figure, "_loss_inspect_live", None)
    legend = live[1].get_legend() if live is not None else None
    cached = getattr(figure, "_loss_inspect_legend_pixels", None)
    if getattr(figure, "_loss_inspect_frozen", False) and legend is not None and (
            cached is not None and cached[0] == figure.dpi):
        legend.set_visible(False)
        try:
            canvas.draw()
        finally:
            legend.set_visible(True)
        canvas.restore_region(cached[1])
        return
    canvas.draw()  # a new layout may have moved the legend: keep its new pixels
    figure._loss_inspect_legend_pixels = None
    if legend is not None:
        box = legend.get_window_extent(canvas.get_renderer())
        figure._loss_inspect_legend_pixels = (figure.dpi, canvas.copy_from_bbox(box))


class _Frame:
    """What one plot shows, as arrays: computed first, then drawn or updated.

    Every series is drawn at precomputed indices (``keep``: the stack and
    its total; ``keeps``: each line; ``range_keep``, ``eval_keep``), so
    the drawing does no decimation of its own and `reduced` can drop every
    record it would not draw.
    """

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def reduced(self) -> "_Frame":
        """The same frame with only the records drawn (at most a few
        thousand): what a live view sends to its render process."""
        if not len(self.x):
            return self
        indices = [self.keep, self.range_keep, *self.keeps.values()]
        if any(isinstance(k, slice) for k in indices if k is not None):
            return self  # short enough to be drawn whole
        used = np.unique(np.concatenate([k for k in indices if k is not None]))
        remap = lambda k: None if k is None else np.searchsorted(used, k)  # noqa: E731
        fields = dict(self.__dict__)
        fields.update(
            x=self.x[used], ys=[y[used] for y in self.ys],
            present=[p[used] for p in self.present], total=self.total[used],
            total_range=None if self.total_range is None else tuple(
                r[used] for r in self.total_range),
            keep=remap(self.keep), range_keep=remap(self.range_keep),
            keeps={label: remap(k) for label, k in self.keeps.items()},
        )
        if self.evals is not None and not isinstance(self.eval_keep, slice):
            ex, ey = self.evals
            fields.update(evals=(ex[self.eval_keep], ey[self.eval_keep]),
                          eval_keep=slice(None))
        return _Frame(**fields)


def _frame(history, view, phase, logy, smoothing, hidden, max_terms) -> _Frame:
    main, evals = _select(history, phase)
    if view == "share" or not len(evals):
        evals = None  # eval totals are losses, not shares
    empty = not len(main) and evals is None
    x = main.steps.astype(np.float64)
    by_record = (len(x) > 1 and bool(np.all(x == x[0]))
                 and bool(np.all(main.phases == "call")))
    if by_record:
        # Eager calls in a custom loop never advance Keras's optimizer step:
        # plot them in the order they were recorded instead of on one x.
        x = np.arange(1, len(x) + 1, dtype=np.float64)
    labels, ys, present = _term_series(main, hidden, max_terms)
    total = _clean(main["total"])
    total_range = None
    if main.compacted and smoothing <= 1 and view != "share":
        total_range = (_clean(main.min("total")), _clean(main.max("total")))
    if smoothing > 1:
        ys = [_smooth(y, smoothing) for y in ys]
        total = _smooth(total, smoothing)
    keep = None
    if view != "lines" and len(x):
        if view == "share":
            with np.errstate(divide="ignore", invalid="ignore"):
                ys = [y * np.where(total != 0, 100.0 / total, np.nan) for y in ys]
        elif logy:  # a zero-height band is harmless on a log axis
            ys = [np.where(y < 0, np.nan, y) for y in ys]
        # One set of records for every band (and the total), so bands stay
        # stacked after decimation: where the top edge peaks or dips.
        keep = _decimate(np.sum(ys, axis=0) if ys else total)
    epochs = main.epochs
    starts = np.flatnonzero((epochs[1:] != epochs[:-1]) & (epochs[1:] >= 0)) + 1
    if len(starts) > _MAX_EPOCH_LINES:  # past that the lines are a grey wash
        starts = starts[:: -(-len(starts) // _MAX_EPOCH_LINES)]
    found = [h.first_nonfinite() for h in ([main] if evals is None else [main, evals])]
    nonfinite = [f.record + 1 if by_record else f.step for f in found if f is not None]
    xlabel = "record (forward pass)" if by_record else "step"
    evals = None if evals is None else (evals.steps.astype(np.float64), _clean(evals["total"]))
    pos = _positive if logy else (lambda y: y)
    keeps, range_keep = {}, None
    if len(x):
        if view == "lines":  # each line decimated on its own
            for label, y, p in zip(labels, ys, present):
                keeps[label] = _decimate(pos(np.where(p, y, np.nan)))
            keeps["total"] = _decimate(pos(total))
        else:
            keeps["total"] = keep
        if total_range is not None:
            low, high = total_range
            range_keep = _decimate(high)
            if not isinstance(range_keep, slice):  # both the highest and the lowest
                range_keep = np.union1d(range_keep, _decimate(low))
    return _Frame(
        view=view, logy=logy, empty=empty, x=x, labels=labels, ys=ys, present=present,
        total=total, total_range=total_range, keep=keep, keeps=keeps,
        range_keep=range_keep, stacked=bool(len(x)), evals=evals,
        eval_keep=None if evals is None else _decimate(pos(evals[1])),
        epoch_x=main.steps[starts].astype(np.float64),
        nonfinite_x=min(nonfinite) if nonfinite else None, xlabel=xlabel,
        # What the axes, legend and labels depend on: equal layouts are
        # redrawn in place.
        layout=(view, logy, xlabel, tuple(labels), evals is None, total_range is None,
                bool(len(x)), empty),
    )


def _positive(y):
    """Non-positive values masked, for a log axis."""
    return np.where(y > 0, y, np.nan)


def _draw_data(ax, frame, fig) -> list:
    """Draw the data of `frame` on `ax`; return the artists (to replace later)."""
    series = fig._loss_inspect_series = {}
    before = set(ax.get_children())
    x, logy, view = frame.x, frame.logy, frame.view
    pos = _positive if logy else (lambda y: y)
    keep = frame.keep
    if frame.total_range is not None and len(x):
        low, high = frame.total_range
        k = frame.range_keep
        ax.fill_between(x[k], pos(low[k]), pos(high[k]), color="0.3", alpha=0.18,
                        linewidth=0, label="_total range")
        series["total min"], series["total max"] = (x[k], pos(low[k])), (x[k], pos(high[k]))
    if view == "lines":
        for label, y, p, color in zip(frame.labels, frame.ys, frame.present,
                                      _colors(frame.labels)):
            y = np.where(p, y, np.nan)  # an absent term is a gap, not a zero
            _draw_line(ax, series, label, x, pos(y), frame.keeps[label], color=color, lw=1.2)
    elif len(x):
        if frame.ys:
            ax.stackplot(x[keep], *[y[keep] for y in frame.ys], labels=frame.labels,
                         colors=_colors(frame.labels), alpha=0.85, linewidth=0)
        series.update((label, (x[keep], y[keep])) for label, y in zip(frame.labels, frame.ys))
    if view == "share":
        ax.set_ylim(0, 100)
    elif len(x):
        _draw_line(ax, series, "total", x, pos(frame.total), frame.keeps["total"],
                   color="black", lw=1.5)
    if frame.evals is not None:
        ex, ey = frame.evals
        _draw_line(ax, series, "eval total", ex, pos(ey), frame.eval_keep, ls="none",
                   marker="o", ms=4, mfc="white", mec="black")
    if len(frame.epoch_x):  # dotted grey lines where a new epoch starts
        ax.vlines(frame.epoch_x, 0, 1, transform=ax.get_xaxis_transform(),
                  colors="0.6", linestyles=":", linewidth=1, label="_epochs")
    if frame.nonfinite_x is not None:  # the first step with a non-finite value
        ax.axvline(frame.nonfinite_x, color="red", lw=1.2, label="non-finite")
    if logy and any(np.any(y > 0) for _, y in series.values()):
        ax.set_yscale("log")  # only with positive data: else matplotlib warns
    return [a for a in ax.get_children() if a not in before]


def figure_to_png(figure, dpi=100, fast=False) -> bytes:
    """PNG bytes of `figure`, rendered by Agg whatever backend is active.

    The size is always the figure size times ``dpi``: a user's
    ``savefig.bbox: tight`` rcParam is overridden so live images do not jump.
    ``fast`` trades file size for encoding time (zlib level 1), for live frames.
    """
    import matplotlib

    buffer = io.BytesIO()
    if fast:
        # One draw straight to PNG: savefig draws twice when the figure has a
        # layout engine (a dry run, then the real one).
        from PIL import Image

        saved_dpi = figure.dpi
        figure.set_dpi(dpi)
        try:
            _draw_canvas(figure)
            pixels = figure.canvas.buffer_rgba()
            image = Image.frombuffer("RGBA", (pixels.shape[1], pixels.shape[0]), pixels,
                                     "raw", "RGBA", 0, 1)
            # Opaque figures: RGB encodes a quarter less data.
            if figure.get_facecolor()[3] == 1.0:
                image = image.convert("RGB")
            image.save(buffer, format="png", compress_level=1)
        finally:
            figure.set_dpi(saved_dpi)
        return buffer.getvalue()
    # rc_context only when needed: it resets every rcParam on exit.
    standard = matplotlib.rcParams["savefig.bbox"] is None
    with nullcontext() if standard else matplotlib.rc_context({"savefig.bbox": None}):
        figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def plotted_series(figure) -> dict:
    """Label -> ``(x, y)`` arrays of what `plot_history` drew on `figure`.

    For stacked views ``y`` holds each term's own values (the band height,
    in percent for ``"share"``), not the cumulative edge. Series longer than
    1,500 records are decimated, and so are these arrays. Markers such as
    epoch and non-finite lines are not data and are left out. For a figure
    not drawn by `plot_history`, every labelled line of every axes is read.
    """
    stored = getattr(figure, "_loss_inspect_series", None)
    if stored is not None:
        return {k: (x.copy(), y.copy()) for k, (x, y) in stored.items()}
    lines = [line for ax in figure.axes for line in ax.lines]
    return {
        line.get_label(): (np.asarray(line.get_xdata(), float),
                           np.asarray(line.get_ydata(), float))
        for line in lines if not line.get_label().startswith("_")
    }


def _check(view, phase, smoothing, max_terms):
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}; got view={view!r}.")
    if phase is not None and phase not in _PHASES:
        raise ValueError(f"phase must be one of {_PHASES} or None; got {phase=!r}.")
    for name, value, low in (("smoothing", smoothing, 0), ("max_terms", max_terms, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
                value < low):
            raise ValueError(
                f"{name} must be an integer >= {low}; got {name}={value!r}.")


def _select(history, phase):
    """Main records and eval records (empty unless phase is "all").

    Plotting only reads, so a history whose rows all have the wanted phase
    is used as it is: copying 50,000 rows costs a live frame 10 ms.
    """
    counts = history.phase_counts()

    def only(name):
        return history if set(counts) <= {name} else history.select(phase=name)

    if phase != "all":
        return only(phase), history.select(phase=())
    main = only("train") if counts.get("train") else only("call")
    return main, history.select(phase="eval")


def _prepare_figure(figure):
    if figure is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=_FIGSIZE, layout="constrained")
        FigureCanvasAgg(figure)
        return figure
    frozen_by_us = getattr(figure, "_loss_inspect_frozen", False)
    figure.clear()
    figure._loss_inspect_live = figure._loss_inspect_frozen = None
    if figure.get_layout_engine() is None or frozen_by_us:  # the legend needs room
        figure.set_layout_engine("constrained")
    return figure


def _term_series(history, hidden, max_terms):
    """Labels, values (absent -> 0, non-finite -> NaN) and present masks."""
    keys = [k for k in history.keys() if k not in hidden and history.present(k).any()]
    present = [history.present(k) for k in keys]
    values = [np.where(p, _clean(history[k]), 0.0) for k, p in zip(keys, present)]
    if len(keys) <= max_terms:
        return keys, values, present
    size = [np.abs(v[p & np.isfinite(v)]) for v, p in zip(values, present)]
    size = [a.mean() if a.size else 0.0 for a in size]
    kept = set(np.argsort(size, kind="stable")[::-1][: max_terms - 1].tolist())
    rest = [i for i in range(len(keys)) if i not in kept]
    kept = sorted(kept)  # display order, as in the history
    other = np.sum([values[i] for i in rest], axis=0)
    other_present = np.any([present[i] for i in rest], axis=0)
    return ([keys[i] for i in kept] + [f"other ({len(rest)} terms)"],
            [values[i] for i in kept] + [other],
            [present[i] for i in kept] + [other_present])


def _clean(y):
    """Non-finite values (NaN, inf) become NaN: drawn as gaps, never as spikes."""
    return np.where(np.isfinite(y), y, np.nan)


def _smooth(y, k):
    """Trailing mean over ``k`` records, skipping NaN; NaN records stay NaN."""
    ok = np.isfinite(y)
    sums = np.cumsum(np.where(ok, y, 0.0))
    counts = np.cumsum(ok)
    sums[k:] = sums[k:] - sums[:-k]
    counts[k:] = counts[k:] - counts[:-k]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sums / counts
    return np.where(ok, out, np.nan)


def _decimate(y, max_points=_MAX_POINTS):
    """Indices keeping each bucket's min and max, so single-record spikes survive."""
    n = len(y)
    if n <= max_points:
        return slice(None)
    size = -(-n // (max_points // 2))  # records per bucket, rounded up
    buckets = np.full(-(-n // size) * size, np.nan)
    buckets[:n] = y
    buckets = buckets.reshape(-1, size)
    finite = np.isfinite(buckets)
    low = np.where(finite, buckets, np.inf).argmin(axis=1)
    high = np.where(finite, buckets, -np.inf).argmax(axis=1)
    base = np.arange(len(buckets)) * size
    return np.unique(np.minimum(np.r_[base + low, base + high, 0, n - 1], n - 1))


def _draw_line(ax, series, label, x, y, keep, **style):
    x, y = x[keep], y[keep]
    ax.plot(x, y, label=label, **style)
    series[label] = (x, y)


def _colors(labels):
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(labels) <= 10 else "tab20"].colors
    return ["0.7" if label.startswith("other (") else palette[i % len(palette)]
            for i, label in enumerate(labels)]


def _legend(ax, stacked):
    """Legend right of the axes; a stack's entries top band first, as drawn."""
    handles, names = ax.get_legend_handles_labels()
    if not handles:
        return
    order = list(range(stacked))[::-1] + list(range(stacked, len(handles)))
    n = len(handles)  # beyond 20 entries (max_terms=30) one column is cut off
    ax.legend([handles[i] for i in order], [names[i] for i in order],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              fontsize="small" if n <= 12 else "x-small" if n <= 16 else "xx-small",
              ncols=1 if n <= 20 else 2, borderaxespad=0.0)
