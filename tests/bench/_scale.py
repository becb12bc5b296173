"""Memory and scale measurements of `benchmark.py`, each in its own child process.

- `history_memory_and_redraw`: a `LossHistory` of 1,000,000 records x 16
  terms built through its own append path (as the recorder fills it), its
  memory (tracemalloc) and the widget's redraw time of it.
- `torch_memory`: resident memory over 10,000 torch train steps of a model
  with large activations under `loss_inspect.attach` (no autograd graph may
  be retained).
- `IMPORT_CODE` / `LOAD_EXT_CODE`: run with ``python -c`` in fresh processes.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc

import numpy as np

HEAVY = ("keras", "jax", "tensorflow", "torch", "matplotlib", "ipywidgets")

# Timed in a fresh process: `import loss_inspect`, then which heavy modules it pulled in.
IMPORT_CODE = f"""
import json, sys, time
start = time.perf_counter()
import loss_inspect
elapsed = time.perf_counter() - start
print(json.dumps({{"seconds": elapsed,
                  "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""

# Timed in a fresh process: `%load_ext loss_inspect` in a real InteractiveShell
# (IPython itself is imported and started before the clock starts).
LOAD_EXT_CODE = f"""
import json, sys, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
assert "loss_inspect" not in sys.modules
start = time.perf_counter()
shell.run_line_magic("load_ext", "loss_inspect")
elapsed = time.perf_counter() - start
print(json.dumps({{"seconds": elapsed,
                  "heavy": [m for m in {HEAVY!r} if m in sys.modules],
                  "magics": "losses" in shell.magics_manager.magics["cell"]}}))
"""


def _build_history(records, n_terms, block, steps_per_epoch):
    """Fill a LossHistory the way the recorder does: blocks of float32 device rows."""
    from loss_inspect.history import LossHistory, Term

    history = LossHistory()
    terms = [Term("compiled", "compiled")] + [
        Term(f"regularizer:big/dense_{i}/kernel", "regularizer", layer=f"big/dense_{i}/kernel")
        for i in range(n_terms - 1)
    ]
    cols = np.array([history._add_term(t) for t in terms], dtype=np.intp)
    rng = np.random.default_rng(0)
    scale = np.geomspace(1.0, 1e-3, n_terms)  # terms of different sizes
    for start in range(0, records, block):
        k = min(block, records - start)
        steps = np.arange(start + 1, start + k + 1)
        # loss-like values: a slow decay times noise, float32 as the device sends them
        decay = 1.0 / (1.0 + steps[:, None] / 1e5)
        values = (scale * decay * rng.uniform(0.5, 1.5, (k, n_terms))).astype(np.float32)
        values = values.astype(np.float64)
        history._append(0, steps, (steps - 1) // steps_per_epoch, np.full(k, 32.0),
                        values.sum(axis=1), cols, values)
    return history


def history_memory_and_redraw(records=1_000_000, n_terms=16, block=1000,
                              steps_per_epoch=5000, repeats=5):
    """Memory of a big history (tracemalloc) and the widget's redraw time of it."""
    import matplotlib

    matplotlib.use("Agg")
    import loss_inspect.history  # noqa: F401 - imported before the measurement

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    history = _build_history(records, n_terms, block, steps_per_epoch)
    build_s = time.perf_counter() - start
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    nbytes = getattr(history, "nbytes", None)
    memory = {
        "records": records, "terms": n_terms, "block": block,
        "rows": len(history), "records_held": getattr(history, "records", len(history)),
        "tracemalloc_mb": (current - before) / 1e6, "peak_mb": (peak - before) / 1e6,
        "nbytes_mb": None if nbytes is None else nbytes / 1e6, "build_s": build_s,
    }
    return {"history_memory": memory, "redraw": _redraw(history, repeats)}


def _redraw(history, repeats):
    """Time `LiveView.update` on ``history``, exactly what the widget does per frame.

    A stub stands in for the recorder (the view reads ``history`` and
    ``_model_name``); ``final=True, force=True`` skips the throttle. The parts:
    `plot_history` into the reused figure and `figure_to_png(fast=True)`.
    """
    from types import SimpleNamespace

    from loss_inspect import plotting
    from loss_inspect.widgets import LiveView

    view = LiveView(SimpleNamespace(history=history, _model_name="big"))

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    first = timed(lambda: view.update(final=True, force=True))
    frames = [timed(lambda: view.update(final=True, force=True)) for _ in range(repeats)]
    figure = plotting.plot_history(history)
    plot = [timed(lambda: plotting.plot_history(history, figure=figure))
            for _ in range(repeats)]
    png = [timed(lambda: plotting.figure_to_png(figure, dpi=view.dpi, fast=True))
           for _ in range(repeats)]
    result = {
        "first_ms": 1e3 * first, "median_ms": 1e3 * statistics.median(frames),
        "plot_ms": 1e3 * statistics.median(plot), "png_ms": 1e3 * statistics.median(png),
        "renders": view.renders, "png_bytes": len(view.image.value), "repeats": repeats,
    }
    view.close()
    return result


def torch_memory(steps=10_000, sample_every=1000, limit_mb=3000, max_seconds=300):
    """RSS every ``sample_every`` steps of a torch fit under `attach` (large activations).

    Three parallel 1024-wide Dense branches with activity regularizers, batch
    64: each step makes about 1.5 MB of activations and gradients, so a
    retained autograd graph would grow the process by gigabytes. The fit
    stops early (and says so) if RSS grows by more than ``limit_mb`` (to
    spare a shared machine) or after ``max_seconds``.
    """
    import keras
    import psutil
    from keras import layers

    import loss_inspect as li

    if keras.backend.backend() != "torch":
        raise RuntimeError("torch_memory needs KERAS_BACKEND=torch")
    keras.utils.set_random_seed(0)
    inp = keras.Input((32,))
    branches = [
        layers.Dense(1024, activation="relu", name=f"wide_{i}",
                     activity_regularizer=keras.regularizers.L1(1e-6),
                     kernel_regularizer=keras.regularizers.L2(1e-5))(inp)
        for i in range(3)
    ]
    h = layers.Concatenate()(branches)
    model = keras.Model(inp, layers.Dense(1)(h), name="wide")
    model.compile(optimizer="adam", loss="mse")
    batch = 64
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * sample_every, 32)).astype("float32")
    y = rng.normal(size=(batch * sample_every, 1)).astype("float32")
    process = psutil.Process()
    samples, stopped = [], []

    class Sample(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            gc.collect()
            rss = process.memory_info().rss / 1e6
            samples.append(((epoch + 1) * sample_every, rss))
            if rss - samples[0][1] > limit_mb:
                stopped.append(f"RSS grew by more than {limit_mb} MB")
            elif time.perf_counter() - start > max_seconds:
                stopped.append(f"time limit of {max_seconds} s")
            self.model.stop_training = bool(stopped)

    start = time.perf_counter()
    with li.attach(model) as recorder:
        model.fit(x, y, batch_size=batch, epochs=max(1, steps // sample_every),
                  verbose=0, shuffle=False, callbacks=[Sample()])
        records = recorder.history.records if hasattr(recorder.history, "records") \
            else len(recorder.history)
    elapsed = time.perf_counter() - start
    rss = [mb for _, mb in samples]
    return {
        "steps": samples[-1][0], "steps_wanted": steps, "seconds": elapsed,
        "samples": samples, "first_mb": rss[0], "last_mb": rss[-1], "max_mb": max(rss),
        "growth_mb": rss[-1] - rss[0], "records": int(records),
        "stopped_early": stopped[0] if stopped else None,
    }
