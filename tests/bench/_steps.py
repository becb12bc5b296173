"""The recorder's cost per training step, resolved to a few tenths of a percent.

Why a third design. The rounds (`_overhead.py`) and the paired fits
(`_paired.py`) time whole ``fit()`` calls, and on a shared 2-core CPU one
``fit()`` runs several percent faster or slower than the next whatever is
attached. Single steps alternated call by call between two instances cancel
that: a slow spell of the host falls on both sides of a pair, a fraction of
a millisecond apart.

Design (per backend, in one process; the same crossover as `_paired.py`):

* Two instances A and B of the model, built alike and warmed up.
* A `StepDriver` calls the model's own ``train_function``, one step per call,
  as Keras's ``fit()`` loop does (on JAX it threads the state through and
  writes it back at the end of a phase), on one fixed batch. It waits for
  each step to finish (JAX dispatches asynchronously), so that a step's time
  is its whole cost.
* Each pair times one step of each instance, the order alternating.
* Phases: nothing attached (A/A), the recorder on B, the recorder on A; each
  retraces both instances' train functions (so both sides pay alike) and
  warms them up. The phases run in `CYCLES` cycles.
* The ratio to a bare step is ``exp((m1 + m2) / 2)`` (``m``: an attached
  phase's median ``log(t_attached / t_plain)``), the instances' speed
  difference cancelling. Its 95 % interval (and the A/A row's) is a
  two-level bootstrap, cycles, then pairs within them: a retrace can change
  an instance's speed a little, and that drift from phase to phase widens
  the interval instead of hiding in it.
* ``delta_us`` (the cost per step) is that ratio minus one, times the bare
  step. Over a plain ``fit()`` step (which also runs Keras's loop, callbacks
  and data handling, timed here on the plain instance) it gives the
  recorder's ratio to plain ``fit()``: the issue's measure.

What it leaves out, and why that errs on the recorder's side or not at all:
``fit()`` runs the recorder's per-``fit()`` work (its fit wrapper, the
epoch-end callback, the final buffer read) once per call, not per step; the
paired fits include it. On JAX ``fit()`` overlaps a step's host work with the
device work of the one before; waiting for each step adds the two, so the
cost per step here is an upper bound of what ``fit()`` sees.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

import _overhead  # sibling modules (tests/bench is on the path, as for _report)
from _paired import PHASE_TEXT, RESAMPLES, bias, crossover, median_ratio

#: The three phases run this many times in turn; the interval resamples cycles.
CYCLES = 6
#: Untimed steps of each instance after each retrace (compile, settle).
WARMUP_STEPS = 5
#: Steps per plain fit() whose time per step is the denominator of the fit ratio:
#: the tiny model's 128-step epoch, the mid model's 32-step one.
FIT_STEPS = {"tiny": 128, "mid": 32}


class StepDriver:
    """One training step per call of ``model.train_function``, as ``fit()`` makes it."""

    def __init__(self, model, x, y):
        import keras

        self.model = model
        self.backend = keras.backend.backend()
        model.make_train_function(force=True)
        function = model.train_function
        if self.backend == "torch":
            import torch

            data = [(torch.as_tensor(x), torch.as_tensor(y))]
            self._step = lambda: function(data)
        elif self.backend == "tensorflow":
            import tensorflow as tf

            iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
            self._step = lambda: function(iterator)  # a tf.function call returns when done
        else:
            import jax

            data = [(jax.numpy.asarray(x), jax.numpy.asarray(y))]
            model._jax_state_synced = True
            self._state = model._get_jax_state(
                trainable_variables=True, non_trainable_variables=True,
                optimizer_variables=True, metrics_variables=True,
                purge_model_variables=True)
            model._jax_state_synced = False

            def step():
                logs, self._state = function(self._state, iter(data))
                jax.block_until_ready(logs)

            self._step = step

    def step(self) -> float:
        """Run one step; its wall time in seconds."""
        start = time.perf_counter()
        self._step()
        return time.perf_counter() - start

    def close(self) -> None:
        """Give the model its variables back (JAX kept them in the driver)."""
        if self.backend == "jax":
            names = ("trainable_variables", "non_trainable_variables",
                     "optimizer_variables", "metrics_variables")
            self.model._jax_state = dict(zip(names, self._state))
            self.model.jax_state_sync()


def measure(model_name, seconds_per_phase, log):
    """Run the three phases, in `CYCLES` cycles, on ``model_name``; a JSON-able dict."""
    import loss_inspect as li

    x, y, batch = _overhead.data(model_name)
    models = {"A": _overhead.build(model_name), "B": _overhead.build(model_name)}
    fit_x, fit_y = x[: FIT_STEPS[model_name] * batch], y[: FIT_STEPS[model_name] * batch]
    step_x, step_y = x[:batch], y[:batch]
    for model in models.values():
        model.fit(fit_x, fit_y, batch_size=batch, epochs=1, verbose=0)  # build, compile

    def plain_fit_step_s():
        start = time.perf_counter()
        models["A"].fit(fit_x, fit_y, batch_size=batch, epochs=1, verbose=0)
        return (time.perf_counter() - start) / FIT_STEPS[model_name]

    def pairs(numerator, seconds):
        drivers = {name: StepDriver(model, step_x, step_y) for name, model in models.items()}
        for driver in drivers.values():
            for _ in range(WARMUP_STEPS):
                driver.step()
        other = "A" if numerator == "B" else "B"
        logs, plain_s = [], []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            order = (numerator, other) if len(logs) % 2 else (other, numerator)
            t = {name: drivers[name].step() for name in order}
            logs.append(float(np.log(t[numerator] / t[other])))
            plain_s.append(t[other])
        for driver in drivers.values():
            driver.close()
        return logs, plain_s

    cycles = []  # per cycle: {phase: log ratios}
    plain_step_s, fit_step_s = [], []
    steps_recorded = steps_expected = 0
    for cycle in range(CYCLES):
        phases = {}
        for phase, attached, numerator in (("aa", None, "B"), ("one", "B", "B"),
                                           ("two", "A", "A")):
            if attached is None:
                fit_step_s.append(plain_fit_step_s())
            recorder = li.attach(models[attached], nan="warn") if attached else None
            logs, plain_s = pairs(numerator, seconds_per_phase / CYCLES)
            phases[phase] = logs
            plain_step_s += plain_s
            if recorder is not None:
                recorder.detach()
                steps_recorded += recorder.history.records
                steps_expected += WARMUP_STEPS + len(logs)
        cycles.append(phases)
        log(f"  {model_name} steps, cycle {cycle + 1}/{CYCLES}: " + ", ".join(
            f"{PHASE_TEXT[k]} {np.exp(np.median(v)):.4f} ({len(v)} pairs)"
            for k, v in phases.items()))

    pooled = {k: np.concatenate([c[k] for c in cycles]) for k in PHASE_TEXT}
    ratio = crossover(pooled["one"], pooled["two"])
    low, high = two_level_interval([(c["one"], c["two"]) for c in cycles], crossover)
    aa_interval = two_level_interval([(c["aa"],) for c in cycles], median_ratio)
    bias_interval = two_level_interval([(c["one"], c["two"]) for c in cycles], bias)
    bare_ms = 1e3 * statistics.median(plain_step_s)
    fit_ms = 1e3 * statistics.median(fit_step_s)
    return {
        "model": model_name,
        "cycles": CYCLES,
        "pairs": [len(pooled[k]) for k in PHASE_TEXT],
        "bare_step_ms": bare_ms,
        "fit_step_ms": fit_ms,
        "fit_steps": FIT_STEPS[model_name],
        "aa_ratio": median_ratio(pooled["aa"]),
        "aa_interval": list(aa_interval),
        "bias": bias(pooled["one"], pooled["two"]),
        "bias_interval": list(bias_interval),
        "ratio": ratio,
        "interval": [low, high],
        "delta_us": [1e3 * bare_ms * (r - 1) for r in (ratio, low, high)],
        "fit_ratio": [fit_ratio(r, bare_ms, fit_ms) for r in (ratio, low, high)],
        "steps_recorded": steps_recorded,
        "steps_expected": steps_expected,
    }


def two_level_interval(cycles, statistic, resamples=RESAMPLES, seed=0):
    """95 % interval of ``statistic`` over ``cycles`` (each a tuple of phase log
    ratios): resample the cycles, then the pairs within each chosen cycle's
    phases, and apply ``statistic`` to the pooled phases."""
    rng = np.random.default_rng(seed)
    cycles = [tuple(np.asarray(phase) for phase in cycle) for cycle in cycles]
    estimates = []
    for _ in range(resamples):
        chosen = [cycles[i] for i in rng.integers(len(cycles), size=len(cycles))]
        pooled = [np.concatenate([rng.choice(c[k], len(c[k])) for c in chosen])
                  for k in range(len(cycles[0]))]
        estimates.append(statistic(*pooled))
    low, high = np.percentile(estimates, [2.5, 97.5])
    return float(low), float(high)


def fit_ratio(step_ratio, bare_step_ms, fit_step_ms) -> float:
    """The ratio to plain ``fit()`` of a cost measured against a bare step:
    the same absolute cost per step over ``fit()``'s longer step."""
    return 1.0 + (step_ratio - 1.0) * bare_step_ms / fit_step_ms
