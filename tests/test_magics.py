"""``%%losses`` / ``%losses`` in a real IPython shell (no kernel: text output).

Tests marked with the ``kernel_path`` fixture take the magic's kernel path
(live widget, rich display) in the same shell: `_display.context` says
"kernel", as it does under ipykernel, and IPython's own ``capture_output``
collects what the cell displays, as a frontend would receive it. Widgets
without a frontend are kept kernel-side, so the live view's final state can
be read from the widget the cell displayed.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import warnings

import keras
import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import loss_inspect as li
import models

FIT_CELL = "model.fit(x, y, batch_size=16, epochs=2, verbose=0)"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def shell():
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()  # starts the test shell once per process
    ip.run_line_magic("load_ext", "loss_inspect")
    yield ip
    ip.run_line_magic("unload_ext", "loss_inspect")


@pytest.fixture
def kernel_path(shell, monkeypatch):
    from loss_inspect import _display

    monkeypatch.setattr(_display, "context", lambda: _display.KERNEL)
    # Every MIME type, as ipykernel formats them (a terminal shell: text only).
    formatter = shell.display_formatter
    monkeypatch.setattr(formatter, "active_types", list(formatter.format_types))
    monkeypatch.delenv("LOSS_INSPECT_LIVE", raising=False)


def _rich(ip, line, body):
    """Run a %%losses cell; (what it displayed, as MIME bundles; its exception)."""
    error = None
    with capture_output() as captured:
        try:
            ip.run_cell_magic("losses", line, body)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            error = exc
    return [dict(output.data) for output in captured.outputs], error


def _live_status(bundle) -> str:
    """The status line of the live widget a cell displayed (its kernel-side state)."""
    from ipywidgets.widgets.widget import _instances

    box = _instances[bundle[WIDGET_MIME]["model_id"]]
    assert bundle["text/plain"].startswith("LiveView(")
    return box.children[0].value


def _kinds(outputs):
    return ["widget" if WIDGET_MIME in o else "png" if "image/png" in o
            else "table" if "text/html" in o else sorted(o) for o in outputs]


@pytest.fixture
def ip(shell):
    x, y = models.data()
    shell.user_ns.update(model=models.mlp(), x=x, y=y, models_list=[models.plain()])
    yield shell
    for name in ("rep", "snap", "boom"):
        shell.user_ns.pop(name, None)


def test_cell_magic_records_detaches_and_prints_table(ip, capsys):
    ip.run_cell_magic("losses", "model -o rep", FIT_CELL)
    out = capsys.readouterr().out
    report = ip.user_ns["rep"]
    assert "Loss breakdown (train records: 8)" in out and "add_loss:mlp/extra" in out
    assert len(report.history) == 8 and li.last() is report
    assert not report.recorder.attached and li.recorders() == []
    assert "compute_loss" not in ip.user_ns["model"].__dict__
    assert str(report).splitlines()[0] == "Loss breakdown (train records: 8)"


def test_quiet_prints_nothing_and_options_apply(ip, capsys):
    ip.run_cell_magic(
        "losses", "model -q -o rep --every 2 --phase all --plot lines --logy", FIT_CELL
    )
    assert capsys.readouterr().out == ""
    report = ip.user_ns["rep"]
    assert list(report.history.steps) == [2, 4, 6, 8]
    assert report.phase is None and report.view == "lines" and report.logy


def test_model_expressions_are_resolved_in_the_namespace(ip):
    ip.run_cell_magic("losses", "models_list[0] -q -o rep", FIT_CELL.replace("model.", "models_list[0]."))
    assert ip.user_ns["rep"].model_name == "plain"


def test_forward_passes_only_are_shown_as_call_records(ip, capsys):
    ip.run_cell_magic("losses", "model -o rep", "model(x[:4])\nmodel(x[:4], training=True)")
    report = ip.user_ns["rep"]
    assert list(report.history.phases) == ["call", "call"] and report.phase is None
    assert "Loss breakdown (all records: 2)" in capsys.readouterr().out


def test_empty_and_comment_only_bodies(ip, capsys):
    # IPython itself refuses an empty cell-magic body, with a clear message.
    with pytest.raises(UsageError, match="cell body is empty"):
        ip.run_cell_magic("losses", "model", "")
    ip.run_cell_magic("losses", "model -o rep", "# nothing to see\n# NBVAL_IGNORE_OUTPUT")
    assert len(ip.user_ns["rep"].history) == 0
    assert "records: 0" in capsys.readouterr().out
    assert li.recorders() == []


def test_body_exception_propagates_detaches_and_keeps_records(ip):
    body = FIT_CELL + "\nraise ValueError('boom in the body')"
    with pytest.raises(ValueError, match="boom in the body"):
        ip.run_cell_magic("losses", "model -o rep", body)
    report = ip.user_ns["rep"]
    assert li.last() is report and len(report.history) == 8
    assert isinstance(report.error, ValueError) and li.recorders() == []


class _InterruptAtBatch1(keras.callbacks.Callback):
    """Ctrl-C as if pressed during the second batch of fit()."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            raise KeyboardInterrupt


