"""`loss_inspect._render_process`: live frames drawn in a real helper process.

Everything here starts real helper processes (``python -m
loss_inspect._render_process``) and real Keras fits; nothing is faked. What
must hold: a helper's frame is the frame this process would have drawn, byte
for byte; a view that uses one shows its frames, never shows a frame older
than one it drew itself, and falls back to drawing in-process (with one
warning, nothing lost) when the helper cannot start, dies or fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import loss_inspect as li
import models
from loss_inspect import _render_process, plotting
from loss_inspect.history import PHASES, LossHistory, Term
from loss_inspect.widgets import LiveView


def _history(n_records=3_000, n_terms=3):
    h = LossHistory()
    cols = [h._add_term(Term(f"add_loss:m/l{i}", "add_loss", layer=f"m/l{i}"))
            for i in range(n_terms)]
    values = np.random.default_rng(0).random((n_records, n_terms)) + 1.0
    h._append(PHASES.index("train"), np.arange(1, n_records + 1),
              np.arange(n_records) // 500, np.full(n_records, 16.0), values.sum(axis=1),
              np.asarray(cols, dtype=np.intp), values)
    return h


def _wait_for_reply(helper, view, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = helper.take(view)
        if reply is not None:
            return reply
        time.sleep(0.01)
    raise AssertionError(f"no reply in {timeout} s (helper failure: {helper.failure})")


def _wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def _first_frame_estimate_per_test(monkeypatch):
    """A view here learns the helper's first-frame time into the class-wide
    `LiveView.first_frame_seconds`; later tests' views must not be paced by it."""
    monkeypatch.setattr(LiveView, "first_frame_seconds", LiveView.first_frame_seconds)


@pytest.fixture
def helper():
    process = _render_process.RenderProcess()
    yield process
    process.close()


# ------------------------------------------------------------------ the helper
def test_a_helper_frame_is_the_frame_this_process_draws_byte_for_byte(helper):
    h = _history()
    frames = [plotting.prepare_frame(h, view=view, title="m").reduced()
              for view in plotting.VIEWS]
    for number, frame in enumerate(frames, start=1):
        assert helper.submit(7, number, frame, dpi=80)
        reply = _wait_for_reply(helper, 7)
        assert (reply.view, reply.sequence, reply.error) == (7, number, None)
        here = plotting.figure_to_png(plotting.draw_frame(frame), dpi=80, fast=True)
        assert reply.png == here
        assert reply.seconds > 0


def test_the_helper_updates_a_views_figure_in_place_and_keeps_views_apart(helper):
    """Second frames of a view reuse its figure (as in-process live frames
    do); another view's frames do not disturb it."""
    h = _history()
    first = plotting.prepare_frame(h, title="a")
    for view in (1, 2):
        helper.submit(view, 1, first, dpi=80)
        _wait_for_reply(helper, view)
    h2 = _history(n_records=4_000)
    second = plotting.prepare_frame(h2, title="a")
    helper.submit(1, 2, second, dpi=80)
    updated = _wait_for_reply(helper, 1).png
    figure = plotting.draw_frame(first)
    plotting.figure_to_png(figure, dpi=80, fast=True)
    here = plotting.figure_to_png(plotting.draw_frame(second, figure=figure), dpi=80, fast=True)
    assert updated == here


def test_the_helper_draws_with_the_style_it_was_sent(helper):
    import matplotlib

    frame = plotting.prepare_frame(_history(), title="m")
    rc = dict(matplotlib.rcParams, **{"axes.facecolor": "#202020"})
    rc.pop("backend")
    helper.submit(3, 1, frame, dpi=80, rc=rc)
    styled = _wait_for_reply(helper, 3).png
    with matplotlib.rc_context({"axes.facecolor": "#202020"}):
        here = plotting.figure_to_png(plotting.draw_frame(frame), dpi=80, fast=True)
    assert styled == here
    helper.submit(3, 2, frame, dpi=80)  # the style holds for the view's later frames
    assert _wait_for_reply(helper, 3).png == here


def test_a_frame_the_helper_cannot_draw_comes_back_as_an_error(helper):
    helper.submit(4, 1, "not a frame", dpi=80)
    reply = _wait_for_reply(helper, 4)
    assert reply.png is None and "AttributeError" in reply.error
    helper.submit(4, 2, plotting.prepare_frame(_history(), title="m"), dpi=80)
    assert _wait_for_reply(helper, 4).png.startswith(b"\x89PNG")  # still serving


