"""The recorder's overhead, resolved below 1 %: many short paired fits.

Why a second design. On a shared 2-core CPU one ``fit()`` of the mid model
runs several percent faster or slower than the next whatever is attached:
the standard deviation of the log ratio of two adjacent, identical fits was
0.04 to 0.30 (by backend and host load), and on JAX it was 0.07 for fits of
4, 8 and 32 steps alike: the noise is per ``fit()``, not per step. The
rounds of `_overhead.py` (a handful of long fits, a retrace at each attach)
cannot resolve the issue's 1 % target against that. What resolves it is
many short pairs: the standard error of a median falls with the square root
of the number of pairs, and 8-step fits give several hundred pairs a minute.

Design (per backend, in one process):

* Two instances A and B of the model, built alike (same seed, so the
  same weights) and warmed up; nothing is retraced while pairs run.
* Each pair times one ``fit()`` of each instance on the same batches (8
  of the mid model, 128 of the tiny one), back to back, the order
  alternating from pair to pair.
* Phase "A/A": nothing attached; ``log(t_B / t_A)`` is the noise floor and
  B's bias against A (two instances of one model can differ in speed). The
  report counts no pass when its interval and that of the crossover's bias
  estimate do not overlap (`_report.paired_verdict`).
* Phase 1: the recorder attached to B (``li.attach(B, nan="warn")``, every
  step recorded); ``log(t_B / t_A)`` is overhead + bias.
* Phase 2: the recorder moved to A; ``log(t_A / t_B)`` is overhead − bias.
* The three phases run in turn, three times over (`CYCLES`), so that the
  host's drift over the run and a change in one instance's speed fall on
  every phase alike; each attach retraces and is followed by settling fits.
* The overhead is ``exp((m1 + m2) / 2)``, where ``m`` is a phase's median
  log ratio: a crossover, so the instances' bias cancels. Its 95 % interval
  comes from a bootstrap over the pairs of both phases.

The recorder's per-``fit()`` work (its fit wrapper, the epoch-end callback,
the read of the device buffer when ``fit()`` returns) weighs four to
twelve times as much in the mid model's 8-step fits as in its 32- to
96-step fits of the main table, so that estimate errs on the recorder's side.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import statistics
import time
import types

import numpy as np

import _overhead  # sibling module (tests/bench is on the path, as for _report)

#: Batches per fit(), per model: short, so that many pairs fit in the time
#: given, but long enough that Keras's own per-fit setup (a few ms) does not
#: dilute the steps: 8 steps of the mid model, one 128-step epoch of the tiny one.
STEPS_PER_FIT = {"tiny": 128, "mid": 8}
#: Other fit lengths measured on the tiny model, as (steps per epoch, epochs):
#: "one-step" fits weigh the recorder's fixed cost per ``fit()`` (its fit
#: wrapper, epoch callback, the read when ``fit()`` returns) against Keras's
#: own, and give it in µs; "long" fits (16 epochs) are what a user's fit()
#: of that model sees when it is not one epoch long. Only on JAX, where the
#: fit's length changes the ratio (Keras's thread-pool batch ends; see
#: docs/performance.md); on TensorFlow and torch a pair of long fits takes
#: seconds, too few pairs for an interval.
FIT_LENGTHS = {"short": None, "one-step": (1, 1), "long": (128, 16)}


def runs(model_name, backend):
    """``(fit_length, batch_end_workers)`` of each run for ``model_name`` on ``backend``.

    JAX's tiny model is also measured with Keras's batch-end thread pool held
    at one worker (`batch_end_workers`), plain and attached fits alike: a
    diagnostic, not a user's setting. On this 2-core host the pool Keras
    starts for every ``fit()`` grows to 2-6 workers in a 1-epoch JAX fit, and
    how far it grows (the recorder's steps finish later, so it grows further)
    moves a tiny fit's time by up to 80 %; held at one worker, what remains is
    the recorder's own cost. See docs/performance.md.
    """
    if model_name != "tiny":
        return [("short", None)]
    lengths = [("short", None), ("one-step", None)]
    if backend == "jax":
        lengths += [("long", None), ("short", 1), ("long", 1)]
    return lengths


@contextlib.contextmanager
def batch_end_workers(count):
    """Keras's batch-end thread pool held at ``count`` workers (None: as Keras has it).

    Keras 3 (`keras.src.callbacks.callback_list`) starts a
    ``concurrent.futures.ThreadPoolExecutor()`` in each ``fit()`` whose
    callbacks allow asynchronous batch ends; this hands it one with
    ``max_workers=count``. Yields a list that counts the pools made, so that
    a run can prove the hold took effect (a Keras that makes its pool some
    other way would otherwise be measured unheld without a word).
    """
    made = []
    if count is None:
        yield made
        return
    from keras.src.callbacks import callback_list

    def pool():
        made.append(count)
        return concurrent.futures.ThreadPoolExecutor(max_workers=count)

    saved = callback_list.concurrent
    callback_list.concurrent = types.SimpleNamespace(
        futures=types.SimpleNamespace(ThreadPoolExecutor=pool))
    try:
        yield made
    finally:
        callback_list.concurrent = saved


#: The three phases run in this many cycles (A/A, recorder on B, recorder on
#: A, again and again), so that a drift of the host or of one instance's
#: speed over the run falls on all three alike.
CYCLES = 3
#: Fits of each instance after building and after each attach (compile, settle).
SETTLE_FITS = 3
PHASE_TEXT = {"aa": "A/A B/A", "one": "recorder on B: B/A", "two": "recorder on A: A/B"}
#: Bootstrap resamples for the 95 % interval.
RESAMPLES = 2000


def measure(model_name, seconds_per_phase, log, fit_length="short", workers=None):
    """Run the three phases, in `CYCLES` cycles, on ``model_name``; a JSON-able dict.

    ``fit_length``: a key of `FIT_LENGTHS` ("short": `STEPS_PER_FIT`, one epoch).
    ``workers``: Keras's batch-end pool held at this many workers
    (`batch_end_workers`); None leaves it as Keras makes it.
    """
    with batch_end_workers(workers) as pools:
        result = _measure(model_name, seconds_per_phase, log, fit_length, workers)
    if workers is not None and not pools:
        raise RuntimeError(
            f"Keras made no batch-end thread pool through keras.src.callbacks."
            f"callback_list.concurrent: the {workers}-worker hold had no effect "
            f"(this Keras makes its pool another way; update _paired.batch_end_workers).")
    result["batch_end_workers"] = workers
    return result


def _measure(model_name, seconds_per_phase, log, fit_length, workers):
    import loss_inspect as li

    steps_per_epoch, epochs = FIT_LENGTHS[fit_length] or (STEPS_PER_FIT[model_name], 1)
    steps_per_fit = steps_per_epoch * epochs
    x, y, batch = _overhead.data(model_name)
    n = steps_per_epoch * batch
    x, y = x[:n], y[:n]
    models = {"A": _overhead.build(model_name), "B": _overhead.build(model_name)}

    def fit(name):
        start = time.perf_counter()
        models[name].fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
        return time.perf_counter() - start

    def settle():
        for _ in range(SETTLE_FITS):
            fit("A"), fit("B")

    def pairs(numerator, seconds):
        """log(t_numerator / t_other) per pair, for ``seconds``; and t_other."""
        other = "A" if numerator == "B" else "B"
        logs, fit_s = [], []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            order = (numerator, other) if len(logs) % 2 else (other, numerator)
            t = {name: fit(name) for name in order}
            logs.append(float(np.log(t[numerator] / t[other])))
            fit_s.append(t[other])
        return np.array(logs), fit_s

    phases = {"aa": ([], []), "one": ([], []), "two": ([], [])}  # log ratios, fit s
    steps_recorded = steps_expected = 0
    settle()
    for cycle in range(CYCLES):
        for phase, attached, numerator in (("aa", None, "B"), ("one", "B", "B"),
                                           ("two", "A", "A")):
            recorder = li.attach(models[attached], nan="warn") if attached else None
            if recorder is not None:
                settle()
            logs, fit_s = pairs(numerator, seconds_per_phase / CYCLES)
            phases[phase][0].extend(logs)
            phases[phase][1].extend(fit_s)
            if recorder is not None:
                steps_recorded += recorder.history.records
                steps_expected += steps_per_fit * (SETTLE_FITS + len(logs))
                recorder.detach()
        held = "" if workers is None else f", {workers}-worker batch-end pool"
        log(f"  {model_name} paired ({fit_length}{held}), cycle {cycle + 1}/{CYCLES}: " + ", ".join(
            f"{PHASE_TEXT[k]} {np.exp(np.median(v[0])):.4f} ({len(v[0])} pairs)"
            for k, v in phases.items()))
    (aa, aa_fit), (one, one_fit), (two, two_fit) = (
        (np.array(v[0]), v[1]) for v in phases.values())

    rng = np.random.default_rng(0)
    overhead = crossover(one, two)
    interval = bootstrap_interval(rng, crossover, one, two)
    aa_interval = bootstrap_interval(rng, median_ratio, aa)
    bias_interval = bootstrap_interval(rng, bias, one, two)
    plain_fit_s = statistics.median(aa_fit + one_fit + two_fit)
    result = {
        "model": model_name,
        "fit_length": fit_length,
        "epochs": epochs,
        "steps_per_fit": steps_per_fit,
        "plain_fit_ms": 1e3 * plain_fit_s,
        "pairs": [len(aa), len(one), len(two)],
        "plain_step_ms": 1e3 * plain_fit_s / steps_per_fit,
        "aa_ratio": median_ratio(aa),
        "aa_interval": aa_interval,
        "aa_log_sd": float(np.std(aa)),
        "bias": bias(one, two),
        "bias_interval": bias_interval,
        "ratio": overhead,
        "interval": interval,
        "steps_recorded": steps_recorded,
        "steps_expected": steps_expected,
    }
    return result


def crossover(one, two) -> float:
    """The recorder's ratio with the instances' bias cancelled (see module docstring)."""
    return float(np.exp((np.median(one) + np.median(two)) / 2))


def bias(one, two) -> float:
    """B's speed over A's that the crossover cancels (what the A/A phase should read)."""
    return float(np.exp((np.median(one) - np.median(two)) / 2))


def median_ratio(logs) -> float:
    """The median pair's ratio, from its log ratios."""
    return float(np.exp(np.median(logs)))


def bootstrap_interval(rng, statistic, *phases) -> list[float]:
    """95 % interval of ``statistic(*phases)``, resampling each phase's pairs."""
    estimates = [statistic(*(rng.choice(phase, len(phase)) for phase in phases))
                 for _ in range(RESAMPLES)]
    return [float(v) for v in np.percentile(estimates, [2.5, 97.5])]
