"""The benchmark's interleaved single-step measurement (`tests/bench/_steps.py`).

Behaviour only, never timing: a driven step is a `fit()` step, the interval
widens when cycles disagree, the arithmetic of the fit ratio, and a short
real run whose attached steps must all be recorded.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "bench"))
import _overhead  # noqa: E402 - the benchmark's modules live in tests/bench
import _report  # noqa: E402
import _steps  # noqa: E402

# Smoke runs of the benchmark: see the fixture.
pytestmark = pytest.mark.usefixtures("one_thread_per_worker")


def test_driven_steps_train_the_model_as_fit_does():
    x, y, batch = _overhead.data("tiny")
    x, y = x[:batch], y[:batch]
    driven, fitted = _overhead.build("tiny"), _overhead.build("tiny")
    for model in (driven, fitted):
        model.fit(x, y, batch_size=batch, verbose=0)  # build and compile alike
    driver = _steps.StepDriver(driven, x, y)
    for _ in range(3):
        assert driver.step() > 0
    driver.close()
    fitted.fit(np.tile(x, (3, 1)), np.tile(y, (3, 1)), batch_size=batch, shuffle=False,
               verbose=0)
    assert int(driven.optimizer.iterations.numpy()) == 4
    for a, b in zip(driven.get_weights(), fitted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_crossover_interval_widens_when_cycles_disagree():
    rng = np.random.default_rng(0)

    def cycle(overhead):
        noise = rng.normal(0, 0.01, 200)
        return np.log(overhead) + noise, np.log(overhead) + noise[::-1]

    agreeing = [cycle(1.02) for _ in range(6)]
    disagreeing = [cycle(r) for r in (1.00, 1.04, 1.00, 1.04, 1.00, 1.04)]
    low, high = _steps.two_level_interval(agreeing, _steps.crossover, resamples=400)
    assert low < 1.02 < high and high - low < 0.01
    low, high = _steps.two_level_interval(disagreeing, _steps.crossover, resamples=400)
    assert high - low > 0.015  # the spread between cycles shows


def test_fit_ratio_keeps_the_cost_per_step_and_divides_by_the_fit_step():
    # +24 µs on a 0.9 ms bare step is +24 µs on a 1.8 ms fit() step
    assert _steps.fit_ratio(1 + 0.024 / 0.9, 0.9, 1.8) == pytest.approx(1 + 0.024 / 1.8)
    assert _steps.fit_ratio(1.0, 0.9, 1.8) == 1.0


def test_a_short_real_run_records_every_attached_step(backend, monkeypatch):
    monkeypatch.setattr(_steps, "CYCLES", 2)
    messages = []
    result = _steps.measure("tiny", 0.4, messages.append)
    assert result["steps_recorded"] == result["steps_expected"] > 0
    assert all(n >= 2 for n in result["pairs"])
    low, high = result["interval"]
    assert low <= result["ratio"] <= high and math.isfinite(result["ratio"])
    low, high = result["bias_interval"]
    assert low <= result["bias"] <= high
    assert result["fit_ratio"][0] == pytest.approx(
        _steps.fit_ratio(result["ratio"], result["bare_step_ms"], result["fit_step_ms"]))
    assert len(messages) == 2
    rows = _report._step_rows({backend: {"results": [result]}})
    assert [(row[1], row[2]) for row in rows] == [(backend, "tiny (single steps)")] * 2
    assert rows[1][3] == f"{result['fit_ratio'][0]:.3f}×"
    assert rows[1][6] in ("yes", "no") or rows[1][6].startswith("not resolved")


def test_a_failed_child_gives_one_failed_row_and_no_pass():
    rows = _report._step_rows({"torch": {"error": "child exited with status 1"}})
    assert rows == [(_report.STEP_LABELS["ratio"], "torch", "—", "failed",
                     "child exited with status 1", "—", "no")]
