"""Test setup: one Keras backend per pytest process, isolated caches.

The backend comes from ``KERAS_BACKEND`` (default ``jax``); `.ci/run` runs the
whole suite once per backend, each in its own process, because Keras fixes
its backend at first import.
"""

# The environment (backend, caches, determinism flags) is set up by the
# repository's top-level conftest.py, which pytest loads first.

import pytest


@pytest.fixture
def backend():
    import keras

    return keras.backend.backend()


@pytest.fixture
def one_thread_per_worker(monkeypatch):
    """torch on one thread, here and in the kernels a test starts.

    The benchmark's short real runs check behaviour, not speed. Under
    ``-n 2`` on two cores, torch's two OpenMP threads in both workers slowed
    each other many times over (the paired run took 325 s instead of 30).
    """
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # read by processes started now
    import keras

    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_recorder_left_attached():
    """Every test must detach what it attached (a leaked hook is a bug)."""
    yield
    import sys

    if "loss_inspect.recorder" in sys.modules:
        from loss_inspect.recorder import _ATTACHED

        leaked = list(_ATTACHED.values())
        for recorder in leaked:
            recorder.detach()
        assert not leaked, f"test left recorders attached: {leaked}"


@pytest.fixture
def python_sigint():
    """SIGINT handled as in a terminal or a Jupyter cell (Python's default
    handler), even when CI started this process with SIGINT ignored, as a
    background job is: tests that send real SIGINTs need it."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
