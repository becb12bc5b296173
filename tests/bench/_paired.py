"""The recorder's overhead on the mid model, resolved below 1 %: many short paired fits.

Why a second design. On a shared 2-core CPU one ``fit()`` of the mid model
runs several percent faster or slower than the next whatever is attached:
the standard deviation of the log ratio of two adjacent, identical fits was
0.04 to 0.18 (by backend and host load), and on JAX it was 0.07 for fits of
4, 8 and 32 steps alike: the noise is per ``fit()``, not per step. The rounds of `_overhead.py` (a handful of long
fits, a retrace at each attach) cannot resolve the issue's 1 % target
against that. What resolves it is many short pairs: the standard error of a
mean falls with the square root of the number of pairs, and 8-step fits give
several hundred pairs a minute.

Design (per backend, in one process):

* Two instances A and B of the mid model, built alike (same seed, so the
  same weights) and warmed up; nothing is retraced while pairs run.
* Each pair times one ``fit()`` of each instance on the same 8 batches,
  back to back, the order alternating from pair to pair.
* Phase "A/A": nothing attached; ``log(t_B / t_A)`` is the noise floor and
  B's bias against A (two instances of one model can differ in speed).
* Phase 1: the recorder attached to B (``li.attach(B, nan="warn")``, every
  step recorded); ``log(t_B / t_A)`` is overhead + bias.
* Phase 2: the recorder moved to A; ``log(t_A / t_B)`` is overhead − bias.
* The overhead is ``exp((m1 + m2) / 2)``, where ``m`` is a phase's median
  log ratio: a crossover, so the instances' bias cancels. Its 95 % interval
  comes from a bootstrap over the pairs of both phases.

The recorder's per-``fit()`` work (its fit wrapper, the epoch-end callback,
the read of the device buffer when ``fit()`` returns) weighs four to
sixteen times as much in these 8-step fits as in the 32- to 128-step fits of
the main table, so the estimate errs on the recorder's side.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

#: Batches per fit(): short, so that many pairs fit in the time given.
STEPS_PER_FIT = 8
#: Bootstrap resamples for the 95 % interval.
RESAMPLES = 2000


def measure(model_name, seconds_per_phase, log):
    """Run the three phases on ``model_name``; a JSON-able result dict."""
    import _overhead  # sibling module; imported here as benchmark.py imports us
    import loss_inspect as li

    x, y, batch = _overhead.data(model_name)
    n = STEPS_PER_FIT * batch
    x, y = x[:n], y[:n]
    models = {"A": _overhead.build(model_name), "B": _overhead.build(model_name)}

    def fit(name):
        start = time.perf_counter()
        models[name].fit(x, y, batch_size=batch, epochs=1, verbose=0)
        return time.perf_counter() - start

    def settle():
        for _ in range(3):
            fit("A"), fit("B")

    def pairs(numerator, seconds):
        """log(t_numerator / t_other) per pair, for ``seconds``."""
        other = "A" if numerator == "B" else "B"
        logs, fit_s = [], []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            order = (numerator, other) if len(logs) % 2 else (other, numerator)
            t = {name: fit(name) for name in order}
            logs.append(float(np.log(t[numerator] / t[other])))
            fit_s.append(t[other])
        return np.array(logs), fit_s

    start = time.perf_counter()
    settle()
    aa, aa_fit = pairs("B", seconds_per_phase)
    log(f"  {model_name} paired A/A: {len(aa)} pairs, B/A {np.exp(np.median(aa)):.4f}")

    recorder = li.attach(models["B"], nan="warn")
    settle()
    one, one_fit = pairs("B", seconds_per_phase)
    steps_recorded = recorder.history.records
    recorder.detach()
    log(f"  {model_name} paired, recorder on B: {len(one)} pairs, "
        f"B/A {np.exp(np.median(one)):.4f}")

    recorder = li.attach(models["A"], nan="warn")
    settle()
    two, two_fit = pairs("A", seconds_per_phase)
    steps_recorded += recorder.history.records
    recorder.detach()
    log(f"  {model_name} paired, recorder on A: {len(two)} pairs, "
        f"A/B {np.exp(np.median(two)):.4f}")

    rng = np.random.default_rng(0)
    overhead = crossover(one, two)
    boot = [crossover(rng.choice(one, len(one)), rng.choice(two, len(two)))
            for _ in range(RESAMPLES)]
    aa_boot = [float(np.exp(np.median(rng.choice(aa, len(aa))))) for _ in range(RESAMPLES)]
    plain_fit_s = statistics.median(aa_fit + one_fit + two_fit)
    result = {
        "model": model_name,
        "steps_per_fit": STEPS_PER_FIT,
        "seconds_per_phase": seconds_per_phase,
        "pairs": [len(aa), len(one), len(two)],
        "plain_step_ms": 1e3 * plain_fit_s / STEPS_PER_FIT,
        "aa_ratio": float(np.exp(np.median(aa))),
        "aa_interval": [float(v) for v in np.percentile(aa_boot, [2.5, 97.5])],
        "aa_log_sd": float(np.std(aa)),
        "bias": float(np.exp((np.median(one) - np.median(two)) / 2)),
        "ratio": overhead,
        "interval": [float(v) for v in np.percentile(boot, [2.5, 97.5])],
        "log_sd": float(np.std(np.concatenate([one, two]))),
        "steps_recorded": steps_recorded,
        "steps_expected": STEPS_PER_FIT * (3 + len(one) + 3 + len(two)),
        "seconds": time.perf_counter() - start,
    }
    return result


def crossover(one, two) -> float:
    """The recorder's ratio with the instances' bias cancelled (see module docstring)."""
    return float(np.exp((np.median(one) + np.median(two)) / 2))
