"""Behaviour of `loss_inspect.plotting`: the data behind the plot, not pixels.

Histories are built directly with `_add_term` / `_append`, as in
test_history.py. Plots are checked through `plotted_series` and the artists
on the axes (jupyter-notes #41: compare the data behind a plot, not images).
"""

import io
import subprocess
import sys
import time

import matplotlib
import matplotlib.image
import numpy as np
import pytest

from loss_inspect.history import PHASES, LossHistory, Term
from loss_inspect.plotting import (VIEWS, draw_frame, figure_to_png, plot_history,
                                   plotted_series, prepare_frame)

TRAIN, EVAL, CALL = (PHASES.index(p) for p in ("train", "eval", "call"))


def append(h, phase, cols, values, *, steps=None, epochs=None, totals=None):
    """Append len(values) records to ``h``; totals default to the row sums."""
    values = np.asarray(values, dtype=np.float64).reshape(-1, len(cols))
    k = values.shape[0]
    start = len(h)
    steps = np.arange(start + 1, start + k + 1) if steps is None else np.asarray(steps)
    epochs = np.zeros(k, np.int64) if epochs is None else np.asarray(epochs)
    totals = values.sum(axis=1) if totals is None else np.asarray(totals, float)
    h._append(phase, steps, epochs, np.full(k, 16.0), totals,
              np.asarray(cols, dtype=np.intp), values)


def add_terms(h, n):
    return [h._add_term(Term(f"add_loss:m/l{i}", "add_loss", layer=f"m/l{i}"))
            for i in range(n)]


def two_terms():
    """compiled + add_loss:m/kl: 4 train records, the kl absent from one."""
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    a = h._add_term(Term("add_loss:m/kl", "add_loss", layer="m/kl"))
    append(h, TRAIN, [c, a], [[1.0, 2.0], [2.0, 3.0], [3.0, 4.0]], steps=[1, 2, 3])
    append(h, TRAIN, [c], [[5.0]], steps=[4])
    append(h, EVAL, [c, a], [[10.0, 20.0], [30.0, 40.0]], steps=[4, 4])
    return h


def many_terms(n_terms=30, n_records=50, seed=0):
    h = LossHistory()
    cols = add_terms(h, n_terms)
    rng = np.random.default_rng(seed)
    scale = np.arange(n_terms) + 1.0  # term i is about i + 1: a clear ranking
    append(h, TRAIN, cols, scale * (1.0 + 0.1 * rng.random((n_records, n_terms))))
    return h


def legend_labels(fig):
    legend = fig.axes[0].get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


# ---------------------------------------------------------------- data per view


def test_stack_draws_term_values_absent_as_zero_and_the_total():
    h = two_terms()
    fig = plot_history(h, view="stack")
    s = plotted_series(fig)
    assert list(s) == ["compiled", "add_loss:m/kl", "total"]
    for label in s:
        np.testing.assert_array_equal(s[label][0], [1, 2, 3, 4])  # train only
    np.testing.assert_array_equal(s["compiled"][1], [1, 2, 3, 5])
    np.testing.assert_array_equal(s["add_loss:m/kl"][1], [2, 3, 4, 0])
    np.testing.assert_array_equal(s["total"][1], [3, 5, 7, 5])
    assert len(fig.axes[0].collections) == 2  # one stacked band per term


def test_lines_draw_absent_values_as_gaps():
    s = plotted_series(plot_history(two_terms(), view="lines"))
    np.testing.assert_array_equal(s["add_loss:m/kl"][1], [2, 3, 4, np.nan])
    np.testing.assert_array_equal(s["compiled"][1], [1, 2, 3, 5])
    np.testing.assert_array_equal(s["total"][1], [3, 5, 7, 5])


def test_share_is_percent_of_total_and_total_zero_is_a_gap():
    h = LossHistory()
    a, b = add_terms(h, 2)
    append(h, TRAIN, [a, b], [[1.0, 3.0], [2.0, 2.0], [0.0, 0.0], [1.0, -1.0]])
    fig = plot_history(h, view="share")
    s = plotted_series(fig)
    np.testing.assert_allclose(s["add_loss:m/l0"][1], [25, 50, np.nan, np.nan])
    np.testing.assert_allclose(s["add_loss:m/l1"][1], [75, 50, np.nan, np.nan])
    assert "total" not in s
    ax = fig.axes[0]
    assert ax.get_ylim() == (0, 100)
    assert ax.get_ylabel() == "share of total (%)"


