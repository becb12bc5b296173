"""The benchmark's paired short-fit measurement (`tests/bench/_paired.py`).

Behaviour only, never timing: the crossover's arithmetic, the verdict's
rules, and a short real run whose attached fits must record every step.
"""

from __future__ import annotations

import concurrent.futures
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


def test_the_tiny_model_is_also_measured_in_one_step_and_on_jax_in_long_and_held_fits():
    assert _paired.runs("mid", "jax") == [("short", None)]
    assert _paired.runs("tiny", "torch") == [("short", None), ("one-step", None)]
    assert _paired.runs("tiny", "jax") == [("short", None), ("one-step", None),
                                           ("long", None), ("short", 1), ("long", 1)]


def test_a_held_run_gives_every_fit_a_one_worker_batch_end_pool(backend):
    if backend == "tensorflow":  # Keras dispatches TF batch ends in the main thread
        with pytest.raises(RuntimeError, match="made no batch-end thread pool"):
            _paired.measure("tiny", 0.3, lambda message: None, "one-step", workers=1)
        return
    from keras.src.callbacks import callback_list

    saved = callback_list.concurrent
    with _paired.batch_end_workers(1) as pools:
        import keras

        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(loss="mse")
        model.fit(np.zeros((8, 2)), np.zeros((8, 1)), batch_size=4, epochs=2, verbose=0)
        made = concurrent.futures.ThreadPoolExecutor  # the real class, unchanged
    assert pools == [1]  # one pool per fit(), held at one worker
    assert callback_list.concurrent is saved
    assert made is concurrent.futures.ThreadPoolExecutor

    result = _paired.measure("tiny", 0.3, lambda message: None, "short", workers=1)
    assert result["batch_end_workers"] == 1
    assert result["steps_recorded"] == result["steps_expected"] > 0
    aa, ratio = _report._paired_rows({backend: {"results": [result]}})
    assert ratio[0] == _report.PAIRED_LABELS["held"]
    assert ratio[2] == "tiny (128 steps/fit, 1-worker batch-end pool)"
    assert ratio[5:] == ("—", "—")  # a diagnostic, judged against no target


def test_a_one_step_run_reports_the_fixed_cost_per_fit_without_a_target(backend):
    result = _paired.measure("tiny", 0.3, lambda message: None, "one-step")
    assert result["steps_per_fit"] == 1 and result["epochs"] == 1
    assert result["steps_recorded"] == result["steps_expected"] > 0
    assert result["plain_fit_ms"] > 0
    aa, ratio = _report._paired_rows({backend: {"results": [result]}})
    assert ratio[0] == _report.PAIRED_LABELS["one-step"] and ratio[2] == "tiny (1 step/fit)"
    fit_us = 1e3 * result["plain_fit_ms"]
    assert ratio[4].startswith(f"{(result['ratio'] - 1) * fit_us:+.0f} µs per `fit()`")
    assert ratio[5:] == ("—", "—")  # a diagnostic, judged against no target


def _long_result(ratio, interval, recorded=2048 * 40):
    return {"model": "tiny", "fit_length": "long", "epochs": 16, "steps_per_fit": 2048,
            "plain_fit_ms": 300.0, "pairs": [20, 20, 20], "plain_step_ms": 0.15,
            "aa_ratio": 1.0, "aa_interval": [0.99, 1.01], "aa_log_sd": 0.02,
            "bias": 1.0, "bias_interval": [0.99, 1.01], "ratio": ratio,
            "interval": interval, "steps_recorded": recorded, "steps_expected": 2048 * 40}


def test_long_fits_are_judged_against_the_target_like_one_epoch_fits():
    rows = _report._paired_rows({"jax": {"results": [_long_result(0.97, [0.95, 0.99])]}})
    assert rows[1][:3] == (_report.PAIRED_LABELS["long"], "jax",
                           "tiny (16 epochs × 128 steps/fit)")
    assert rows[1][5:] == ("≤ 1.03×", "yes")
    late = _report._paired_rows({"jax": {"results": [_long_result(1.02, [1.00, 1.04])]}})
    assert late[1][6] == "not resolved (interval crosses the target)"
    lost = _report._paired_rows({"jax": {"results": [_long_result(0.97, [0.95, 0.99], 10)]}})
    assert lost[1][6] == "no"  # unrecorded steps are never a pass


def test_every_fit_length_of_a_model_gets_its_rows_in_order():
    short = dict(_long_result(1.05, [1.04, 1.06]), fit_length="short", epochs=1,
                 steps_per_fit=128, steps_recorded=128 * 40, steps_expected=128 * 40)
    rows = _report._paired_rows({"jax": {"results": [short, _long_result(0.97, [0.95, 0.99])]}})
    assert [row[2] for row in rows] == ["tiny (128 steps/fit)"] * 2 + [
        "tiny (16 epochs × 128 steps/fit)"] * 2
