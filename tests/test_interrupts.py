"""InterruptGate with real SIGINTs sent to this process (no Keras needed)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from loss_inspect._interrupts import InterruptGate


@pytest.fixture(autouse=True)
def _python_sigint(python_sigint):
    """Every test here sends real SIGINTs (see tests/conftest.py)."""


def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # Python runs the handler at the next bytecode boundary


def test_before_any_step_ctrl_c_raises_at_once_and_handler_is_restored():
    gate = InterruptGate()
    with pytest.raises(KeyboardInterrupt):
        with gate.guard():
            assert signal.getsignal(signal.SIGINT) == gate._on_sigint
            ctrl_c()
            pytest.fail("not interrupted")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not gate.pending


def test_inside_a_step_ctrl_c_waits_for_the_next_step_entry():
    gate = InterruptGate()
    with pytest.raises(KeyboardInterrupt):
        with gate.guard():
            assert gate.step_starting() is False
            ctrl_c()  # held: Keras's state is in flight
            assert gate.pending
            assert gate.step_starting() is True  # the caller raises here
            raise KeyboardInterrupt
    assert not gate.pending


def test_held_ctrl_c_is_raised_when_the_entry_point_returns():
    gate = InterruptGate()
    reached_end = False
    with pytest.raises(KeyboardInterrupt):
        with gate.guard():
            gate.step_starting()
            ctrl_c()
            reached_end = True
    assert reached_end and not gate.pending
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_ctrl_c_raises_at_once():
    gate = InterruptGate()
    with pytest.raises(KeyboardInterrupt):
        with gate.guard():
            gate.step_starting()
            ctrl_c()
            assert gate.pending
            ctrl_c()
            pytest.fail("the second Ctrl-C was held too")
    assert not gate.pending


def test_nested_entry_points_install_once():
    gate = InterruptGate()
    with gate.guard():
        with gate.guard():  # evaluate() inside fit()
            gate.step_starting()
        assert signal.getsignal(signal.SIGINT) == gate._on_sigint
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_someone_elses_handler_is_left_alone():
    seen = []
    previous = signal.signal(signal.SIGINT, lambda *a: seen.append(a[0]))
    try:
        gate = InterruptGate()
        with gate.guard():
            gate.step_starting()
            ctrl_c()
        assert seen == [signal.SIGINT] and not gate.pending
    finally:
        signal.signal(signal.SIGINT, previous)


def test_off_the_main_thread_nothing_is_installed():
    gate, installed = InterruptGate(), []

    def run():
        with gate.guard():
            installed.append(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
            installed.append(gate.step_starting())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert installed == [True, False]