def test_keyboard_interrupt_propagates_detaches_and_keeps_partial_history(ip):
    ip.user_ns["Interrupt"] = _InterruptAtBatch1
    body = "model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[Interrupt()])"
    with pytest.raises(KeyboardInterrupt):
        ip.run_cell_magic("losses", "model -o rep", body)
    assert len(li.last().history) == 2 and li.recorders() == []
    assert "compute_loss" not in ip.user_ns["model"].__dict__


def test_nan_raise_stops_training_with_a_named_error(ip):
    ip.user_ns["model"] = models.nan_model()
    body = "model.fit(x * 0.01, y, batch_size=16, epochs=2, verbose=0)"
    with pytest.raises(li.NonFiniteLossError, match=r"add_loss:nan/bad.*step 1 \(epoch 1"):
        ip.run_cell_magic("losses", "model --nan raise -q", body)
    assert len(li.last().history.select(phase="train")) == 1
    models.weights(ip.user_ns["model"])  # the model survived the stop


def test_nan_warn_is_the_default(ip):
    ip.user_ns["model"] = models.nan_model()
    body = "model.fit(x * 0.01, y, batch_size=16, epochs=1, verbose=0)"
    with pytest.warns(RuntimeWarning, match="add_loss:nan/bad"):
        ip.run_cell_magic("losses", "model -q", body)


@pytest.mark.parametrize(
    "line,message",
    [
        ("mdel", r"no variable named 'mdel'.*Did you mean: model"),
        ("x", r"Expected a Keras 3 model.*numpy\.ndarray"),
        ("model.layers[1]", r"Expected a Keras 3 model.*Dense.*layer, not a model"),
        ("models_list[5]", r"could not evaluate 'models_list\[5\]': IndexError"),
        ("$model", r"not expanded"),
        ("{model}", r"not expanded"),
        ("model --every abc", r"--every expects a positive integer; got 'abc'"),
        ("model --every 0", r"--every expects a positive integer; got 0"),
        ("model --every -1", r"--every expects a positive integer; got -1"),
        ("model --ev 2", r"unrecognized arguments: --ev 2"),
        ("model --plot pie", r"invalid choice: 'pie'"),
        ("model --nan stop", r"invalid choice: 'stop'"),
        ('model -o "unclosed', r"cannot parse.*No closing quotation"),
        ("model -o 1abc", r"-o expects a variable name; got '1abc'"),
        ("model --frobnicate", r"unrecognized arguments: --frobnicate"),
        ("", r"needs a MODEL"),
        ("model --on x", r"--on is for the line magic"),
    ],
)
def test_bad_cell_magic_input_is_a_usage_error(ip, line, message):
    with pytest.raises(UsageError, match=message):
        ip.run_cell_magic("losses", line, FIT_CELL)
    assert li.recorders() == []


def test_quoted_and_unicode_arguments(ip):
    ip.run_cell_magic("losses", '"model" -q -o "rep"', "pass")
    assert ip.user_ns["rep"].model_name == "mlp"
    ip.user_ns["mödel"] = ip.user_ns["model"]
    ip.run_cell_magic("losses", "mödel -q -o rep", "pass")
    assert ip.user_ns["rep"].model_name == "mlp"


def test_help_is_available(ip, capsys):
    ip.run_line_magic("losses", "-h")
    out = capsys.readouterr().out
    assert "%losses [-o NAME] [-q] [--every N]" in out and "--nan" in out


def test_line_magic_shows_model_losses(ip, capsys):
    ip.run_line_magic("losses", "model --on x[:4] -o snap")
    out = capsys.readouterr().out
    assert "model.losses of 'mlp' (4 terms)" in out
    snap = ip.user_ns["snap"]
    assert snap.readable and snap.keys()[0] == "activity:mlp/hidden"


