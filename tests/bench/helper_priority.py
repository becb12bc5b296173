"""What a drawing helper process costs training, at normal and at lowest priority.

The live view's frames are drawn by a helper process
(`loss_inspect._render_process`), which lowers its own priority
(``NICENESS``). This diagnostic shows why, with the real helper and a real
``fit()``: two helpers are started, one at niceness 0 and one at the
shipped niceness, and fits of the benchmark's tiny model take turns, each
with a callback that keeps one helper drawing a real frame (3,840 records)
without pause, or with no helper drawing (the callback still runs, minus the
submit). Each mode's median fit time is compared with the undisturbed one,
and the time training lost is divided by the CPU time the helper spent
drawing: ~0 when the helper only used a core that training left idle, 1 or
more when each of its CPU seconds cost training a second.

The live view draws at most 1 % of the time (its pacing), so its cost to
training is about 1 % times the loss per helper second measured here.

    KERAS_BACKEND=torch python tests/bench/helper_priority.py [--seconds 60]

A diagnostic: it measures and prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _overhead  # noqa: E402 - sibling module

VIEW = 1


def frame_of_a_run(n_records=3_840, n_terms=4):
    """A reduced frame of a history like a tiny fit's (what a view sends)."""
    from loss_inspect import plotting
    from loss_inspect.history import PHASES, LossHistory, Term

    history = LossHistory()
    columns = [history._add_term(Term(f"add_loss:m/l{i}", "add_loss", layer=f"m/l{i}"))
               for i in range(n_terms)]
    values = np.random.default_rng(0).random((n_records, n_terms)) + 1.0
    history._append(PHASES.index("train"), np.arange(1, n_records + 1),
                    np.arange(n_records) // 128, np.full(n_records, 32.0),
                    values.sum(axis=1), np.asarray(columns, dtype=np.intp), values)
    return plotting.prepare_frame(history, title="tiny").reduced()


def helper_at(niceness):
    """A real helper process whose niceness is raised by ``niceness``."""
    from loss_inspect import _render_process

    code = ("from loss_inspect import _render_process as r; "
            f"r.NICENESS = {niceness}; r.main()")
    return _render_process.RenderProcess([sys.executable, "-c", code])


def keep_drawing(helper, frame, tally):
    """A callback: whenever the helper's last frame is back, ask for the next."""
    import keras

    class KeepDrawing(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if helper is None:
                return
            reply = helper.take(VIEW)
            if reply is not None:
                tally["frames"] += 1
                tally["cpu_s"] += reply.seconds
            if reply is not None or not tally["in_flight"]:
                tally["in_flight"] = True
                tally["sequence"] += 1
                helper.submit(VIEW, tally["sequence"], frame, dpi=80)

    return KeepDrawing()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="time for the timed rounds, all modes together")
    parser.add_argument("--fit-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)

    import keras
    from loss_inspect import _render_process

    model = _overhead.build("tiny")
    x, y, batch = _overhead.data("tiny")
    model.fit(x, y, batch_size=batch, epochs=2, verbose=0)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=2, verbose=0)
    epochs = max(1, round(2 * args.fit_seconds / (time.perf_counter() - start)))
    frame = frame_of_a_run()
    shipped = _render_process.NICENESS
    helpers = {"no helper drawing": None, "helper at niceness 0": helper_at(0),
               f"helper at niceness {shipped} (shipped)": helper_at(shipped)}
    tallies = {mode: {"frames": 0, "cpu_s": 0.0, "in_flight": False, "sequence": 0}
               for mode in helpers}
    fits = {mode: [] for mode in helpers}
    modes = list(helpers)
    deadline = time.perf_counter() + args.seconds
    rounds = 0
    try:
        while time.perf_counter() < deadline or rounds < 2:
            for mode in (modes if rounds % 2 else modes[::-1]):
                tally = tallies[mode]
                callback = keep_drawing(helpers[mode], frame, tally)
                if helpers[mode] is not None:  # let the last fit's frame come back
                    time.sleep(0.5)
                    helpers[mode].take(VIEW)
                    tally["in_flight"] = False
                frames_before, cpu_before = tally["frames"], tally["cpu_s"]
                start = time.perf_counter()
                model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0,
                          callbacks=[callback])
                wall = time.perf_counter() - start
                fits[mode].append((wall, tally["frames"] - frames_before,
                                   tally["cpu_s"] - cpu_before))
            rounds += 1
    finally:
        for helper in helpers.values():
            if helper is not None:
                helper.close()

    base = statistics.median(wall for wall, _, _ in fits[modes[0]])
    print(f"backend {keras.backend.backend()}, tiny model, {epochs} epochs per fit, "
          f"{rounds} rounds; median fit with no helper drawing {base:.3f} s\n")
    print("| mode | median fit | over no helper (rounds) | frames per fit "
          "| helper CPU per fit | training time lost per helper CPU second |")
    print("|---|---|---|---|---|---|")
    for mode in modes:
        wall = statistics.median(w for w, _, _ in fits[mode])
        frames = statistics.median(f for _, f, _ in fits[mode])
        cpu = statistics.median(c for _, _, c in fits[mode])
        ratios = [w / b for (w, _, _), (b, _, _) in zip(fits[mode], fits[modes[0]])]
        # The loss per CPU second is noise over a denominator near 0 where
        # the helper got little CPU: given only from 5 % of a core on.
        lost = f"{(wall - base) / cpu:.2f} s" if cpu >= 0.05 * wall else (
            "— (the helper got < 5 % of a core)" if cpu > 0 else "—")
        print(f"| {mode} | {wall:.3f} s | {wall / base:.3f}× ({min(ratios):.3f}–"
              f"{max(ratios):.3f}) | {frames:g} | {cpu:.3f} s | {lost} |")


if __name__ == "__main__":
    main()
