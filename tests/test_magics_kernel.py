"""``%%losses`` in a real Jupyter kernel: outputs, live widget, errors, Ctrl-C.

nbclient executes notebooks as a frontend would (without a widget renderer);
the interrupt test talks to the kernel through jupyter_client directly.
"""

from __future__ import annotations

import os
import queue
import time

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

pytestmark = pytest.mark.slow

SETUP = """\
import os, sys
sys.path.insert(0, {tests!r})
%load_ext loss_inspect
import loss_inspect as li, models
x, y = models.data()
model = models.mlp()
"""
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _run(cells, env=None, allow_errors=False):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=allow_errors).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


def _setup():
    return SETUP.format(tests=os.path.dirname(__file__))


def _texts(cell):
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _widget_states(nb):
    """model id -> state of every widget, as nbclient stored them in the notebook."""
    stored = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return {model_id: entry["state"] for model_id, entry in stored.items()}


def _live_status(nb, output):
    """The status line of the LiveView an output displays (its final widget state)."""
    states = _widget_states(nb)
    box = states[output["data"][WIDGET_MIME]["model_id"]]
    status_id = box["children"][0].removeprefix("IPY_MODEL_")
    return states[status_id]["value"]


@pytest.mark.parametrize("backend", ["inline", "agg"])
def test_cell_outputs_live_widget_then_one_table_and_one_figure(backend):
    """The kernel's default inline backend, and MPLBACKEND=agg (common in CI),
    where displaying a Figure gives no PNG: ours is rendered by hand."""
    nb = _run([
        _setup(),
        "%%losses model -o rep\nmodel.fit(x, y, batch_size=16, epochs=2, verbose=0)",
        "import matplotlib, matplotlib.pyplot as plt\n"
        "print(len(rep.history), li.recorders(), plt.get_fignums())\n"
        "print(matplotlib.get_backend().lower())",
    ], env={"MPLBACKEND": "agg" if backend == "agg"
            else "module://matplotlib_inline.backend_inline"})
    outputs = nb.cells[1].outputs
    kinds = [sorted(o.get("data", {})) for o in outputs]
    assert [o.output_type for o in outputs] == ["display_data"] * 3, outputs
    assert WIDGET_MIME in kinds[0]
    assert outputs[0]["data"]["text/plain"] == "LiveView(model='mlp')"
    assert kinds[1] == ["text/html", "text/plain"]
    assert outputs[1]["data"]["text/plain"].startswith("Loss breakdown (train records: 8)")
    assert "<table" in outputs[1]["data"]["text/html"]
    assert "image/png" in kinds[2] and len(outputs[2]["data"]["image/png"]) > 1000
    assert "done &middot; step 8, epoch 2 &middot; 8 records" in _live_status(nb, outputs[0])
    printed = _texts(nb.cells[2]).strip().splitlines()
    assert printed[0] == "8 [] []"
    assert ("agg" if backend == "agg" else "inline") in printed[1]


def test_without_widgets_the_output_is_the_static_table_and_figure():
    nb = _run(
        [_setup(), "%%losses model\nmodel.fit(x, y, batch_size=16, epochs=1, verbose=0)"],
        env={"LOSS_INSPECT_LIVE": "0"},
    )
    outputs = nb.cells[1].outputs
    assert len(outputs) == 2
    assert outputs[0]["data"]["text/plain"].startswith("Loss breakdown (train records: 4)")
    assert "image/png" in outputs[1]["data"]
    assert not any(o.output_type == "stream" and o.name == "stderr" for o in outputs)


def test_body_error_fails_the_cell_and_keeps_the_records():
    with pytest.raises(CellExecutionError, match="boom in the body"):
        _run([_setup(), "%%losses model -o rep\n"
              "model.fit(x, y, batch_size=16, epochs=1, verbose=0)\nraise ValueError('boom in the body')"])
    nb = _run(
        [_setup(),
         "%%losses model -o rep\nmodel.fit(x, y, batch_size=16, epochs=1, verbose=0)\n"
         "raise ValueError('boom in the body')",
         "print(len(rep.history), len(li.last().history), li.recorders())"],
        allow_errors=True,
    )
    outputs = nb.cells[1].outputs
    assert [o.output_type for o in outputs] == ["display_data", "error"]
    assert outputs[1]["ename"] == "ValueError" and outputs[1]["evalue"] == "boom in the body"
    # The live view still shows every record, and how the cell ended.
    status = _live_status(nb, outputs[0])
    assert "stopped by ValueError at step 4, epoch 1 &middot; 4 records" in status
    assert _texts(nb.cells[2]).strip() == "4 4 []"