def test_line_magic_without_model_lists_recorders(ip, capsys):
    ip.run_line_magic("losses", "")
    assert "No loss_inspect recorder is attached." in capsys.readouterr().out
    with li.attach(ip.user_ns["model"]):
        ip.run_line_magic("losses", "")
        assert "Recorder model='mlp' attached" in capsys.readouterr().out


def test_a_recorder_attached_by_hand_stays_attached(ip):
    model = ip.user_ns["model"]
    with li.attach(model) as rec:
        ip.run_cell_magic("losses", "model -q -o rep", FIT_CELL)
        assert rec.attached and len(rec.history) == 8
        ip.run_cell_magic("losses", "model -q -o rep", FIT_CELL)
        assert len(ip.user_ns["rep"].history) == 8  # only this cell's records


def test_render_failure_is_reported_once_and_records_kept(ip, monkeypatch, capsys):
    from loss_inspect import report as report_module

    def broken(self):
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(report_module.LossReport, "__str__", broken)
    with pytest.warns(RuntimeWarning, match="renderer exploded") as caught:
        ip.run_cell_magic("losses", "model -o rep", FIT_CELL)
    mine = [w for w in caught if "renderer exploded" in str(w.message)]
    assert len(mine) == 1 and len(ip.user_ns["rep"].history) == 8


def test_no_pyplot_figures_leak(ip):
    import matplotlib.pyplot as plt

    ip.run_cell_magic("losses", "model -q -o rep", FIT_CELL)
    for view in ("stack", "lines", "share"):
        ip.user_ns["rep"].png(view=view)
    assert plt.get_fignums() == []


def test_load_reload_unload_leave_exactly_one_magic(shell):
    magics = shell.magics_manager.magics
    shell.run_line_magic("load_ext", "loss_inspect")  # second load: no-op
    shell.run_line_magic("reload_ext", "loss_inspect")
    shell.run_line_magic("reload_ext", "loss_inspect")
    assert "losses" in magics["cell"] and "losses" in magics["line"]
    owner = magics["cell"]["losses"].__self__
    assert magics["line"]["losses"].__self__ is owner
    model = models.plain()
    shell.user_ns["model"] = model
    # a recorder the magics attached is detached by unload
    owner._owned.append(li.attach(model))
    shell.run_line_magic("unload_ext", "loss_inspect")
    assert "losses" not in magics["cell"] and "losses" not in magics["line"]
    assert "LossInspectMagics" not in shell.magics_manager.registry
    assert li.recorders() == [] and "compute_loss" not in model.__dict__
    shell.run_line_magic("load_ext", "loss_inspect")
    assert "losses" in magics["cell"]


# ------------------------------------------------- the live view's final state
def test_live_view_ends_done_then_table_then_figure(ip, kernel_path):
    outputs, error = _rich(ip, "model -o rep", FIT_CELL)
    assert error is None and _kinds(outputs) == ["widget", "table", "png"]
    assert "done &middot; step 8, epoch 2 &middot; 8 records" in _live_status(outputs[0])
    assert outputs[1]["text/plain"].startswith("Loss breakdown (train records: 8)")


def test_body_error_still_draws_the_final_frame_and_says_it_stopped(ip, kernel_path):
    body = FIT_CELL + "\nraise ValueError('boom in the body')"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs, error = _rich(ip, "model -o rep", body)
    assert isinstance(error, ValueError) and str(error) == "boom in the body"
    assert _kinds(outputs) == ["widget"]  # the cell failed: no table, no figure
    status = _live_status(outputs[0])
    assert "stopped by ValueError at step 8, epoch 2 &middot; 8 records" in status
    assert not [w for w in caught if "loss_inspect" in str(w.message)]
    assert ip.user_ns["rep"].error is error and li.recorders() == []


def test_interrupted_cell_draws_the_final_frame_and_the_interrupt_propagates(ip, kernel_path):
    ip.user_ns["Interrupt"] = _InterruptAtBatch1
    body = "model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[Interrupt()])"
    outputs, error = _rich(ip, "model", body)
    assert isinstance(error, KeyboardInterrupt)
    assert "stopped by KeyboardInterrupt at step 2, epoch 1" in _live_status(outputs[0])
    assert len(li.last().history) == 2 and li.recorders() == []


# --------------------------------------------- a broken renderer: one report
def _break_the_renderer(monkeypatch):
    """plot_history (used by the live view and the figure) raises; the table still works."""
    from loss_inspect import plotting

    class Calls(list):
        original = staticmethod(plotting.plot_history)

    calls = Calls()

    def broken(history, **kwargs):
        calls.append(history.records)
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(plotting, "plot_history", broken)
    return calls


