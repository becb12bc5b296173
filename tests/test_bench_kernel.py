"""The benchmark's ``%%losses``-in-a-kernel measurement (`tests/bench/_kernel.py`).

Behaviour only, never timing: a short real run in a real ipykernel, whose
watched cells must record every step and send the widget's frames as comm
messages; a failing cell must say what failed in the kernel; the row.
"""

from __future__ import annotations

import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "bench"))
import _kernel  # noqa: E402 - the benchmark's modules live in tests/bench
import _report  # noqa: E402

# Smoke runs of the benchmark: see the fixture.
pytestmark = pytest.mark.usefixtures("one_thread_per_worker")


def test_a_short_real_run_records_every_watched_step_and_sends_frames(backend):
    messages = []
    result = _kernel.measure("tiny", live_seconds=0.01, seconds=0, log=messages.append)
    assert result["epochs"] == 1 and result["pairs"] == _kernel.MIN_PAIRS
    assert result["setup_epochs"] == 1 and result["warm_up_fit_s"] > 0
    per_cell = _kernel.SETTLE_BATCHES + 128
    assert result["steps_recorded"] == result["steps_expected"] == per_cell * result["pairs"]
    # At least the final frame of each watched cell went out as a widget
    # comm message carrying a PNG.
    assert result["image_updates"] >= 1 and result["image_kb"] > 1
    low, high = result["interval"]
    assert low <= result["ratio"] <= high and math.isfinite(result["ratio"])
    assert len(messages) == result["pairs"]
    [row] = _report._kernel_rows({backend: result})
    assert row[:4] == (_report.KERNEL_LABEL, backend, "tiny (128 steps/fit)",
                       f"{result['ratio']:.3f}×")
    assert row[5] == "≤ 1.05×" and "steps recorded" not in row[4]
    assert result["helper_frames"] >= 0 and "drawn" in row[4]


def test_the_row_says_who_drew_the_frames():
    assert _report._drawn_by({"helper_frames": 0}) == (
        "every frame drawn in the kernel (no helper process)")
    assert _report._drawn_by({"helper_frames": 1.5}) == (
        "1.5 frames per cell drawn by the helper process, the final one in the kernel")
    assert _report._drawn_by({}) == "frames drawn in the kernel"  # results from before


def test_a_failing_cell_says_what_failed_in_the_kernel():
    with _kernel.running_kernel() as client:
        with pytest.raises(_kernel.KernelCellError, match="ZeroDivisionError"):
            _kernel.execute(client, "1 / 0", {})
        with pytest.raises(_kernel.KernelCellError, match="'missing' failed.*NameError"):
            _kernel.execute(client, "x = 1", {"value": "missing"})
        assert _kernel.execute(client, "x = 2", {"value": "x * 1.5"})["values"] == {
            "value": 3.0}


def test_unrecorded_steps_are_never_a_pass():
    result = {"model": "tiny", "steps_per_fit": 128, "pairs": 3, "plain_fit_s": 1.0,
              "ratio": 1.01, "interval": [1.0, 1.02], "log_sd": 0.01,
              "cell_extra_s": 0.2, "image_updates": 2, "image_kb": 50.0,
              "steps_recorded": 400, "steps_expected": 408, "kernel_start_s": 1.0}
    [row] = _report._kernel_rows({"jax": result})
    assert row[6] == "no" and "400 of 408 steps recorded" in row[4]
    [row] = _report._kernel_rows({"jax": {**result, "steps_recorded": 408}})
    assert row[6] == "yes"


def test_the_counted_fits_are_sized_from_the_warm_up_plain_fit(backend):
    # A real run whose setup estimate is off on purpose: the counted fits
    # follow the warm-up fit, not the estimate.
    result = _kernel.measure("tiny", live_seconds=0.6, seconds=0, log=lambda _: None,
                             setup_epoch_s=10.0)
    assert result["setup_epochs"] == 1
    assert result["epochs"] == _kernel.rescaled_epochs(1, result["warm_up_fit_s"], 0.6)
    assert result["steps_expected"] == result["steps_recorded"] == result["pairs"] * (
        _kernel.SETTLE_BATCHES + 128 * result["epochs"])
    # 38 epochs took 3.95 s where 8 s were asked (TensorFlow, 2026-12-07).
    assert _kernel.rescaled_epochs(38, 3.95, 8.0) == 77
    assert _kernel.rescaled_epochs(40, 8.0, 8.0) == 40
    assert _kernel.rescaled_epochs(3, 100.0, 8.0) == 1  # never fewer than one epoch
    for broken in (0.0, -1.0, float("nan")):  # a clock that failed keeps the estimate
        assert _kernel.rescaled_epochs(5, broken, 8.0) == 5