def test_share_is_relative_to_the_recorded_total_not_the_shown_terms():
    h = LossHistory()
    a, b = add_terms(h, 2)
    append(h, TRAIN, [a, b], [[1.0, 3.0]])
    s = plotted_series(plot_history(h, view="share", hidden=["add_loss:m/l1"]))
    np.testing.assert_allclose(s["add_loss:m/l0"][1], [25])


def test_smoothing_is_a_trailing_moving_average_of_the_same_length():
    h = LossHistory()
    (a,) = add_terms(h, 1)
    raw = np.array([1.0, 3.0, 2.0, 6.0, 4.0, 8.0])
    append(h, TRAIN, [a], raw[:, None])
    k = 3
    expected = [raw[max(0, i - k + 1): i + 1].mean() for i in range(len(raw))]
    for view in ("stack", "lines"):
        s = plotted_series(plot_history(h, view=view, smoothing=k))
        np.testing.assert_allclose(s["add_loss:m/l0"][1], expected)
        np.testing.assert_allclose(s["total"][1], expected)


@pytest.mark.parametrize("smoothing", [0, 1])
def test_smoothing_zero_or_one_draws_raw_values(smoothing):
    h = many_terms(3, 10)
    s = plotted_series(plot_history(h, smoothing=smoothing))
    np.testing.assert_array_equal(s["total"][1], h["total"])


def test_share_with_smoothing_is_share_of_the_smoothed_values():
    h = LossHistory()
    a, b = add_terms(h, 2)
    append(h, TRAIN, [a, b], [[1.0, 1.0], [3.0, 1.0]])
    s = plotted_series(plot_history(h, view="share", smoothing=2))
    np.testing.assert_allclose(s["add_loss:m/l0"][1], [50, 100 * 2 / 3])


# ---------------------------------------------------------------- terms shown


def test_thirty_terms_keep_the_largest_and_sum_the_rest_into_other():
    h = many_terms(30)
    fig = plot_history(h, view="stack")
    s = plotted_series(fig)
    kept = [f"add_loss:m/l{i}" for i in range(23, 30)]
    assert list(s) == kept + ["other (23 terms)", "total"]
    rest = sum(h[f"add_loss:m/l{i}"] for i in range(23))
    np.testing.assert_allclose(s["other (23 terms)"][1], rest)
    shown = sum(s[label][1] for label in kept + ["other (23 terms)"])
    np.testing.assert_allclose(shown, h["total"])
    assert "other (23 terms)" in legend_labels(fig)


def test_max_terms_is_the_number_of_series_including_other():
    h = many_terms(5)
    assert len(plotted_series(plot_history(h, max_terms=5))) == 5 + 1
    s = plotted_series(plot_history(h, max_terms=4, view="lines"))
    assert list(s)[-2:] == ["other (2 terms)", "total"]
    assert len(s) == 4 + 1


def test_hidden_terms_are_not_drawn():
    h = two_terms()
    for view in VIEWS:
        fig = plot_history(h, view=view, hidden=["add_loss:m/kl", "not-a-term"])
        assert "add_loss:m/kl" not in plotted_series(fig)
        assert "add_loss:m/kl" not in legend_labels(fig)
        assert "compiled" in plotted_series(fig)


def test_thirty_term_legend_sits_right_of_the_axes_inside_the_figure():
    for kwargs in ({}, {"view": "lines", "max_terms": 30}):
        fig = plot_history(many_terms(30), **kwargs)
        figure_to_png(fig)  # lays out and draws
        renderer = fig.canvas.get_renderer()
        ax_box = fig.axes[0].get_window_extent(renderer)
        legend_box = fig.axes[0].get_legend().get_window_extent(renderer)
        fig_box = fig.bbox
        assert legend_box.x0 >= ax_box.x1
        assert legend_box.x1 <= fig_box.x1 + 1 and legend_box.y0 >= fig_box.y0 - 1
        assert ax_box.width > 0.4 * fig_box.width  # the data keeps its room


