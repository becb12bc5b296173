"""Test setup: one Keras backend per pytest process, isolated caches.

The backend comes from ``KERAS_BACKEND`` (default ``jax``); `.ci/run` runs the
whole suite once per backend, each in its own process, because Keras fixes
its backend at first import.
"""

import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="li-keras-home-"))
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="li-mpl-"))
os.environ.setdefault("MPLBACKEND", "Agg")
# Un-jitted XLA ops on CPU use a multi-threaded Eigen pool whose reductions are
# not deterministic, so two *plain* runs already differ; "attaching changes
# nothing" can only be checked bit for bit where plain Keras is repeatable.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)
# Even so, XLA:CPU can return different bits for one compiled module across
# calls when the process sees more than one core (jax-ml/jax#39741); pinned to
# one core it is bit-identical. Pin the JAX test process before JAX starts.
if os.environ["KERAS_BACKEND"] == "jax" and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import pytest  # noqa: E402


@pytest.fixture
def backend():
    import keras

    return keras.backend.backend()


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
