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

__all__ = ["VIEWS", "plot_history", "figure_to_png", "plotted_series"]

#: Ways to draw the terms: stacked areas, one line each, percent of the total.
VIEWS = ("stack", "lines", "share")
_PHASES = ("train", "eval", "call", "all")
#: Above this many records a series is decimated (min/max per bucket) for
#: drawing: Agg time grows with vertices and a 7.5 in axes shows ~750 pixels.
_MAX_POINTS = 2000
_FIGSIZE = (7.5, 3.8)


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
        figure: a Figure to clear and draw into (live updates reuse one
            figure instead of leaking a new one per update).

    Returns:
        The `matplotlib.figure.Figure`; `plotted_series` gives its data.

    Raises:
        ValueError: for an unknown view or phase, or a bad smoothing or
            max_terms.
    """
    _check(view, phase, smoothing, max_terms)
    phase = "all" if phase is None else phase
    hidden = {hidden} if isinstance(hidden, str) else set(hidden)
    logy = logy and view != "share"
    fig = _prepare_figure(figure)
    ax = fig.add_subplot()
    ax.set_title(f"Loss breakdown ({phase})" if title is None else title)
    ax.set_xlabel("step")
    ax.set_ylabel("share of total (%)" if view == "share" else "loss")
    series = fig._loss_inspect_series = {}
    main, evals = _select(history, phase)
    if view == "share" or not len(evals):
        evals = None  # eval totals are losses, not shares
    if not len(main) and evals is None:
        ax.text(0.5, 0.5, "no records yet", transform=ax.transAxes,
                ha="center", va="center", color="0.4")
        return fig

    x = main.steps.astype(np.float64)
    by_record = (len(x) > 1 and bool(np.all(x == x[0]))
                 and bool(np.all(main.phases == "call")))
    if by_record:
        # Eager calls in a custom loop never advance Keras's optimizer step:
        # plot them in the order they were recorded instead of on one x.
        x = np.arange(1, len(x) + 1, dtype=np.float64)
        ax.set_xlabel("record (forward pass)")
    labels, ys, present = _term_series(main, hidden, max_terms)
    total = _clean(main["total"])
    if smoothing > 1:
        ys = [_smooth(y, smoothing) for y in ys]
        total = _smooth(total, smoothing)
    pos = (lambda y: np.where(y > 0, y, np.nan)) if logy else (lambda y: y)
    if view == "lines":
        for label, y, p, color in zip(labels, ys, present, _colors(labels)):
            y = np.where(p, y, np.nan)  # an absent term is a gap, not a zero
            _draw_line(ax, series, label, x, pos(y), color=color, lw=1.2)
    elif len(x):
        if view == "share":
            with np.errstate(divide="ignore", invalid="ignore"):
                ys = [y * np.where(total != 0, 100.0 / total, np.nan) for y in ys]
            ax.set_ylim(0, 100)
        elif logy:  # a zero-height band is harmless on a log axis
            ys = [np.where(y < 0, np.nan, y) for y in ys]
        # One set of records for every band (and the total), so bands stay
        # stacked after decimation: where the top edge peaks or dips.
        keep = _decimate(np.sum(ys, axis=0) if ys else total)
        if ys:
            ax.stackplot(x[keep], *[y[keep] for y in ys], labels=labels,
                         colors=_colors(labels), alpha=0.85, linewidth=0)
        series.update((label, (x[keep], y[keep])) for label, y in zip(labels, ys))
    if view != "share" and len(x):
        _draw_line(ax, series, "total", x, pos(total), color="black", lw=1.5,
                   keep=None if view == "lines" else keep)
    if evals is not None:
        _draw_line(ax, series, "eval total", evals.steps.astype(np.float64),
                   pos(_clean(evals["total"])), ls="none", marker="o", ms=4,
                   mfc="white", mec="black")
    _mark_epochs(ax, main)
    _mark_nonfinite(ax, [main] if evals is None else [main, evals], by_record)
    if logy and any(np.any(y > 0) for _, y in series.values()):
        ax.set_yscale("log")  # only with positive data: else matplotlib warns
    ax.grid(True, alpha=0.3)
    _legend(ax, len(labels) if view != "lines" and len(x) else 0)
    return fig


def figure_to_png(figure, dpi=100, fast=False) -> bytes:
    """PNG bytes of `figure`, rendered by Agg whatever backend is active.

    The size is always the figure size times ``dpi``: a user's
    ``savefig.bbox: tight`` rcParam is overridden so live images do not jump.
    ``fast`` trades file size for encoding time (zlib level 1), for live frames.
    """
    import matplotlib

    buffer = io.BytesIO()
    # rc_context only when needed: it resets every rcParam on exit.
    standard = matplotlib.rcParams["savefig.bbox"] is None
    with nullcontext() if standard else matplotlib.rc_context({"savefig.bbox": None}):
        options = {"pil_kwargs": {"compress_level": 1}} if fast else {}
        figure.savefig(buffer, format="png", dpi=dpi, **options)
    return buffer.getvalue()


def plotted_series(figure) -> dict:
    """Label -> ``(x, y)`` arrays of what `plot_history` drew on `figure`.

    For stacked views ``y`` holds each term's own values (the band height,
    in percent for ``"share"``), not the cumulative edge. Series longer than
    2,000 records are decimated, and so are these arrays. Markers such as
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
    """Main records and eval records (empty unless phase is "all")."""
    if phase != "all":
        return history.select(phase=phase), history.select(phase=())
    main = history.select(phase="train")
    if not len(main):
        main = history.select(phase="call")
    return main, history.select(phase="eval")


def _prepare_figure(figure):
    if figure is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=_FIGSIZE, layout="constrained")
        FigureCanvasAgg(figure)
        return figure
    figure.clear()
    if figure.get_layout_engine() is None:  # the outside legend needs room
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


def _draw_line(ax, series, label, x, y, *, keep=None, **style):
    keep = _decimate(y) if keep is None else keep
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


def _mark_epochs(ax, history):
    """Dotted grey lines where a new epoch (>= 0) starts; no legend entry."""
    epochs = history.epochs
    starts = np.flatnonzero((epochs[1:] != epochs[:-1]) & (epochs[1:] >= 0)) + 1
    if len(starts):
        ax.vlines(history.steps[starts], 0, 1, transform=ax.get_xaxis_transform(),
                  colors="0.6", linestyles=":", linewidth=1, label="_epochs")


def _mark_nonfinite(ax, histories, by_record=False):
    """A red line at the first step (or record) with a non-finite term or total."""
    found = [h.first_nonfinite() for h in histories]
    steps = [f.record + 1 if by_record else f.step for f in found if f is not None]
    if steps:
        ax.axvline(min(steps), color="red", lw=1.2, label="non-finite")