# ---------------------------------------------------------------- markers


def test_epoch_lines_at_the_first_step_of_each_new_epoch():
    h = LossHistory()
    (a,) = add_terms(h, 1)
    append(h, TRAIN, [a], np.ones((7, 1)), steps=[1, 2, 3, 4, 5, 6, 7],
           epochs=[0, 0, 1, 1, 2, 2, -1])
    fig = plot_history(h)
    (epochs,) = [c for c in fig.axes[0].collections if c.get_label() == "_epochs"]
    xs = sorted({float(seg[0][0]) for seg in epochs.get_segments()})
    assert xs == [3.0, 5.0]  # no line where records leave fit (epoch -1)
    assert all(not label.startswith("_") for label in legend_labels(fig))


def test_one_epoch_draws_no_epoch_line():
    fig = plot_history(many_terms(2, 5))
    assert not [c for c in fig.axes[0].collections if c.get_label() == "_epochs"]


def test_non_finite_values_are_masked_and_the_first_one_marked():
    h = LossHistory()
    a, b = add_terms(h, 2)
    values = np.ones((6, 2))
    values[2, 1] = np.nan
    values[4, 0] = np.inf
    append(h, TRAIN, [a, b], values, steps=[10, 20, 30, 40, 50, 60])
    for view in VIEWS:
        fig = plot_history(h, view=view, logy=True, smoothing=2)
        marks = [ln for ln in fig.axes[0].lines if ln.get_label() == "non-finite"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [30, 30]
        assert marks[0].get_color() == "red"
        s = plotted_series(fig)
        assert np.isnan(s["add_loss:m/l1"][1][2]) and np.isnan(s["add_loss:m/l0"][1][4])
        # A share needs the total, which a non-finite term makes non-finite.
        clean = [0, 1, 3, 5] if view == "share" else [0, 1, 2, 3, 5]
        assert np.isfinite(s["add_loss:m/l0"][1][clean]).all()
        assert figure_to_png(fig).startswith(b"\x89PNG")


def test_finite_history_has_no_non_finite_marker():
    fig = plot_history(two_terms(), phase="all")
    assert "non-finite" not in legend_labels(fig)


def test_logy_sets_a_log_scale_and_masks_non_positive_values():
    h = LossHistory()
    a, b = add_terms(h, 2)
    append(h, TRAIN, [a, b], [[1.0, 0.0], [2.0, -1.0], [3.0, 2.0]])
    fig = plot_history(h, view="lines", logy=True)
    assert fig.axes[0].get_yscale() == "log"
    np.testing.assert_array_equal(plotted_series(fig)["add_loss:m/l1"][1], [np.nan, np.nan, 2])
    assert plot_history(h, view="stack", logy=True).axes[0].get_yscale() == "log"
    assert plot_history(h, view="lines").axes[0].get_yscale() == "linear"


def test_logy_is_ignored_for_share():
    fig = plot_history(two_terms(), view="share", logy=True)
    assert fig.axes[0].get_yscale() == "linear"


# ---------------------------------------------------------------- phases


def test_phase_all_draws_train_records_and_eval_totals_as_markers():
    fig = plot_history(two_terms(), phase="all")
    s = plotted_series(fig)
    np.testing.assert_array_equal(s["total"][0], [1, 2, 3, 4])
    np.testing.assert_array_equal(s["eval total"][0], [4, 4])
    np.testing.assert_array_equal(s["eval total"][1], [30, 70])
    (marker,) = [ln for ln in fig.axes[0].lines if ln.get_label() == "eval total"]
    assert marker.get_linestyle() == "None" and marker.get_marker() == "o"
    assert fig.axes[0].get_title() == "Loss breakdown (all)"


def test_phase_none_means_all():
    s = plotted_series(plot_history(two_terms(), phase=None))
    assert "eval total" in s


def test_phase_eval_draws_eval_records_only():
    s = plotted_series(plot_history(two_terms(), phase="eval", view="lines"))
    np.testing.assert_array_equal(s["total"][1], [30, 70])
    assert "eval total" not in s


def test_phase_all_without_train_records_draws_call_records():
    h = LossHistory()
    (a,) = add_terms(h, 1)
    append(h, CALL, [a], [[2.0], [3.0]], steps=[0, 0])
    s = plotted_series(plot_history(h, phase="all"))
    np.testing.assert_array_equal(s["total"][1], [2, 3])


def test_title_and_axis_labels():
    fig = plot_history(two_terms(), phase="eval")
    ax = fig.axes[0]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == (
        "Loss breakdown (eval)", "step", "loss")
    assert plot_history(two_terms(), title="KL").axes[0].get_title() == "KL"


# ---------------------------------------------------------------- figures


def test_a_given_figure_is_cleared_and_reused():
    fig = plot_history(many_terms(30))
    old_axes = fig.axes[0]
    again = plot_history(two_terms(), figure=fig, view="lines")
    assert again is fig
    assert fig.axes == [again.axes[0]] and fig.axes[0] is not old_axes
    assert set(plotted_series(fig)) == {"compiled", "add_loss:m/kl", "total"}
    assert set(legend_labels(fig)) == {"compiled", "add_loss:m/kl", "total"}


def test_a_user_figure_can_be_drawn_into():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    assert plot_history(two_terms(), figure=fig) is fig
    assert "total" in plotted_series(fig)
    assert figure_to_png(fig).startswith(b"\x89PNG")


def test_no_pyplot_figure_is_left_open_after_200_plots():
    plt = pytest.importorskip("matplotlib.pyplot")
    plt.close("all")
    h = two_terms()
    reused = plot_history(h)
    for i in range(200):
        fig = plot_history(h, view=VIEWS[i % 3], phase="all")
        plot_history(h, figure=reused)
        if i % 20 == 0:
            figure_to_png(fig)
    assert plt.get_fignums() == []


def test_importing_and_plotting_does_not_import_pyplot_or_keras():
    code = (
        "import sys\n"
        "from loss_inspect.history import LossHistory\n"
        "from loss_inspect.plotting import plot_history, figure_to_png\n"
        "figure_to_png(plot_history(LossHistory()))\n"
        "print([m for m in ('matplotlib.pyplot', 'keras', 'IPython') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("dpi", [100, 50])
def test_png_is_valid_and_sized_figsize_times_dpi(dpi):
    fig = plot_history(two_terms())
    png = figure_to_png(fig, dpi=dpi)
    assert png.startswith(b"\x89PNG")
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    width, height = fig.get_size_inches() * dpi
    assert image.shape[:2] == (round(height), round(width))
    assert 7 <= fig.get_size_inches()[0] <= 8 and 3.5 <= fig.get_size_inches()[1] <= 4


def test_png_size_ignores_a_tight_savefig_bbox_rcparam():
    fig = plot_history(two_terms())
    with matplotlib.rc_context({"savefig.bbox": "tight"}):
        png = figure_to_png(fig, dpi=100)
        assert matplotlib.rcParams["savefig.bbox"] == "tight"
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert image.shape[:2] == (380, 750)


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("history", [LossHistory(), LossHistory([Term("compiled", "compiled")])])
def test_empty_history_draws_an_empty_axes_with_a_note(view, history):
    fig = plot_history(history, view=view, phase="all", logy=True)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["no records yet"]
    assert plotted_series(fig) == {} and not ax.lines and not ax.collections
    assert figure_to_png(fig).startswith(b"\x89PNG")


def test_phase_without_records_draws_the_empty_note():
    fig = plot_history(two_terms(), phase="call")
    assert [t.get_text() for t in fig.axes[0].texts] == ["no records yet"]


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        ({"view": "area"}, "'area'"),
        ({"view": "Stack"}, "'Stack'"),
        ({"phase": "training"}, "'training'"),
        ({"phase": "val"}, "'val'"),
        ({"smoothing": -1}, "-1"),
        ({"smoothing": 2.5}, "2.5"),
        ({"max_terms": 0}, "0"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(kwargs, bad):
    with pytest.raises(ValueError) as info:
        plot_history(two_terms(), **kwargs)
    message = str(info.value)
    name = next(iter(kwargs))
    assert f"{name}={bad}" in message
    if name in ("view", "phase"):
        assert "'stack'" in message or "'train'" in message  # the allowed values


# ---------------------------------------------------------------- large histories


def large_history(n_records=100_000, n_terms=16, spike_at=None, full_resolution=None):
    h = LossHistory(full_resolution=full_resolution)
    cols = add_terms(h, n_terms)
    rng = np.random.default_rng(1)
    values = rng.random((n_records, n_terms)) + 1.0
    if spike_at is not None:
        values[spike_at, 3] = 1000.0
    append(h, TRAIN, cols, values, epochs=np.arange(n_records) // 10_000)
    return h


def test_render_time_of_a_100k_record_16_term_history(capsys):
    h = large_history()
    times = {}
    for view in VIEWS:
        start = time.perf_counter()
        png = figure_to_png(plot_history(h, view=view, max_terms=16))
        times[view] = time.perf_counter() - start
        assert png.startswith(b"\x89PNG")
    with capsys.disabled():
        print("\nplot_history + figure_to_png, 100,000 records x 16 terms: "
              + ", ".join(f"{v} {t:.2f} s" for v, t in times.items()))


@pytest.mark.parametrize("view", ["stack", "lines"])
def test_a_one_record_spike_survives_decimation(view):
    h = large_history(spike_at=54_321, full_resolution=200_000)
    assert not h.compacted
    s = plotted_series(plot_history(h, view=view, max_terms=16))
    x, y = s["add_loss:m/l3"]
    assert len(x) <= 2_100  # decimated for drawing
    assert y.max() == 1000.0 and x[np.argmax(y)] == h.steps[54_321]
    assert s["total"][1].max() == h["total"].max()
    assert s["total"][0][0] == 1 and s["total"][0][-1] == 100_000  # full range


@pytest.mark.parametrize("view", ["stack", "lines"])
def test_a_spike_in_compacted_records_survives_as_the_total_range(view):
    h = large_history(spike_at=1_234)
    assert h.compacted and h.counts[0] > 1
    s = plotted_series(plot_history(h, view=view, max_terms=16))
    assert s["total max"][1].max() == h.max("total").max() > 1000.0
    assert s["total min"][1].min() == h.min("total").min()
    assert s["total"][1].max() < 1000.0  # the bucket's mean, drawn as the line


def with_evals(h, n=40):
    """``h`` plus ``n`` eval records spread over its steps (phase "all" draws them)."""
    cols = [h._add_term(Term("compiled", "compiled"))]
    steps = np.linspace(1, h.records, n).astype(np.int64)
    append(h, EVAL, cols, np.linspace(1.0, 3.0, n), steps=steps)
    return h


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("logy", [False, True])
@pytest.mark.parametrize("history", ["full", "compacted", "short"])
def test_a_reduced_frame_draws_exactly_what_the_whole_frame_draws(view, logy, history):
    """A live view sends ``prepare_frame(...).reduced()`` to its render
    process: it must draw the same series, point for point, as the history."""
    if history == "short":
        h = with_evals(large_history(n_records=900, n_terms=4), n=5)
    else:
        h = with_evals(large_history(n_records=60_000, n_terms=4, spike_at=4_321,
                                     full_resolution=None if history == "compacted"
                                     else 100_000))
        assert h.compacted == (history == "compacted")
    frame = prepare_frame(h, view=view, phase="all", logy=logy)
    small = frame.reduced()
    whole = plotted_series(plot_history(h, view=view, phase="all", logy=logy))
    reduced = plotted_series(draw_frame(small))
    assert reduced.keys() == whole.keys()
    assert ("eval total" in whole) == (view != "share")  # shares have no eval totals
    for label, (x, y) in whole.items():
        np.testing.assert_array_equal(reduced[label][0], x, err_msg=label)
        np.testing.assert_array_equal(reduced[label][1], y, err_msg=label)
    if history != "short":  # the point of reducing: a few thousand records, not 60,000
        assert len(small.x) < 12_000 < len(frame.x)
        assert all(len(x) < 2_000 for x, _ in whole.values())  # drawn decimated


def test_a_reduced_frame_pickles_small_whatever_the_history_length():
    import pickle

    h = large_history(n_records=1_000_000, n_terms=16)
    small = prepare_frame(h, view="stack", max_terms=16).reduced()
    assert len(pickle.dumps(small)) < 1_000_000


def test_a_reused_figure_is_updated_in_place_with_the_new_data():
    h = large_history(n_records=1_000, n_terms=3)
    fig = plot_history(h, view="stack")
    ax, legend = fig.axes[0], fig.axes[0].get_legend()
    append(h, TRAIN, [0, 1, 2], np.full((500, 3), 5.0), steps=np.arange(1001, 1501),
           epochs=np.full(500, 1))
    assert plot_history(h, view="stack", figure=fig) is fig
    assert fig.axes == [ax] and ax.get_legend() is legend  # kept, not rebuilt
    s = plotted_series(fig)
    assert s["total"][0][-1] == 1500 and s["total"][1][-1] == 15.0
    assert ax.get_xlim()[1] >= 1500 and ax.get_ylim()[1] >= 15.0  # rescaled
    assert len(ax.collections) == 3 + 1  # three bands and the epoch lines, once
    fresh = plot_history(h, view="stack")
    for label, (x, y) in plotted_series(fresh).items():
        np.testing.assert_array_equal(s[label][1], y)
    plot_history(h, view="lines", figure=fig)  # other options: a new axes
    assert fig.axes[0] is not ax


def test_call_records_at_one_step_are_plotted_by_record_order():
    """A custom loop's eager calls never advance the optimizer step."""
    h = LossHistory()
    col = h._add_term(Term("add_loss:m/x", "add_loss", layer="m/x"))
    n = 5
    values = np.arange(1.0, n + 1)
    h._append(PHASES.index("call"), np.zeros(n, np.int64), np.full(n, -1), np.full(n, np.nan),
              values, np.array([col]), values[:, None])
    fig = plot_history(h, phase="call", view="lines")
    x, y = plotted_series(fig)["total"]
    np.testing.assert_array_equal(x, np.arange(1, n + 1))
    np.testing.assert_array_equal(y, values)
    assert fig.axes[0].get_xlabel() == "record (forward pass)"


def decode(png):
    return matplotlib.image.imread(io.BytesIO(png), format="png")


def test_live_frames_freeze_the_layout_and_paste_the_legend_pixel_exact():
    h = large_history(n_records=2_000, n_terms=5)
    fig = plot_history(h)
    figure_to_png(fig, dpi=80, fast=True)
    append(h, TRAIN, list(range(5)), np.full((10, 5), 1.2), steps=np.arange(2001, 2011))
    plot_history(h, figure=fig)
    assert fig._loss_inspect_frozen  # same tick widths: no new layout
    figure_to_png(fig, dpi=80, fast=True)  # draws the legend, keeps its pixels
    pasted = figure_to_png(fig, dpi=80, fast=True)
    fig._loss_inspect_legend_pixels = None
    drawn = figure_to_png(fig, dpi=80, fast=True)
    np.testing.assert_array_equal(decode(pasted), decode(drawn))
    assert decode(drawn).shape[:2] == (round(3.8 * 80), round(7.5 * 80))
    append(h, TRAIN, list(range(5)), np.full((10, 5), 1e4), steps=np.arange(2011, 2021))
    plot_history(h, figure=fig)
    assert not fig._loss_inspect_frozen  # wider y labels ("50000"): laid out again
    plot_history(h, figure=fig, view="lines")
    assert fig.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"


def test_a_redraw_of_a_million_records_stays_readable():
    h = LossHistory()
    cols = add_terms(h, 16)
    values = np.random.default_rng(0).random((10_000, 16))
    for block in range(100):
        append(h, TRAIN, cols, values, steps=np.arange(block * 10_000 + 1, block * 10_000 + 10_001),
               epochs=np.full(10_000, block // 10))
    fig = plot_history(h, max_terms=16)
    png = figure_to_png(plot_history(h, max_terms=16, figure=fig), dpi=80, fast=True)
    assert png.startswith(b"\x89PNG")
    s = plotted_series(fig)
    assert s["total"][0][-1] == 1_000_000 and len(s["total"][0]) <= 2_100
