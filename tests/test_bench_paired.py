"""The benchmark's paired short-fit measurement (`tests/bench/_paired.py`).

Behaviour only, never timing: the crossover's arithmetic, the verdict's
rules, and a short real run whose attached fits must record every step.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "bench"))
import _paired  # noqa: E402 - the benchmark's modules live in tests/bench
import _report  # noqa: E402

# Smoke runs of the benchmark: see the fixture.
pytestmark = pytest.mark.usefixtures("one_thread_per_worker")


def test_crossover_cancels_the_bias_of_the_two_instances():
    overhead, bias = 1.02, 1.05  # B runs 5 % slower than A whatever is attached
    one = np.log(np.full(9, overhead * bias))  # recorder on B: log(t_B / t_A)
    two = np.log(np.full(7, overhead / bias))  # recorder on A: log(t_A / t_B)
    assert _paired.crossover(one, two) == pytest.approx(overhead)


def test_crossover_takes_the_median_of_each_phase():
    one = np.log([1.0, 1.03, 1.03, 1.03, 9.0])  # one outlier pair
    two = np.log([1.03, 1.03, 1.03])
    assert _paired.crossover(one, two) == pytest.approx(1.03)


@pytest.mark.parametrize(
    ("ratio", "high", "complete", "verdict"),
    [
        (1.004, 1.009, True, "yes"),
        (1.004, 1.015, True, "not resolved (interval crosses the target)"),
        (1.012, 1.020, True, "no"),
        (1.004, 1.009, False, "no"),  # steps went unrecorded: never a pass
    ],
)
def test_paired_verdict_needs_the_whole_interval_within_the_target(
    ratio, high, complete, verdict
):
    assert _report.paired_verdict(ratio, high, 1.01, complete) == verdict


def test_paired_verdict_refuses_a_pass_when_the_a_a_control_disagrees():
    # TensorFlow, mid model: A/A 0.966 (0.923-0.990) while the crossover put the
    # instances' bias at 1.005, with an interval as wide as its ratio's
    verdict = _report.paired_verdict(0.988, 1.005, 1.01, True, (0.923, 0.990), (0.993, 1.018))
    assert verdict == "not resolved (the A/A control misses the instances' bias)"
    # JAX, mid model, single steps: A/A 0.993-1.000 against a bias of 0.999-1.007
    assert _report.paired_verdict(1.003, 1.007, 1.01, True, (0.993, 1.000),
                                  (0.999, 1.007)) == "yes"


def test_bias_is_what_the_a_a_phase_should_read():
    overhead, bias = 1.02, 1.05
    one, two = np.log(np.full(5, overhead * bias)), np.log(np.full(5, overhead / bias))
    assert _paired.bias(one, two) == pytest.approx(bias)


def test_a_short_real_run_records_every_attached_step(backend):
    messages = []
    result = _paired.measure("tiny", 0.3, messages.append)
    assert result["steps_recorded"] == result["steps_expected"] > 0
    assert all(n >= 1 for n in result["pairs"])
    low, high = result["interval"]
    assert low <= result["ratio"] <= high and math.isfinite(result["ratio"])
    low, high = result["bias_interval"]
    assert low <= result["bias"] <= high
    assert len(messages) == _paired.CYCLES
    rows = _report._paired_rows({backend: {"results": [result]}})
    assert [(row[1], row[2]) for row in rows] == [(backend, "tiny (128 steps/fit)")] * 2
    assert rows[1][3] == f"{result['ratio']:.3f}×"
    assert rows[1][5] == ("≤ 1.05×" if backend == "torch" else "≤ 1.03×")