def test_sending_never_blocks_on_a_stuck_helper_and_the_latest_frame_wins(helper):
    """The training thread asks for frames: it must not wait on a pipe that a
    busy or stuck helper does not read (a frame is larger than the pipe)."""
    import pickle
    import signal

    frame = plotting.prepare_frame(_history(n_records=20_000, n_terms=8), view="lines",
                                   title="m").reduced()
    assert len(pickle.dumps(frame)) > 256 * 1024  # several pipe buffers
    helper.process.send_signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        for sequence in range(1, 6):  # two views, the second one's frames replacing each other
            assert helper.submit(1, sequence, frame, dpi=80)
            assert helper.submit(2, sequence, frame, dpi=80)
        assert time.monotonic() - start < 1.0
    finally:
        helper.process.send_signal(signal.SIGCONT)
    latest = {1: 0, 2: 0}

    def both_drew_their_last():
        for view in latest:
            reply = helper.take(view)
            if reply is not None:
                assert reply.error is None
                latest[view] = max(latest[view], reply.sequence)
        return latest == {1: 5, 2: 5}

    _wait_until(both_drew_their_last)
    # The writer was stuck in a first frame while the rest came; of those,
    # only each view's latest was still waiting: 2 or 3 frames drawn, not 10.
    assert helper.replies <= 3


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no niceness on this OS")
def test_the_helper_draws_at_the_lowest_priority_and_the_parent_keeps_its_own(helper):
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert helper.submit(3, 1, plotting.prepare_frame(_history(), title="m"), dpi=80)
    _wait_for_reply(helper, 3)  # drawn: the helper lowered its priority at its start
    assert os.getpriority(os.PRIO_PROCESS, helper.process.pid) == min(
        19, ours + _render_process.NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, 0) == ours


def test_a_dead_helper_is_noticed_and_refuses_frames(helper):
    helper.process.kill()
    _wait_until(lambda: not helper.alive)
    assert "exited" in helper.failure
    assert not helper.submit(1, 1, plotting.prepare_frame(_history(), title="m"), dpi=80)
    assert helper.last_error == helper.failure