def _rendering_warnings(caught):
    return [w for w in caught if issubclass(w.category, RuntimeWarning)
            and "loss_inspect" in str(w.message) or "display" in str(w.message)]


@pytest.mark.slow
def test_broken_renderer_is_reported_once_per_cell_and_training_goes_on(ip, kernel_path,
                                                                        monkeypatch):
    # The in-fit frame drawn in this process (a helper's failures: test_render_process).
    monkeypatch.setenv("LOSS_INSPECT_RENDER_PROCESS", "0")
    calls = _break_the_renderer(monkeypatch)
    # One pause of 3.5 s inside fit(): the live view's first throttled frame
    # (after ~3.2 s) is drawn, and fails, while fit() runs.
    ip.user_ns["pause"] = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batch == 0 and __import__("time").sleep(3.5))
    body = "model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[pause])"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs, error = _rich(ip, "model -o rep", body)
    assert error is None and len(ip.user_ns["rep"].history) == 8
    assert calls[0] < 8 and calls[1:] == [8, 8]  # in fit(), final frame, figure
    mine = _rendering_warnings(caught)
    assert len(mine) == 1, [str(w.message) for w in mine]
    assert "could not draw the breakdown (RuntimeError: renderer exploded)" in str(mine[0].message)
    assert _kinds(outputs) == ["widget", "table"]  # the table does not need the renderer
    # The next cell works, and reports its own failure once.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs, error = _rich(ip, "model -o rep", FIT_CELL)
    assert error is None and len(ip.user_ns["rep"].history) == 8
    assert len(_rendering_warnings(caught)) == 1
    from loss_inspect import plotting

    monkeypatch.setattr(plotting, "plot_history", calls.original)  # mended
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs, error = _rich(ip, "model -o rep", FIT_CELL)
    assert _kinds(outputs) == ["widget", "table", "png"] and not _rendering_warnings(caught)
    assert "done" in _live_status(outputs[0])


def test_body_error_wins_over_a_broken_renderer(ip, kernel_path, monkeypatch):
    calls = _break_the_renderer(monkeypatch)
    body = FIT_CELL + "\nraise ValueError('boom in the body')"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs, error = _rich(ip, "model -o rep", body)
    assert isinstance(error, ValueError) and str(error) == "boom in the body"
    assert calls == [8] and len(_rendering_warnings(caught)) == 1
    assert len(ip.user_ns["rep"].history) == 8 and li.recorders() == []


# ------------------------------------------------------------------ options
def test_plot_none_shows_the_table_only(ip, kernel_path):
    outputs, _ = _rich(ip, "model --plot none -o rep", FIT_CELL)
    assert _kinds(outputs) == ["widget", "table"]
    assert not any("image/png" in o for o in outputs)


@pytest.mark.parametrize("view", ["stack", "share"])
def test_plot_view_is_the_figure_shown(ip, kernel_path, view):
    outputs, _ = _rich(ip, f"model --plot {view} --no-live -o rep", FIT_CELL)
    report = ip.user_ns["rep"]
    assert _kinds(outputs) == ["table", "png"] and report.view == view
    other = "share" if view == "stack" else "stack"
    shown = base64.b64decode(outputs[1]["image/png"])
    assert shown == report.png() != report.png(view=other)
    label = report.figure().axes[0].get_ylabel()
    assert label == ("share of total (%)" if view == "share" else "loss")


def test_no_live_shows_no_widget(ip, kernel_path):
    outputs, _ = _rich(ip, "model --no-live", FIT_CELL)
    assert _kinds(outputs) == ["table", "png"]
    assert not any(WIDGET_MIME in o for o in outputs)


def test_phase_eval_summarises_the_validation_batches(ip, kernel_path):
    body = "model.fit(x, y, batch_size=16, epochs=2, verbose=0, validation_data=(x[:32], y[:32]))"
    outputs, _ = _rich(ip, "model --phase eval --no-live -o rep", body)
    report = ip.user_ns["rep"]
    table = outputs[0]
    assert report.phase == "eval"
    assert table["text/plain"] == li.breakdown_table(report.history, "eval")
    assert table["text/plain"] != li.breakdown_table(report.history, "train")
    assert table["text/plain"].startswith("Loss breakdown (eval records: 4)")
    assert "Loss breakdown (eval records: 4)" in table["text/html"]


