"""LiveView and Dashboard without a frontend: throttling, final frame, controls."""

from __future__ import annotations

import numpy as np

import loss_inspect as li
import models
from loss_inspect.widgets import Dashboard, LiveView


class FakeClock:
    """A clock the test moves by hand; each render costs `render_cost` seconds."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _recorder_with_steps(n_steps):
    x, y = models.data(16 * n_steps)
    model = models.mlp()
    rec = li.attach(model)
    return rec, model, x, y


def test_throttle_caps_redraws_and_always_draws_the_final_state():
    rec, model, x, y = _recorder_with_steps(4)
    try:
        clock = FakeClock()
        view = LiveView(rec, clock=clock, min_interval=0.25, first_frame_cost=0.01)
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
        view = LiveView(rec, clock=clock, min_interval=0.25, max_overhead=0.05)
        assert np.isclose(view._interval, 0.1 * 0.95 / 0.05)  # before any frame: assumed cost
        original = view.image

        class SlowImage:  # each frame "takes" 0.5 s of the fake clock
            def __setattr__(self, name, value):
                clock.now += 0.5
                setattr(original, name, value)

        view.image = SlowImage()
        model.train_on_batch(x[:16], y[:16])
        clock.now += 1.0
        assert not view.update()  # 1 s < 1.9 s: the first frame waits too
        clock.now += 1.0
        assert view.update()  # the first frame builds the figure: a one-off cost
        assert np.isclose(view._interval, 0.1 * 0.95 / 0.05)  # still the assumed cost
        clock.now += 2.0
        assert view.update()
        assert np.isclose(view._interval, 0.5 * 0.95 / 0.05)  # 9.5 s between frames
        clock.now += 5.0
        assert not view.update()
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
