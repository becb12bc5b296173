"""The live widget as users see it: JupyterLab and Notebook 7 in Chromium.

Kernel-side tests (``tests/test_magics_kernel.py``) prove what the kernel
sends; only a browser shows whether the front-end renders it: the widget
manager finds the model, the ``Image`` really redraws while training runs,
and the final table and figure appear with no error anywhere.

Run with ``KERAS_BACKEND=jax python -m pytest -m e2e tests/e2e``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PAGE_LOAD_TIMEOUT_MS = 120_000  # the first load of JupyterLab parses a lot of JavaScript
RUN_TIMEOUT = 240  # seconds for "Run All Cells" on 2 shared cores
DONE = "E2E-DONE"  # printed by the last cell of every notebook these tests run

# The quickstart's fit is 35 steps: well under a second once compiled, too
# short to see the throttled live view (<= 4 redraws/s, the first after about
# 2.4 s) redraw twice. The test slows the COPY down with a callback that
# sleeps after each batch (about 15 s in all); the numbers, and so every later
# cell's asserts, stay the same. The committed notebook is never changed.
QUICKSTART_FIT = ("keras_history = model.fit(x, y, epochs=5, batch_size=32, "
                  "validation_split=0.2, verbose=0)")
SLOW_FIT = (
    "import time  # e2e test only: slow training so the live view redraws several times\n"
    "slow = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: time.sleep(0.4))\n"
    "keras_history = model.fit(x, y, epochs=5, batch_size=32, validation_split=0.2, verbose=0,\n"
    "                          callbacks=[slow])"
)
# Appended to every notebook: which python and backend ran it, and that the
# live widget was not switched off.
MARKER_CELL = (
    "import sys, os, keras\n"
    f"print({DONE!r}, sys.executable, keras.backend.backend(), os.environ.get('LOSS_INSPECT_LIVE'))"
)

# Every <img> of an ipywidgets Image that finished loading (an empty value
# never loads), with the cell it is in and the status line next to it (that
# line may still show the previous frame's text). Installed before any page
# script runs, so no frame is missed while the test is busy elsewhere.
FRAME_RECORDER = """
window.__liFrames = [];
document.addEventListener('load', (event) => {
  const img = event.target;
  if (!(img instanceof HTMLImageElement) || !img.classList.contains('widget-image')) return;
  const notebook = img.closest('.jp-Notebook');
  const cells = notebook ? Array.from(notebook.querySelectorAll('.jp-Cell')) : [];
  const box = img.closest('.widget-vbox');
  const status = box && box.querySelector('.widget-html');
  window.__liFrames.push({
    src: img.currentSrc || img.src, width: img.naturalWidth, t: Date.now(),
    cell: cells.indexOf(img.closest('.jp-Cell')), status: status ? status.textContent : '',
  });
}, true);
"""

# Uncaught page errors that are not ours. Notebook 7.6.5 throws this one while
# loading any notebook, even a one-cell "1+1" without widgets (its shortcuts
# plugin reads the schema of a settings plugin Notebook does not load).
KNOWN_PAGE_ERRORS = [
    re.compile(r"^Cannot read properties of undefined \(reading 'schema'\)\n"
               r"TypeError: [^\n]*\n\s+at [^\n]*/static/notebook/notebook_core\.")
]

# Everything a user would read as a failure, anywhere in the page.
# textContent, not innerText: cells scrolled out of view are not rendered.
PROBLEMS_JS = """
() => {
  const found = [];
  const add = (kind, el) => found.push(kind + ': ' + (el.textContent || '').slice(0, 500));
  // JupyterLab 4 and Notebook 7 render tracebacks as stderr too.
  document.querySelectorAll(
    '[data-mime-type="application/vnd.jupyter.stderr"], '
    + '[data-mime-type="application/vnd.jupyter.error"]'
  ).forEach((el) => add('error or stderr output', el));
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    if (walker.currentNode.data.includes('Error displaying widget')) {
      add('widget error', walker.currentNode.parentElement);
    }
  }
  return found;
}
"""


# ------------------------------------------------------------------ notebooks
def _code_cell(source: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": source}


def _quickstart_copy(server, name="01_quickstart.ipynb") -> str:
    """The quickstart in the server's root, slowed down, with the marker cell."""
    nb = json.loads((ROOT / "notebooks" / "01_quickstart.ipynb").read_text())
    fits = [c for c in nb["cells"] if QUICKSTART_FIT in "".join(c["source"])]
    assert len(fits) == 1, (
        "notebooks/01_quickstart.ipynb no longer has the fit this test slows down; "
        f"update QUICKSTART_FIT in {__file__}")
    fits[0]["source"] = "".join(fits[0]["source"]).replace(QUICKSTART_FIT, SLOW_FIT)
    nb["cells"].append(_code_cell(MARKER_CELL))
    (server.root / name).write_text(json.dumps(nb, indent=1))
    return name