def test_the_helper_exits_when_its_parent_dies():
    code = ("from loss_inspect import _render_process as r; import os; "
            "p = r.shared(); print(p.process.pid, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    pid = int(out.stdout.split()[0])

    def gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting for init counts
            return stat.read().split()[2] == "Z"

    _wait_until(gone, timeout=30)


def test_a_helper_that_cannot_start_is_not_retried(monkeypatch):
    monkeypatch.setattr(_render_process, "_shared", None)
    monkeypatch.setattr(_render_process, "_start_failure", None)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    assert _render_process.shared() is None
    assert "FileNotFoundError" in _render_process._start_failure
    monkeypatch.undo()


# ------------------------------------------------------------- a view using it
def _settle(view):
    """Wait until the view's frame in the helper (if any) came back and is shown."""
    def settled():
        view._show_rendered(time.monotonic())
        return view._in_flight is None
    _wait_until(settled)


class ManualClock:
    """Time stands still unless a test moves it: whether a frame is due never
    depends on how fast this host draws."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _fit_watched(view_kwargs, epochs=3, steps=64):
    x, y = models.data(16 * steps)
    model = models.mlp()
    rec = li.attach(model)
    view = LiveView(rec, min_interval=0.0, max_overhead=0.5, max_first_wait=0.0,
                    final_in_fit=False, clock=ManualClock(), **view_kwargs)
    rec.add_listener(view)
    return rec, model, view, x, y


def _later(*views):
    for view in views:
        view._clock.now += 100.0  # every frame is due again


def test_a_view_shows_the_helpers_frames_while_training_and_draws_the_last_itself():
    rec, model, view, x, y = _fit_watched({"render_process": True})
    try:
        assert view._renderer is not None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback warning
            model.fit(x, y, batch_size=16, epochs=3, verbose=0)
            _settle(view)  # a reply that came after the last step
        assert view.renders >= 1 and view.render_failure is None
        assert bytes(view.image.value).startswith(b"\x89PNG")
        assert view.finish()  # the final frame: this process, every record
        assert view.current and view._drawn_records == rec.history.records == 3 * 64
    finally:
        view.close()
        rec.detach()


def test_a_frame_older_than_one_drawn_here_is_never_shown():
    rec, model, view, x, y = _fit_watched({"render_process": True})
    try:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        _settle(view)
        _later(view)
        assert view.update()  # asks the helper for a frame...
        asked = view._in_flight[0]
        _wait_until(lambda: not view._renderer._outbox)  # sent: the helper will draw it
        assert view.finish()  # ...and draws the final one here before it comes
        final = bytes(view.image.value)
        _wait_until(lambda: view._render_key in view._renderer._replies)
        view.update()  # the helper's reply arrives: older, dropped
        assert bytes(view.image.value) == final and view._sequence > asked
        assert view.state == "done"
    finally:
        view.close()
        rec.detach()


def test_a_finished_view_leaves_no_figure_in_the_helper():
    """``%%losses`` never closes its view: the final frame must free the
    helper's figure, or a notebook of many cells would pile them up there."""
    rec, model, view, x, y = _fit_watched({"render_process": True})
    other = LiveView(rec, min_interval=0.0, max_overhead=0.5, max_first_wait=0.0,
                     render_process=True, clock=ManualClock())
    try:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        _settle(view)
        _later(view)
        assert view.update() and view._renderer is other._renderer
        _settle(view)  # the helper now holds this view's figure, and it is up to date
        assert not view.finish() and view.current  # no redraw needed...
        _later(other)
        assert other.update()  # another view's frame: the helper says what it holds
        reply = _wait_for_reply(other._renderer, other._render_key)
        other._renderer._replies[other._render_key] = reply  # leave it for the view
        assert reply.figures == 1  # ...but its figure is gone from the helper
    finally:
        view.close()
        other.close()
        rec.detach()


def test_a_view_whose_helper_dies_warns_once_and_draws_in_process():
    rec, model, view, x, y = _fit_watched({"render_process": True})
    try:
        view._renderer.process.kill()
        with pytest.warns(RuntimeWarning, match="render process failed") as caught:
            model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        assert len([w for w in caught if "render process" in str(w.message)]) == 1
        assert view._renderer is None
        # Seen by the reply reader (end of file) or by the next write (broken pipe).
        assert view.render_failure.startswith(("the render process exited",
                                               "the render process stopped"))
        assert view.renders >= 1  # drawn here after the fallback
        view.finish()
        assert view.current and view._drawn_records == rec.history.records == 2 * 64
    finally:
        view.close()
        rec.detach()
        _render_process.shared()  # the next view gets a new helper
        assert _render_process._shared.alive


def test_auto_draws_in_process_outside_a_kernel_and_bad_values_are_refused():
    rec = li.attach(models.mlp())
    try:
        assert LiveView(rec)._renderer is None  # pytest is no kernel
        with pytest.raises(ValueError, match="render_process must be True, False or 'auto'"
                                             ".*got render_process='yes'"):
            LiveView(rec, render_process="yes")
    finally:
        rec.detach()


@pytest.mark.parametrize("max_overhead, share", [(0.01, 0.04), (0.1, 0.1)])
def test_helper_frames_are_paced_by_the_helpers_budget_not_the_kernels(max_overhead, share):
    """The helper draws at the lowest priority: its frames are spaced so that
    it draws `widgets.HELPER_SHARE` (4 %) of the time, or the view's own
    budget where that is larger; the kernel's part stays within the view's."""
    from loss_inspect import widgets

    assert widgets.HELPER_SHARE == 0.04
    x, y = models.data(16 * 64)
    model = models.mlp()
    rec = li.attach(model)
    view = LiveView(rec, min_interval=0.0, max_overhead=max_overhead, max_first_wait=0.0,
                    final_in_fit=False, clock=ManualClock(), render_process=True)
    rec.add_listener(view)
    try:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        _settle(view)
        _later(view)
        before = view._helper_seconds  # the fit's frame(s): the first lays out the figure
        assert view.update()  # sent to the helper; the manual clock stood still
        _settle(view)
        assert before > 0 and view._helper_seconds > 0
        dearer = max(before, view._helper_seconds)
        assert np.isclose(view._interval, dearer * (1 - share) / share)
    finally:
        view.close()
        rec.detach()