def test_nan_ignore_records_the_nan_without_a_warning(ip):
    ip.user_ns["model"] = models.nan_model()
    body = "model.fit(x * 0.01, y, batch_size=16, epochs=1, verbose=0)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ip.run_cell_magic("losses", "model --nan ignore -q -o rep", body)
    assert not [w for w in caught if "non-finite" in str(w.message).lower()
                or "nan/bad" in str(w.message)], [str(w.message) for w in caught]
    history = ip.user_ns["rep"].history
    assert len(history) == 4 and history.first_nonfinite() is not None


# ------------------------------------------------------------ model inputs
def test_tf_keras_model_is_a_usage_error_naming_the_type(ip):
    """tf_keras is not installed in the dev venv, so this is a class whose
    ``__module__`` is tf_keras's (``tf_keras.src.engine.training``), which is
    how a real tf_keras model is recognised without importing tf_keras."""
    try:
        import tf_keras  # noqa: F401
        pytest.fail("tf_keras is installed: use a real tf_keras.Model here")
    except ImportError:
        pass
    Model = type("Model", (), {"__module__": "tf_keras.src.engine.training"})
    ip.user_ns["old"] = Model()
    with pytest.raises(UsageError, match=r"Expected a Keras 3 model.*"
                       r"tf_keras\.src\.engine\.training\.Model.*tf\.keras / Keras 2 model"):
        ip.run_cell_magic("losses", "old", FIT_CELL)
    assert li.recorders() == []


def test_model_by_attribute_of_an_object(ip, capsys):
    class GAN:
        def __init__(self):
            self.generator = models.mlp()
            self.discriminator = models.plain()

    ip.user_ns["gan"] = GAN()
    ip.run_cell_magic("losses", "gan.generator -o rep", FIT_CELL.replace("model.", "gan.generator."))
    report = ip.user_ns["rep"]
    assert report.model_name == "mlp" and len(report.history) == 8
    assert "Loss breakdown (train records: 8)" in capsys.readouterr().out
    assert li.recorders() == []


def test_body_whose_first_line_is_an_nbval_marker(ip, capsys):
    ip.run_cell_magic("losses", "model -o rep", "# NBVAL_SKIP\n" + FIT_CELL)
    assert len(ip.user_ns["rep"].history) == 8
    assert "Loss breakdown (train records: 8)" in capsys.readouterr().out


# ---------------------------------------------------------------- extension
def _callbacks(shell):
    return {event: list(fns) for event, fns in shell.events.callbacks.items()}


def test_reload_ext_twice_changes_no_callback_and_a_cell_renders_once(shell, ip, capsys):
    before = _callbacks(shell)
    shell.run_line_magic("reload_ext", "loss_inspect")
    shell.run_line_magic("reload_ext", "loss_inspect")
    assert _callbacks(shell) == before
    ip.run_cell_magic("losses", "model", FIT_CELL)
    assert capsys.readouterr().out.count("Loss breakdown (train records: 8)") == 1


def test_module_reload_keeps_an_attached_recorder_working_and_detachable(shell, ip):
    import importlib

    import loss_inspect.magics

    model = ip.user_ns["model"]
    x, y = ip.user_ns["x"], ip.user_ns["y"]
    rec = li.attach(model)
    try:
        importlib.reload(loss_inspect.magics)
        shell.run_line_magic("reload_ext", "loss_inspect")
        model.train_on_batch(x[:16], y[:16])
        assert rec.attached and len(rec.history) == 1
        ip.run_cell_magic("losses", "model -q -o rep", FIT_CELL)
        assert rec.attached and len(ip.user_ns["rep"].history) == 8 and len(rec.history) == 9
        # The magics registered before the module reload are still known to unload.
        shell.run_line_magic("unload_ext", "loss_inspect")
        assert "losses" not in shell.magics_manager.magics["cell"]
        assert rec.attached  # unload leaves a recorder attached by hand alone
    finally:
        rec.detach()
        shell.run_line_magic("load_ext", "loss_inspect")
    assert li.recorders() == [] and "compute_loss" not in model.__dict__