DASHBOARD_CELLS = [
    "import logging\n"
    "logging.getLogger('matplotlib.font_manager').setLevel(logging.ERROR)\n"
    "import time\n"
    "import numpy as np, keras\n"
    "import loss_inspect as li\n"
    "keras.utils.set_random_seed(7)\n"
    "rng = np.random.default_rng(7)\n"
    "x = rng.normal(size=(256, 4)).astype('float32')\n"
    "y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype='float32')\n"
    "model = keras.Sequential([\n"
    "    keras.Input((4,)),\n"
    "    keras.layers.Dense(16, activation='relu', name='hidden',\n"
    "                       kernel_regularizer=keras.regularizers.L2(1e-2),\n"
    "                       activity_regularizer=keras.regularizers.L1(1e-2)),\n"
    "    keras.layers.Dense(1, name='out'),\n"
    "], name='dash_demo')\n"
    "model.compile(optimizer=keras.optimizers.Adam(0.03), loss='mse')",
    "dash = li.Dashboard(model)\ndash",
    # Slowed down like the quickstart copy, so the dashboard has time to
    # redraw while this later cell trains.
    "slow = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: time.sleep(0.4))\n"
    "model.fit(x, y, epochs=5, batch_size=32, validation_split=0.2, verbose=0, callbacks=[slow]);",
    MARKER_CELL,
]


