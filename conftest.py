"""Repository-wide pytest setup: environment, and notebooks as nbval tests.

``python -m pytest`` runs the unit tests (``tests/``) and the tutorial
notebooks (``notebooks/``) together. The notebooks' stored outputs were made
on JAX, so they are compared strictly there (``--nbval``); on TensorFlow and
PyTorch they must run cleanly (``--nbval-lax``). Kernels inherit this process's
environment (``--nbval-current-env``), which is set up here before any Keras
import: the backend, quiet TensorFlow, private Keras / matplotlib caches.
"""

import os
import tempfile

ROOT = os.path.dirname(os.path.abspath(__file__))

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="li-keras-home-"))
# One matplotlib cache shared by every test process and notebook kernel: a new
# one per process makes matplotlib rebuild its font cache and say so on stderr,
# which a strict notebook comparison would see.
os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "loss_inspect-mplconfig"))
# Un-jitted XLA ops on CPU use a multi-threaded Eigen pool whose reductions are
# not deterministic; and XLA:CPU can return different bits for one compiled
# module when the process sees more than one core (jax-ml/jax#39741). Bitwise
# checks (invariant 3, strict nbval) need repeatable runs: pin JAX processes
# (and the notebook kernels they start) to one core and one Eigen thread.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)
if os.environ["KERAS_BACKEND"] == "jax" and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def pytest_configure(config):
    import matplotlib.font_manager  # noqa: F401  build the font cache here, not in a notebook

    option = config.option
    if not hasattr(option, "nbval"):
        return  # nbval not installed: notebooks are not collected
    if not (option.nbval or option.nbval_lax):
        if os.environ["KERAS_BACKEND"] == "jax":
            option.nbval = True
        else:
            option.nbval_lax = True
    option.nbval_current_env = True
    if option.nbval_sanitize_with is None:
        option.nbval_sanitize_with = os.path.join(ROOT, "notebooks", "nbval_sanitize.cfg")
    option.nbval_cell_timeout = 300
    option.nbval_kernel_startup_timeout = 180
