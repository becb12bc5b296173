"""Fit overhead, measured in one process for one Keras backend.

Run by `benchmark.py` as a child process with ``KERAS_BACKEND`` set (Keras
fixes its backend at import). Every configuration but the naive recorder
(which needs its own model class) runs on ONE model instance: the recorder
is attached before its fits and detached before the others. Two instances of
the same model can differ by several percent in step time on a 2-core CPU
(the earlier, per-configuration-instance design showed an A/A ratio of 1.13
on TensorFlow); one instance removes that bias. Attaching and detaching
retrace the train function, so each switch is followed by short settling
fits, and the plain fits run on a retraced function just like the recorder's.

A round runs every configuration once: the unattached group and the attached
group, in alternating order, each rotated by one per round; the first round
is a discarded warm-up. A ratio is a configuration's time over plain
``fit()``'s in the same round (the live widget's over a plain fit of its own,
longer, length); the benchmark reports the median of those ratios.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import statistics
import time
import traceback

import numpy as np

#: Configurations, in the order of the table.
#: "plain_again" is an A/A control: a second plain fit() in the same round.
#: Its ratio is the noise floor against which the other ratios must be read.
#: "plain_long" is plain fit() at the live widget's length (its reference).
CONFIGS = ("plain", "plain_again", "recorder", "plain_long", "live", "tensorboard",
           "livelossplot", "naive")
#: Configurations that run with the recorder attached.
ATTACHED = ("recorder", "live")
#: Ratio of each configuration is taken against this one.
REFERENCE = {"live": "plain_long"}

#: name -> (layer widths, input width, batch size, steps per epoch).
#: "tiny" is the issue's reference model; "mid" has a step of 10 ms or more on
#: a 2-core CPU on every backend. JAX is the fastest there; its step is mostly
#: the optimizer's fixed cost (AMD EPYC host: 6.6 ms at batch 64, 9.9 ms at
#: 128, both too short for the target), so the batch is 256.
MODELS = {
    "tiny": ((64, 64), 32, 32, 128),
    "mid": ((1024, 1024, 1024, 1024), 256, 256, 32),
}
MODEL_LABELS = {
    "tiny": "tiny MLP 32-64-64-1, batch 32, 128 steps/epoch",
    "mid": "mid MLP 256-1024-1024-1024-1024-1, batch 256, 32 steps/epoch",
}


def build(name, model_class=None):
    """The benchmark model: Dense layers with an L2 kernel regularizer each, an
    L1 activity regularizer on the first, a linear output, Adam and MSE."""
    import keras
    from keras import layers

    widths, in_dim, _, _ = MODELS[name]
    keras.utils.set_random_seed(0)
    inp = keras.Input((in_dim,))
    h = inp
    for i, width in enumerate(widths):
        h = layers.Dense(
            width, activation="relu", name=f"dense_{i}",
            kernel_regularizer=keras.regularizers.L2(1e-4),
            activity_regularizer=keras.regularizers.L1(1e-5) if i == 0 else None,
        )(h)
    out = layers.Dense(1, name="out")(h)
    if model_class is None:
        model = keras.Model(inp, out, name=name)
    else:
        # compiled loss + one kernel regularizer per hidden layer + one activity term
        model = model_class(inp, out, name=name, n_terms=len(widths) + 2)
    model.compile(optimizer="adam", loss="mse")
    return model


def data(name):
    _, in_dim, batch, steps = MODELS[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * steps, in_dim)).astype("float32")
    y = rng.normal(size=(batch * steps, 1)).astype("float32")
    return x, y, batch


def term_means_class():
    """The naive recorder of the issue: one ``keras.metrics.Mean`` per term.

    This is what a user writes without loss_inspect, as a model subclass: the
    stock ``compute_loss`` gives the total (training is unchanged), then the
    compiled part (total minus ``sum(self.losses)``) and each entry of
    ``self.losses`` (add_loss terms, activity and weight regularizers, in
    layer order) go into their own Mean metric. The metrics show up in
    ``fit()``'s logs and ``history`` as running per-epoch means
    ``term_0``, ``term_1``, ...: it records less than the recorder (no
    per-step values, terms known only by position), and no callback.
    """
    import keras
    from keras import ops

    class TermMeans(keras.Model):
        def __init__(self, *args, n_terms, **kwargs):
            super().__init__(*args, **kwargs)
            self.term_means = [keras.metrics.Mean(name=f"term_{i}") for i in range(n_terms)]

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                         training=True):
            total = super().compute_loss(x=x, y=y, y_pred=y_pred,
                                         sample_weight=sample_weight, training=training)
            extra = list(self.losses)
            compiled = total - ops.sum(ops.stack(extra)) if extra else total
            self.term_means[0].update_state(compiled)
            for mean, loss in zip(self.term_means[1:], extra):
                mean.update_state(loss)
            return total

    return TermMeans


class Bench:
    """The models of one measurement and what is attached to them around ``fit()``."""

    def __init__(self, model_name, tmp, x, y, batch):
        self.tmp = tmp
        self.x, self.y, self.batch = x, y, batch
        self.model = build(model_name)
        self.naive = build(model_name, term_means_class())
        self.recorder = None
        self.info = {}  # per-fit counters of the last fit, e.g. frames drawn
        self.switches = []  # seconds of attach/detach + settling fits
        from livelossplot import PlotLossesKeras  # noqa: F401 - imported before timing
        import keras

        keras.callbacks.TensorBoard  # noqa: B018 - resolved before timing

    def settle(self, model=None, fits=2):
        """Short fits after a (re)trace: compile, then let the step time settle."""
        n = 8 * self.batch
        for _ in range(fits):
            (model or self.model).fit(self.x[:n], self.y[:n], batch_size=self.batch,
                                      epochs=1, verbose=0)

    def set_attached(self, attached):
        """Attach or detach the recorder (a retrace either way), then settle."""
        if attached == (self.recorder is not None):
            return
        import loss_inspect as li

        start = time.perf_counter()
        if attached:
            # as in a %%losses cell: every step, nan="warn"
            self.recorder = li.attach(self.model, nan="warn")
        else:
            self.recorder.detach()
            self.recorder = None
        self.settle()
        self.switches.append(time.perf_counter() - start)

    def fit(self, kind, epochs):
        """One timed ``fit()`` of configuration ``kind``; its wall time in seconds."""
        if kind == "naive":
            model = self.naive
        else:
            model = self.model
            self.set_attached(kind in ATTACHED)
        callbacks, view, frames, out = [], None, [0], contextlib.nullcontext()
        self.info = {}
        if kind == "live":
            from loss_inspect.widgets import LiveView

            # As in %%losses: throttled frames during fit(), the final one
            # when the cell ends (timed apart below).
            view = LiveView(self.recorder, view="stack", phase="train", final_in_fit=False)
            drawing = _time_updates(view)
            self.recorder.add_listener(view)
        elif kind == "tensorboard":
            import keras

            callbacks = [keras.callbacks.TensorBoard(
                log_dir=os.path.join(self.tmp, f"tb_{time.monotonic_ns()}"),
                update_freq="batch")]
        elif kind == "livelossplot":
            callbacks = [_plot_losses_keras(frames)]
            out = contextlib.redirect_stdout(io.StringIO())  # its ExtremaPrinter text
        gc.collect()
        with out:
            faults = _minor_page_faults()
            start = time.perf_counter()
            model.fit(self.x, self.y, batch_size=self.batch, epochs=epochs, verbose=0,
                      callbacks=callbacks)
            elapsed = time.perf_counter() - start
            faults = _minor_page_faults() - faults
        if view is not None:
            self.recorder.remove_listener(view)
            in_fit = (view.renders, drawing[0])
            final_start = time.perf_counter()
            view.update(final=True)
            final_s = time.perf_counter() - final_start
            if not view.image.value:
                raise RuntimeError("LiveView drew no PNG")
            self.info = {"frames": in_fit[0], "drawing_s": in_fit[1], "final_s": final_s,
                         "png_bytes": len(view.image.value)}
            view.close()
        elif kind == "livelossplot":
            self.info = {"frames": frames[0]}
        self.info["page_faults"] = faults
        return elapsed

    def close(self):
        if self.recorder is not None:
            self.recorder.detach()


def _minor_page_faults():
    """Minor page faults of this process so far (NaN where ``resource`` is missing).

    Reported per step with every row: a large torch step's time depends on
    how many of its big buffers the allocator maps fresh from the kernel
    (see ``benchmark.MALLOC_ENV``), and a count that differs between two rows
    explains a ratio that the recorder's own work does not.
    """
    try:
        import resource
    except ImportError:
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _time_updates(view):
    """Sum the wall time of ``view.update`` calls (the listener calls it per execution)."""
    total = [0.0]
    update = view.update

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return update(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - start

    view.update = timed
    return total


def _plot_losses_keras(frames):
    """livelossplot's ``PlotLossesKeras`` with its default outputs, drawn as in a notebook.

    Its default ``MatplotlibPlot`` makes a new pyplot figure per epoch and
    ends with ``plt.show()`` (notebook mode) or ``plt.pause(0.1)`` (script
    mode: a 0.1 s sleep per epoch, which would dominate). Without a kernel,
    ``plt.show()`` under Agg draws nothing and leaks the figure, so the
    ``after_plots`` hook does what the inline backend's ``show()`` does in a
    notebook: render the figure to PNG (`IPython.core.pylabtools.print_figure`,
    ``bbox_inches="tight"``) and close it.
    """
    import matplotlib.pyplot as plt
    from IPython.core.pylabtools import print_figure
    from livelossplot import PlotLossesKeras
    from livelossplot.outputs import ExtremaPrinter, MatplotlibPlot

    def render_like_inline(fig):
        fig.tight_layout()  # MatplotlibPlot's own default after_plots step
        png = print_figure(fig, "png")
        plt.close(fig)
        if png:
            frames[0] += 1

    outputs = [MatplotlibPlot(after_plots=render_like_inline), ExtremaPrinter()]
    return PlotLossesKeras(outputs=outputs, mode="notebook")


def measure(model_name, rounds, seconds, live_seconds, tmp, log):
    """Warm up, then run ``rounds`` interleaved rounds (plus a discarded one)."""
    import keras

    x, y, batch = data(model_name)
    steps_per_epoch = len(x) // batch
    start = time.perf_counter()
    bench = Bench(model_name, tmp, x, y, batch)
    bench.settle(bench.naive)
    bench.settle()
    one_epoch = min(bench.fit("plain", 1) for _ in range(2))
    epochs = max(1, round(seconds / one_epoch))
    kinds = [k for k in CONFIGS if live_seconds or k not in ("plain_long", "live")]
    lengths = {k: epochs for k in kinds}
    if live_seconds:
        # Long enough for the throttled widget to draw several frames.
        lengths["plain_long"] = lengths["live"] = max(epochs, round(live_seconds / one_epoch))
    log(f"  {model_name}: warm-up {time.perf_counter() - start:.0f} s; plain epoch "
        f"{one_epoch:.2f} s -> {epochs} epochs ({epochs * steps_per_epoch} steps) per "
        f"fit, {rounds} rounds" + (f"; live fits {lengths['live']} epochs" if live_seconds else ""))

    times = {kind: [] for kind in kinds}
    info = {kind: [] for kind in kinds}
    errors = {}
    # Round 0 runs every configuration at the timed length and is discarded.
    for r in range(rounds + 1):
        unattached = [k for k in kinds if k not in ATTACHED and k not in errors]
        attached = [k for k in kinds if k in ATTACHED and k not in errors]
        first, second = _rotate(unattached, r), _rotate(attached, r)
        if r % 2:
            first, second = second, first
        done = []
        for kind in first + second:
            try:
                elapsed = bench.fit(kind, lengths[kind])
            except Exception as exc:  # reported in the table, never hidden
                errors[kind] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                log(f"  {kind}: failed in round {r}: {errors[kind]}")
                log("".join(traceback.format_exc(limit=-3)))
                continue
            done.append(f"{kind} {elapsed:.2f}s")
            if r:
                times[kind].append((r, elapsed))
                info[kind].append(bench.info)
        log(f"  {model_name} round {r}/{rounds}{' (warm-up)' if not r else ''}: "
            + ", ".join(done))
    bench.close()

    steps = epochs * steps_per_epoch
    result = {"model": model_name, "label": MODEL_LABELS[model_name], "epochs": epochs,
              "steps_per_fit": steps, "rounds": rounds, "configs": {},
              "switch_s": statistics.median(bench.switches) if bench.switches else None}
    for kind in CONFIGS:
        entry = {"error": errors.get(kind)}
        if kind not in kinds:
            entry["error"] = "not measured for this model"
        elif times[kind]:  # a config that failed mid-run keeps its earlier rounds
            ref = dict(times[REFERENCE.get(kind, "plain")])
            ratios = [t / ref[r] for r, t in times[kind] if r in ref]
            seconds_ = [t for _, t in times[kind]]
            frames = [i["frames"] for i in info[kind] if "frames" in i]
            drawing = [i["drawing_s"] for i in info[kind] if "drawing_s" in i]
            final = [i["final_s"] for i in info[kind] if "final_s" in i]
            faults = [i["page_faults"] for i in info[kind] if "page_faults" in i]
            entry.update(
                times=seconds_, ratios=ratios,
                median_ratio=statistics.median(ratios) if ratios else None,
                steps_per_fit=lengths[kind] * steps_per_epoch,
                step_ms=1e3 * statistics.median(seconds_) / (lengths[kind] * steps_per_epoch),
                frames=statistics.median(frames) if frames else None,
                drawing_s=statistics.median(drawing) if drawing else None,
                final_s=statistics.median(final) if final else None,
                page_faults_per_step=(statistics.median(faults)
                                      / (lengths[kind] * steps_per_epoch)) if faults else None,
            )
            if entry["median_ratio"] is None:
                del entry["median_ratio"]
        result["configs"][kind] = entry
    keras.backend.clear_session()
    return result


def _rotate(items, r):
    if not items:
        return items
    shift = r % len(items)
    return items[shift:] + items[:shift]


def run(models, rounds, seconds, live_seconds, tmp, log):
    """Every model of ``models``; returns the JSON-able results of this backend."""
    import keras

    out = {"backend": keras.backend.backend(), "results": []}
    for name in models:
        out["results"].append(measure(name, rounds, seconds[name],
                                      live_seconds.get(name), tmp, log))
    return out