def _write_notebook(server, name: str, sources: list[str]) -> str:
    nb = {
        "cells": [_code_cell(source) for source in sources],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    (server.root / name).write_text(json.dumps(nb, indent=1))
    return name


# ------------------------------------------------------------------ driving
class Notebook:
    """One open notebook in the page: running it, waiting, looking, screenshots."""

    def __init__(self, page, server, name: str):
        self.page, self.server = page, server
        page.add_init_script(FRAME_RECORDER)
        page.goto(server.page_url(name))
        self.root = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
        self.root.locator(".jp-CodeCell").first.wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)
        assert self.root.count() == 1, f"expected one notebook on the page, found {self.root.count()}"
        self.code_cells = self.root.locator(".jp-CodeCell")
        # The kernel named in the notebook starts by itself; wait until it answers.
        self.wait(lambda: any(k["execution_state"] == "idle" for k in server.kernels()),
                  "the notebook's kernel to start", 120)

    def run_all(self) -> None:
        """Run > Run All Cells, through the menu as a user would."""
        self.page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        label = self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))
        self.page.locator(".lm-Menu-item", has=label).click()

    def problems(self) -> list[str]:
        return self.page.evaluate(PROBLEMS_JS)

    def frames(self) -> list[dict]:
        return self.page.evaluate("window.__liFrames")

    def marker(self) -> str:
        texts = self.root.locator(".jp-OutputArea-output", has_text=DONE).all_text_contents()
        return texts[0] if texts else ""

    def index_of(self, cell) -> int:
        return cell.evaluate(
            "(el) => Array.from(el.closest('.jp-Notebook').querySelectorAll('.jp-Cell')).indexOf(el)")

    def wait(self, condition, what: str, timeout: float, check_page: bool = True) -> None:
        """Poll ``condition``; fail at once if the page shows an error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check_page:
                problems = self.problems()
                assert not problems, f"while waiting for {what}, the page shows: {problems}"
            if condition():
                return
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def run_and_watch(self, cell, artifacts: Path, stem: str) -> None:
        """Run every cell; screenshot ``cell`` at its first live frame and at the end."""
        self.run_all()
        self.wait(lambda: any(f["width"] > 0 for f in self.frames()) or self.marker(),
                  "the first live frame", RUN_TIMEOUT)
        self.screenshots(cell, artifacts / f"{stem}-running")
        self.wait(self.marker, f"the last cell to print {DONE}", RUN_TIMEOUT)
        # The run is over: the kernel is idle, and still idle a moment later.
        for _ in range(2):
            self.wait(lambda: all(k["execution_state"] == "idle" for k in self.server.kernels()),
                      "the kernel to go idle", 60)
            time.sleep(2)
        kernels = self.server.kernels()
        assert [k["execution_state"] for k in kernels] == ["idle"], (
            f"expected one idle kernel after the run, got {kernels}")
        self.screenshots(cell, artifacts / f"{stem}-finished")
        (artifacts / f"{stem}-frames.json").write_text(json.dumps(self.frames(), indent=1))

    def screenshots(self, cell, stem: Path) -> None:
        """The window as it is, and the whole cell (the viewport grows to fit it)."""
        self.show(cell)
        self.page.screenshot(path=f"{stem}.png")
        size = self.page.viewport_size
        height = cell.bounding_box()["height"]
        if height + 200 > size["height"]:
            self.page.set_viewport_size({"width": size["width"], "height": int(height) + 300})
        try:
            self.show(cell)
            cell.screenshot(path=f"{stem}-cell.png")
        finally:
            self.page.set_viewport_size(size)

    def show(self, locator):
        """Scroll to it and let it paint (cells out of view are not rendered, by design)."""
        locator.scroll_into_view_if_needed()
        self.page.evaluate(
            "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
        return locator

    def assert_clean(self, app: str) -> None:
        problems = self.problems()
        assert not problems, f"{app}: the page shows errors: {problems}"
        unexpected = [e for e in self.page.page_errors
                      if not any(known.search(e) for known in KNOWN_PAGE_ERRORS)]
        assert not unexpected, f"{app}: uncaught errors in the page: {unexpected}"
        widget_console = [m for m in self.page.console_errors if "widget" in m.lower()]
        assert not widget_console, f"{app}: widget errors in the browser console: {widget_console}"
        marker = self.marker().split()
        assert marker[:4] == [DONE, sys.executable, "jax", "None"], (
            f"{app}: the kernel must be this environment's python ({sys.executable}) on JAX "
            f"with the live widget on; the last cell printed {marker}")


def _live_frames(frames: list[dict], cell_index: int) -> tuple[list[dict], list[str]]:
    """A cell's loaded frames, and the distinct ones before the final frame.

    Each redraw pushes new bytes, so a new blob URL; the final frame is drawn
    once training is over, so every other frame was shown while it ran.
    """
    mine = [f for f in frames if f["cell"] == cell_index and f["width"] > 0]
    assert mine, f"no widget image ever loaded in cell {cell_index}; frames seen: {frames}"
    final = mine[-1]["src"]
    return mine, sorted({f["src"] for f in mine if f["src"] != final})


def _assert_not_upscaled(image, app: str) -> None:
    """The frame is a PNG: shown wider than its pixels, it is blurry (and too tall)."""
    shown, pixels = image.evaluate("(img) => [img.clientWidth, img.naturalWidth]")
    assert shown <= pixels, (
        f"{app}: the live frame is {pixels} px wide but shown {shown} px wide (upscaled, blurry)")


def _timeline(frames: list[dict]) -> list[tuple[float, str]]:
    return [(round((f["t"] - frames[0]["t"]) / 1000, 2), f["status"][:50]) for f in frames]


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_quickstart_live_widget_redraws_then_table_and_figure(app, request, page, artifacts):
    """%%losses in the quickstart: the widget redraws during fit(), the report follows."""
    server = request.getfixturevalue(f"{app}_server")
    stem = f"{app}-quickstart"
    try:
        nb = Notebook(page, server, _quickstart_copy(server))
        cell = nb.code_cells.filter(has_text="%%losses model -o report")
        assert cell.count() == 1, f"{app}: expected one %%losses cell, found {cell.count()}"
        nb.run_and_watch(cell, artifacts, stem)

        frames, live = _live_frames(nb.frames(), nb.index_of(cell))
        assert len(live) >= 2, (
            f"{app}: the live widget showed {len(live)} distinct frame(s) while training "
            f"ran, expected at least 2; frames (seconds, status): {_timeline(frames)}")

        outputs = cell.locator(".jp-OutputArea-output")
        assert outputs.count() == 3, (
            f"{app}: the %%losses cell should show widget, table, figure; it shows "
            f"{outputs.all_text_contents()}")
        widget = outputs.nth(0).locator("img.widget-image")
        assert nb.show(widget).is_visible(), f"{app}: no live widget in the %%losses cell"
        _assert_not_upscaled(widget, app)
        status = outputs.nth(0).locator(".widget-html").text_content()
        assert "done" in status and "step 35, epoch 5" in status, (
            f"{app}: the widget's status line should say done at step 35, epoch 5: {status!r}")
        mimes = [outputs.nth(i).get_attribute("data-mime-type") for i in (1, 2)]
        assert mimes == ["text/html", "image/png"], (
            f"{app}: after the widget, the %%losses cell should show a table and a figure: {mimes}")
        table = outputs.nth(1).locator("table")
        assert nb.show(table).is_visible(), f"{app}: no breakdown table after the cell"
        table_text = table.text_content()
        for key in ("compiled", "add_loss:demo/smooth", "activity:demo/hidden",
                    "regularizer:demo/hidden/kernel", "total", "100.0%"):
            assert key in table_text, f"{app}: {key!r} missing from the table:\n{table_text}"
        figure = outputs.nth(2).locator("img")
        assert nb.show(figure).is_visible(), f"{app}: no static figure after the cell"
        assert figure.evaluate("(img) => img.naturalWidth") > 200, f"{app}: the figure is empty"
        nb.assert_clean(app)
    finally:
        server.save_log(artifacts / f"{stem}-server.log")
        server.shutdown_kernels()


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_dashboard_redraws_while_a_later_cell_trains(app, request, page, artifacts):
    """li.Dashboard shown in one cell keeps redrawing while the next cell trains."""
    server = request.getfixturevalue(f"{app}_server")
    stem = f"{app}-dashboard"
    try:
        nb = Notebook(page, server, _write_notebook(server, "dashboard.ipynb", DASHBOARD_CELLS))
        dash_cell, fit_cell = nb.code_cells.nth(1), nb.code_cells.nth(2)
        nb.run_and_watch(dash_cell, artifacts, stem)

        frames, live = _live_frames(nb.frames(), nb.index_of(dash_cell))
        assert len(live) >= 2, (
            f"{app}: the dashboard showed {len(live)} distinct frame(s) while the fit cell ran, "
            f"expected at least 2; frames (seconds, status): {_timeline(frames)}")
        fit_outputs = fit_cell.locator(".jp-OutputArea-output")
        assert fit_outputs.count() == 0, (
            f"{app}: the training cell should have no output (the dashboard draws in its own cell): "
            f"{fit_outputs.all_text_contents()}")
        status = dash_cell.locator(".widget-html").first.text_content()
        assert "done" in status and "step 35, epoch 5" in status, (
            f"{app}: the dashboard's status line should say done at step 35, epoch 5: {status!r}")

        # Once the kernel is idle, the controls round-trip through it.
        image = dash_cell.locator("img.widget-image")
        _assert_not_upscaled(nb.show(image), app)
        before = image.get_attribute("src")
        nb.show(dash_cell.locator(".widget-toggle-button", has_text="share")).click()
        nb.wait(lambda: image.get_attribute("src") != before,
                "the dashboard to redraw after clicking 'share'", 60)
        nb.screenshots(dash_cell, artifacts / f"{stem}-share")
        nb.assert_clean(app)
    finally:
        server.save_log(artifacts / f"{stem}-server.log")
        server.shutdown_kernels()


def test_the_checks_see_stderr_errors_and_broken_widgets(lab_server, page, artifacts):
    """The error checks above must be able to fail: each one fires on a bad notebook.

    Guards against a JupyterLab update renaming what they look for, which would
    turn every check into a silent pass.
    """
    server, stem = lab_server, "lab-checks"
    bad_cells = [
        "import sys; print('e2e check: on stderr', file=sys.stderr)",
        # What the front-end shows for a widget whose model it cannot find.
        "from IPython.display import display\n"
        "display({'application/vnd.jupyter.widget-view+json':\n"
        "         {'model_id': 'no-such-model', 'version_major': 2, 'version_minor': 0}}, raw=True)",
        "raise ValueError('e2e check: an error')",
    ]
    kinds = ("error or stderr output: e2e check: on stderr",
             "error or stderr output: ---", "widget error: Error displaying widget")
    try:
        notebook = Notebook(page, server, _write_notebook(server, "checks.ipynb", bad_cells))
        notebook.run_all()
        deadline = time.monotonic() + 60  # the kernel is up: three tiny cells
        while True:
            seen = notebook.problems()
            missing = [kind for kind in kinds if not any(p.startswith(kind) for p in seen)]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert not missing, f"the checks did not see {missing}; they saw {seen}"
        assert any("ValueError: e2e check: an error" in p for p in seen), seen
        page.screenshot(path=str(artifacts / f"{stem}.png"))
    finally:
        server.save_log(artifacts / f"{stem}-server.log")
        server.shutdown_kernels()