@pytest.mark.parametrize("setting", ["auto", "off"])
def test_live_frames_come_from_the_helper_process_which_ends_with_the_kernel(setting):
    """In a kernel the frames drawn during the fit come from the helper
    process (`loss_inspect._render_process`); LOSS_INSPECT_RENDER_PROCESS=0
    keeps them in the kernel. Either way the cell's outputs are the same, and
    no helper outlives the kernel."""
    nb = _run([
        _setup(),
        "import time, keras\n"
        "slow = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: time.sleep(0.05))",
        "%%losses model -o rep\n"
        "model.fit(x, y, batch_size=16, epochs=16, verbose=0, callbacks=[slow])",
        "from loss_inspect import _render_process as rp\n"
        "helper = rp._shared\n"
        "print(len(rep.history), helper is not None and helper.alive,\n"
        "      helper.replies if helper else 0, helper.process.pid if helper else -1)",
    ], env={"LOSS_INSPECT_RENDER_PROCESS": "1" if setting == "auto" else "0"})
    records, alive, replies, pid = _texts(nb.cells[3]).split()
    assert int(records) == 16 * 4
    kinds = [sorted(o.get("data", {})) for o in nb.cells[2].outputs]
    assert [WIDGET_MIME in k for k in kinds] == [True, False, False]  # widget, table, figure
    assert "done" in _live_status(nb, nb.cells[2].outputs[0])
    if setting == "off":
        assert (alive, replies, pid) == ("False", "0", "-1")
        return
    assert alive == "True" and int(replies) >= 1  # at least one frame during the fit
    deadline = time.monotonic() + 30
    while True:  # the kernel has shut down: its helper must be gone too
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().split()[2] == "Z":
                break
        assert time.monotonic() < deadline, f"helper {pid} outlived its kernel"
        time.sleep(0.1)


def test_usage_error_is_an_error_for_nbclient():
    with pytest.raises(CellExecutionError, match="no variable named 'mdl'"):
        _run([_setup(), "%%losses mdl\npass"])


def test_dashboard_keeps_updating_while_later_cells_train():
    nb = _run([
        _setup(),
        "dash = li.Dashboard(model)\ndash",
        "model.fit(x, y, batch_size=16, epochs=2, verbose=0)",
        "model.fit(x, y, batch_size=16, epochs=1, verbose=0)",
        "dash.view.value = 'share'; dash.logy.value = True\n"
        "print(dash.live.renders >= 3, len(dash.recorder.history), dash.live.options['view'])\n"
        "dash.close(); print(li.recorders())",
    ])
    first = nb.cells[1].outputs[0]["data"]
    assert WIDGET_MIME in first and first["text/plain"] == "Dashboard(model='mlp')"
    assert _texts(nb.cells[4]).split("\n")[:2] == ["True 12 share", "[]"]


def test_interrupt_during_fit_propagates_detaches_and_skips_queued_cells():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        def execute(code, timeout=120):
            msg_id = kc.execute(code)
            return msg_id

        def reply(msg_id, timeout=300):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    msg = kc.get_shell_msg(timeout=1)
                except queue.Empty:
                    continue
                if msg["parent_header"].get("msg_id") == msg_id:
                    return msg["content"]
            raise TimeoutError(msg_id)

        assert reply(execute(_setup()))["status"] == "ok"
        long_fit = (
            "%%losses model -o rep\n"
            "import numpy as np, keras\n"
            "xb, yb = np.tile(x, (500, 1)), np.tile(y, (500, 1))\n"
            "started = keras.callbacks.LambdaCallback(\n"
            "    on_train_batch_end=lambda b, logs: b == 20 and print('TRAINING', flush=True))\n"
            "model.fit(xb, yb, batch_size=16, epochs=50, verbose=0, callbacks=[started])"
        )
        fit_id = execute(long_fit)
        queued_id = execute("ran_after = True")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # interrupt once training really runs
            try:
                msg = kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if msg["msg_type"] == "stream" and "TRAINING" in msg["content"]["text"]:
                break
        else:
            raise TimeoutError("training never started")
        km.interrupt_kernel()
        try:
            fit_reply = reply(fit_id, timeout=20)
        except TimeoutError:
            # Python drops a KeyboardInterrupt that lands inside a finalizer
            # (__del__: "Exception ignored"); a user presses Stop again.
            km.interrupt_kernel()
            fit_reply = reply(fit_id, timeout=120)
        stderr = []
        while True:
            try:
                msg = kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                break
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stderr":
                stderr.append(msg["content"]["text"])
        assert fit_reply["status"] == "error" and fit_reply["ename"] == "KeyboardInterrupt", (
            fit_reply.get("status"), "".join(stderr)[-2000:])
        assert reply(queued_id)["status"] == "aborted"
        check = execute(
            "print('ran_after' in globals(), len(li.last().history) > 0, li.recorders(),"
            " 'compute_loss' in model.__dict__)"
        )
        assert reply(check)["status"] == "ok"
        lines = []
        while True:
            msg = kc.get_iopub_msg(timeout=10)
            if msg["parent_header"].get("msg_id") == check and msg["msg_type"] == "stream":
                lines.append(msg["content"]["text"])
            if (msg["parent_header"].get("msg_id") == check and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"):
                break
        assert "".join(lines).strip() == "False True [] False"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