def test_module_reload_inside_a_cell_keeps_its_recorder_and_unload_works(shell, ip):
    body = (FIT_CELL + "\nimport importlib, loss_inspect.magics\n"
            "importlib.reload(loss_inspect.magics)\n" + FIT_CELL)
    try:
        ip.run_cell_magic("losses", "model -q -o rep", body)
        assert len(ip.user_ns["rep"].history) == 16 and li.recorders() == []
        shell.run_line_magic("unload_ext", "loss_inspect")
        assert "losses" not in shell.magics_manager.magics["line"]
        assert "LossInspectMagics" not in shell.magics_manager.registry
    finally:
        shell.run_line_magic("load_ext", "loss_inspect")
    assert "compute_loss" not in ip.user_ns["model"].__dict__


def test_a_load_that_fails_leaves_nothing_registered(shell, ip):
    """The user's own %%losses (a cell magic) is in the way: load refuses before
    registering the line magic, and says how to resolve it."""
    shell.run_line_magic("unload_ext", "loss_inspect")
    manager = shell.magics_manager

    def losses(line, cell):
        return "the user's own %%losses"

    try:
        shell.register_magic_function(losses, "cell", "losses")
        before = _callbacks(shell)
        with pytest.raises(UsageError, match=r"not loaded: %%losses is already defined by "
                           r".*test_a_load_that_fails_leaves_nothing_registered.*losses"):
            shell.run_line_magic("load_ext", "loss_inspect")
        assert "losses" not in manager.magics["line"]
        assert manager.magics["cell"]["losses"] is losses
        assert "LossInspectMagics" not in manager.registry
        assert "loss_inspect" not in shell.extension_manager.loaded
        assert _callbacks(shell) == before
        assert shell.run_cell_magic("losses", "", "pass") == "the user's own %%losses"
    finally:
        manager.magics["cell"].pop("losses", None)
        shell.run_line_magic("load_ext", "loss_inspect")
    ip.run_cell_magic("losses", "model -q -o rep", FIT_CELL)
    assert len(ip.user_ns["rep"].history) == 8


# ------------------------------------------------------- without ipywidgets
_NO_WIDGETS = """\
import sys, warnings
sys.modules["ipywidgets"] = None  # import ipywidgets fails, as when it is not installed
sys.path.insert(0, {tests!r})
from IPython.testing.globalipapp import get_ipython
from IPython.utils.capture import capture_output
ip = get_ipython()
ip.run_line_magic("load_ext", "loss_inspect")
import loss_inspect as li, models
from loss_inspect import _display
_display.context = lambda: _display.KERNEL  # where the live view would be shown
ip.display_formatter.active_types = list(ip.display_formatter.format_types)
x, y = models.data()
model = models.mlp()
ip.user_ns.update(model=model, x=x, y=y)
try:
    li.Dashboard(model)
except ImportError as exc:
    print("DASHBOARD", type(exc).__name__, exc)
print("ATTACHED", li.recorders())
with warnings.catch_warnings(record=True) as caught, capture_output() as cap:
    warnings.simplefilter("always")
    for _ in range(2):
        ip.run_cell_magic("losses", "model -o rep", {fit!r})
print("OUTPUTS", [sorted(o.data) for o in cap.outputs])
print("RECORDS", len(ip.user_ns["rep"].history), li.recorders())
for w in caught:
    if "loss_inspect" in str(w.message):  # not the backends' own deprecations
        print("WARNING", w.category.__name__, w.message)
"""


@pytest.fixture(scope="module")
def without_ipywidgets():
    code = _NO_WIDGETS.format(tests=os.path.dirname(__file__), fit=FIT_CELL)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.splitlines()


def test_dashboard_without_ipywidgets_says_what_to_install(without_ipywidgets):
    line = next(l for l in without_ipywidgets if l.startswith("DASHBOARD"))
    assert line.startswith("DASHBOARD ImportError li.Dashboard needs ipywidgets: "
                           "pip install ipywidgets (import ipywidgets failed: "
                           "ModuleNotFoundError: import of ipywidgets halted"), line
    assert "ATTACHED []" in without_ipywidgets


def test_cell_magic_without_ipywidgets_falls_back_to_static_output(without_ipywidgets):
    outputs = next(l for l in without_ipywidgets if l.startswith("OUTPUTS"))
    table, png = "['text/html', 'text/plain']", "['image/png', 'text/plain']"
    assert outputs == f"OUTPUTS [{table}, {png}, {table}, {png}]"
    assert "RECORDS 8 []" in without_ipywidgets
    warned = [l for l in without_ipywidgets if l.startswith("WARNING")]
    assert len(warned) == 1, warned
    assert warned[0].startswith("WARNING RuntimeWarning loss_inspect: no live widget, "
                                "ipywidgets could not be imported"), warned
