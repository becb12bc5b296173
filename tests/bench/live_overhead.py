"""Benchmark: how much does the live widget slow ``fit()`` down?

Runs plain ``fit()``, ``fit()`` with a recorder, and ``fit()`` with a recorder
plus a `LiveView` (rendering PNG frames into an ipywidgets Image, as in a
notebook) interleaved in one process, several rounds, and prints the median
ratio of each to plain ``fit()`` as a markdown table.

    KERAS_BACKEND=jax python tests/bench/live_overhead.py [--rounds 5] [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build(width):
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((32,))
    h = layers.Dense(width, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-4),
                     activity_regularizer=keras.regularizers.L1(1e-5))(inp)
    h = layers.Dense(width, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-4))(h)
    model = keras.Model(inp, layers.Dense(1)(h), name="bench")
    model.compile(optimizer="adam", loss="mse")
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0, help="target plain fit() time")
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    import loss_inspect as li
    from loss_inspect.widgets import LiveView

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 32)).astype("float32")
    y = rng.normal(size=(4096, 1)).astype("float32")
    fit = dict(batch_size=32, verbose=0)

    # Warm up (trace / compile) and size the run to about --seconds.
    model = build(args.width)
    model.fit(x, y, epochs=1, **fit)
    start = time.perf_counter()
    model.fit(x, y, epochs=1, **fit)
    epochs = max(1, round(args.seconds / (time.perf_counter() - start)))

    def run(kind):
        model = build(args.width)
        model.fit(x[:64], y[:64], epochs=1, **fit)  # compile outside the timing
        recorder = view = None
        if kind != "plain":
            recorder = li.attach(model)
            model.fit(x[:64], y[:64], epochs=1, **fit)  # retrace with the hook
        if kind == "live":
            view = LiveView(recorder)
            recorder.add_listener(view)
        start = time.perf_counter()
        model.fit(x, y, epochs=epochs, **fit)
        elapsed = time.perf_counter() - start
        renders = view.renders if view else 0
        if recorder:
            recorder.detach()
        return elapsed, renders

    times = {"plain": [], "recorder": [], "live": []}
    renders = []
    for _ in range(args.rounds):
        for kind in times:
            elapsed, n = run(kind)
            times[kind].append(elapsed)
            if kind == "live":
                renders.append(n)

    steps = epochs * len(x) // fit["batch_size"]
    print(f"Keras {keras.__version__}, backend {keras.backend.backend()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{steps} steps per fit, {args.rounds} rounds, interleaved\n")
    print("| fit() | median time | per step | median ratio to plain |")
    print("|---|---|---|---|")
    plain = times["plain"]
    for kind, label in (("plain", "plain"), ("recorder", "recorder attached"),
                        ("live", "recorder + live widget")):
        ratios = [t / p for t, p in zip(times[kind], plain)]
        median = statistics.median(times[kind])
        print(f"| {label} | {median:.2f} s | {1e3 * median / steps:.3f} ms | "
              f"{statistics.median(ratios):.3f}x |")
    print(f"\nlive widget frames per fit: {statistics.median(renders):.0f}")


if __name__ == "__main__":
    main()
