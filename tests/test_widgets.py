"""LiveView and Dashboard without a frontend: throttling, final frame, controls."""

from __future__ import annotations

import numpy as np
import pytest

import loss_inspect as li
import models
from loss_inspect.widgets import Dashboard, LiveView


@pytest.fixture(autouse=True)
def _first_frame_estimate_per_test(monkeypatch):
    """Views on a fake clock draw "free" first frames; what one test's view
    learns from that must not pace the next test's."""
    monkeypatch.setattr(LiveView, "first_frame_seconds", LiveView.first_frame_seconds)


class FakeClock:
    """A clock the test moves by hand (`_make_frames_take` moves it per frame)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _make_frames_take(view, clock, seconds):
    """Each frame of ``view`` moves the fake clock by ``seconds`` (when its
    PNG is set), as a real frame of that cost would."""
    image = view.image

    class SlowImage:
        def __setattr__(self, name, value):
            clock.now += seconds
            setattr(image, name, value)

    view.image = SlowImage()


def _recorder_with_steps(n_steps):
    x, y = models.data(16 * n_steps)
    model = models.mlp()
    rec = li.attach(model)
    return rec, model, x, y


def test_throttle_caps_redraws_and_always_draws_the_final_state():
    rec, model, x, y = _recorder_with_steps(4)
    try:
        clock = FakeClock()
        view = LiveView(rec, clock=clock, min_interval=0.25, first_frame_cost=0.0025)
        rec.add_listener(view)
        for _ in range(10):  # 10 x 4 steps, 0.01 s of "training" per step
            for _ in range(4):
                model.train_on_batch(x[:16], y[:16])
                clock.now += 0.01
        assert view.renders == 1  # 0.4 s of training: one redraw past the first 0.25 s
        frames = view.image.value
        assert view.update(final=True) and view.renders == 2
        status = view.status.value
        assert "step 40" in status and "40 records" in status and "done" in status
        assert "add_loss:mlp/extra <b>" in status and "total <b>" in status
        assert view.image.value != frames and view.image.value[:4] == b"\x89PNG"
        assert not view.update(final=True)  # nothing new: no second final frame
    finally:
        rec.detach()


def test_redraw_interval_grows_with_render_cost_to_bound_overhead():
    rec, model, x, y = _recorder_with_steps(2)
    try:
        clock = FakeClock()
        view = LiveView(rec, clock=clock, min_interval=0.25, max_overhead=0.05,
                        first_frame_cost=0.1)
        assert np.isclose(view._interval, 0.1 * 0.95 / 0.05)  # before any frame: assumed cost
        _make_frames_take(view, clock, 0.5)
        model.train_on_batch(x[:16], y[:16])
        clock.now += 1.0
        assert not view.update()  # 1 s < 1.9 s: the first frame waits too
        clock.now += 1.0
        assert view.update()  # the first frame, 5x the assumed cost...
        assert np.isclose(view._interval, 0.5 * 0.95 / 0.05)  # ...is paid for: 9.5 s
        clock.now += 5.0
        assert not view.update()
        clock.now += 5.0
        assert view.update()
        assert np.isclose(view._interval, 0.5 * 0.95 / 0.05)
        assert LiveView.first_frame_seconds != 0.5  # an explicit estimate teaches nothing
    finally:
        rec.detach()


def test_the_next_view_paces_its_first_frame_by_the_last_first_frame(monkeypatch):
    """A first frame costs 2-4 in-place frames; a %%losses cell's view is new
    each time: its first frame waits for what the last first frame cost."""
    monkeypatch.setattr(LiveView, "first_frame_seconds", 0.005)
    rec, model, x, y = _recorder_with_steps(2)
    try:
        clock = FakeClock()
        first = LiveView(rec, clock=clock, min_interval=0.25)
        assert np.isclose(first._interval, 0.005 * 0.99 / 0.01)  # 0.495 s: nothing measured yet
        _make_frames_take(first, clock, 0.015)
        model.train_on_batch(x[:16], y[:16])
        clock.now += 0.5
        assert first.update() and np.isclose(LiveView.first_frame_seconds, 0.015)
        assert np.isclose(first._interval, 0.015 * 0.99 / 0.01)  # the next frame pays for it
        second = LiveView(rec, clock=clock, min_interval=0.25)
        assert np.isclose(second._interval, 0.015 * 0.99 / 0.01)  # 1.485 s, not 0.495
        clock.now += 1.0
        assert not second.update()
        clock.now += 0.5
        assert second.update()
    finally:
        rec.detach()


def test_a_costly_first_frame_still_comes_within_max_first_wait(monkeypatch):
    """At a 1 % budget an 80 ms first frame would wait 7.9 s: a whole short
    fit without a picture. It comes at max_first_wait instead, and the next
    frame waits until the first is paid for."""
    monkeypatch.setattr(LiveView, "first_frame_seconds", 0.08)
    rec, model, x, y = _recorder_with_steps(2)
    try:
        clock = FakeClock()
        view = LiveView(rec, clock=clock, min_interval=0.25)
        assert view.max_overhead == 0.01 and view.max_first_wait == 2.0
        assert np.isclose(view._interval, 2.0)  # not 0.08 * 0.99 / 0.01 = 7.92 s
        _make_frames_take(view, clock, 0.08)
        model.train_on_batch(x[:16], y[:16])
        clock.now += 1.9
        assert not view.update()
        clock.now += 0.1
        assert view.update() and view.renders == 1  # at 2 s
        assert np.isclose(view._interval, 0.08 * 0.99 / 0.01)  # then 7.92 s until the next
        clock.now += 7.0
        assert not view.update()
        clock.now += 1.0
        assert view.update() and view.renders == 2
        slow = LiveView(rec, clock=clock, min_interval=0.25, max_first_wait=30.0)
        assert np.isclose(slow._interval, 0.08 * 0.99 / 0.01)  # a caller may wait longer
        quick = LiveView(rec, clock=clock, min_interval=0.25, max_first_wait=0.0)
        assert quick._interval == 0.25  # never below min_interval
    finally:
        rec.detach()


@pytest.mark.parametrize("kwargs, shown", [
    (dict(max_overhead=0), "max_overhead=0"),
    (dict(max_overhead=1.5), "max_overhead=1.5"),
    (dict(max_overhead="1%"), "max_overhead='1%'"),
    (dict(min_interval=-1), "min_interval=-1"),
    (dict(max_first_wait=float("nan")), "max_first_wait=nan"),
    (dict(max_first_wait=None), "max_first_wait=None"),
])
def test_bad_pacing_is_refused_with_the_value_and_the_expected_range(kwargs, shown):
    rec, model, x, y = _recorder_with_steps(1)
    try:
        with pytest.raises(ValueError) as caught:
            LiveView(rec, **kwargs)
        message = str(caught.value)
        assert shown in message
        assert ("between 0 and 1" if "max_overhead" in kwargs else ">= 0") in message
        model.train_on_batch(x[:16], y[:16])  # the recorder goes on recording
        assert rec.history.records == 1
    finally:
        rec.detach()


def test_text_repr_is_constant_for_nbval():
    rec, model, x, y = _recorder_with_steps(2)
    try:
        view = LiveView(rec)
        bundle = view._repr_mimebundle_()
        assert bundle["text/plain"] == "LiveView(model='mlp')" == repr(view)
        assert "application/vnd.jupyter.widget-view+json" in bundle
    finally:
        rec.detach()


def test_dashboard_follows_training_and_controls_apply():
    x, y = models.data()
    model = models.mlp()
    dash = Dashboard(model, min_interval=0.0)
    try:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        assert dash.live.renders >= 1
        assert list(dash.terms.options) == dash.recorder.history.keys()
        assert set(dash.terms.value) == set(dash.terms.options)
        before = dash.live.renders
        dash.view.value = "lines"
        dash.terms.value = ("compiled",)
        dash.smoothing.value = 3
        assert dash.live.renders == before + 3
        assert dash.live.options["view"] == "lines" and dash.live.options["smoothing"] == 3
        assert "add_loss:mlp/extra" in dash.live.options["hidden"]
        assert repr(dash) == "Dashboard(model='mlp')"
    finally:
        dash.close()
    assert li.recorders() == [] and not dash.recorder.attached


def test_dashboard_on_an_existing_recorder_does_not_detach_it():
    model = models.plain()
    with li.attach(model) as rec:
        dash = Dashboard(rec)
        dash.close()
        assert rec.attached and rec._listeners == []


def test_final_frame_can_be_left_to_the_owner_instead_of_fit():
    """%%losses draws the final frame when the cell ends, not inside fit()."""
    rec, model, x, y = _recorder_with_steps(4)
    try:
        inside, after = LiveView(rec, final_in_fit=False), LiveView(rec)
        rec.add_listener(inside)
        rec.add_listener(after)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # too short for a throttled frame
        assert inside.renders == 0 and after.renders == 1
        assert inside.update(final=True) and inside.renders == 1
    finally:
        rec.detach()


def test_final_call_says_done_when_the_last_throttled_frame_is_already_current():
    rec, model, x, y = _recorder_with_steps(1)
    try:
        clock = FakeClock()
        view = LiveView(rec, clock=clock, min_interval=0.25, first_frame_cost=0.01)
        rec.add_listener(view)
        clock.now += 1.0
        model.train_on_batch(x[:16], y[:16])  # a throttled frame: every record is on it
        assert view.renders == 1 and "training" in view.status.value
        frame = view.image.value
        view(rec, final=True)  # what fit() sends when it returns
        assert view.renders == 1 and view.image.value == frame  # no redraw needed...
        assert "done" in view.status.value and "training" not in view.status.value  # ...but done
        assert view.state == "done" and view.current
    finally:
        rec.detach()


def test_finish_with_an_error_draws_what_was_recorded_and_says_it_stopped():
    rec, model, x, y = _recorder_with_steps(4)
    try:
        view = LiveView(rec, final_in_fit=False)
        rec.add_listener(view)
        for start in range(0, 48, 16):
            model.train_on_batch(x[start:start + 16], y[start:start + 16])
        assert view.renders == 0  # the throttle held every frame back
        assert view.finish(ValueError("boom")) and view.renders == 1
        assert "stopped by ValueError at step 3 &middot; 3 records" in view.status.value
        assert view.image.value[:4] == b"\x89PNG" and view.current
        assert not view.finish(KeyboardInterrupt())  # no new record: only the status changes
        assert "stopped by KeyboardInterrupt at step 3" in view.status.value
    finally:
        rec.detach()


def test_many_rapid_updates_keep_the_throttle_and_leak_no_figure(capfd):
    import warnings

    import matplotlib.pyplot as plt

    rec, model, x, y = _recorder_with_steps(1)
    try:
        clock = FakeClock()
        view = LiveView(rec, clock=clock, min_interval=0.25, first_frame_cost=0.005)
        frames = []
        view.image.observe(lambda change: frames.append(clock.now), names="value")
        rec.add_listener(view)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(520):  # 520 steps, 520 notifications, 2.6 s of fake time
                model.train_on_batch(x[:16], y[:16])
                clock.now += 0.005
            view.update(final=True)
        gaps = np.diff(frames[:-1])  # the final frame is not throttled
        assert 8 <= len(frames) - 1 <= 2.6 / 0.25 + 1 and gaps.min() >= 0.25 - 1e-9
        assert view.renders == len(frames) and "done" in view.status.value
        assert "step 520" in view.status.value and view.current
        assert plt.get_fignums() == []
        assert not [w for w in caught if "figures" in str(w.message)], caught
        assert "More than 20 figures" not in capfd.readouterr().err
    finally:
        rec.detach()


def test_dashboard_log_scale_and_toggles_set_between_runs_apply_to_the_next_fit():
    x, y = models.data()
    model = models.mlp()
    dash = Dashboard(model, min_interval=0.0)
    try:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        assert dash.live._figure.axes[0].get_yscale() == "linear"
        dash.logy.value = True  # between runs: redraws at once
        assert dash.live._figure.axes[0].get_yscale() == "log"
        dash.view.value = "lines"
        dash.terms.value = ("compiled", "add_loss:mlp/extra")
        before = dash.live.renders
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        assert dash.live.renders > before and "step 8" in dash.live.status.value
        axes = dash.live._figure.axes[0]
        assert axes.get_yscale() == "log"
        series = dash.live._figure._loss_inspect_series
        assert set(series) == {"compiled", "add_loss:mlp/extra", "total"}, series.keys()
        assert dash.live.options["view"] == "lines" and dash.logy.value
    finally:
        dash.close()


def _shell():
    from IPython.testing.globalipapp import get_ipython

    return get_ipython()


def test_dashboard_shows_how_a_failing_cell_ended():
    """A fit() that raises sends no final notice: the end of the cell does."""
    ip = _shell()
    x, y = models.data()
    model = models.mlp()
    ip.user_ns.update(model=model, x=x, y=y)
    callbacks = list(ip.events.callbacks["post_run_cell"])
    dash = Dashboard(model)
    try:
        stop = ("import keras\nclass Stop(keras.callbacks.Callback):\n"
                "    def on_train_batch_end(self, batch, logs=None):\n"
                "        if batch == 2: raise ValueError('stopped in fit')\n")
        result = ip.run_cell(stop + "model.fit(x, y, batch_size=16, epochs=1, verbose=0, "
                             "callbacks=[Stop()])")
        assert isinstance(result.error_in_exec, ValueError)
        assert "stopped by ValueError at step 3, epoch 1 &middot; 3 records" in dash.live.status.value
        assert dash.live.current
        ip.run_cell("print('unrelated cell')")  # nothing new: no redraw
        renders = dash.live.renders
        assert "stopped by ValueError" in dash.live.status.value
        ip.run_cell("model.train_on_batch(x[:16], y[:16])")  # a custom loop: no fit() end
        assert dash.live.renders == renders + 1 and "done &middot; step 4" in dash.live.status.value
    finally:
        dash.close()
        ip.user_ns.pop("Stop", None)
    assert ip.events.callbacks["post_run_cell"] == callbacks


def test_dashboard_final_notice_after_a_current_throttled_frame_says_done():
    ip = _shell()
    x, y = models.data()
    model = models.mlp()
    ip.user_ns.update(model=model, x=x, y=y)
    clock = FakeClock()
    dash = Dashboard(model, clock=clock)
    try:
        clock.now += 10.0
        ip.run_cell("model.train_on_batch(x[:16], y[:16])")  # a throttled frame, then the cell ends
        assert dash.live.renders == 1 and "done &middot; step 1" in dash.live.status.value
        clock.now += 10.0
        model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0)  # one step: a frame, then final
        assert dash.live.renders == 2 and "done &middot; step 2" in dash.live.status.value
    finally:
        dash.close()
