"""Repository-wide pytest setup: environment, and notebooks as nbval tests.

``python -m pytest`` runs the unit tests (``tests/``) and the tutorial
notebooks (``notebooks/``) together. The notebooks' stored outputs were made
on JAX, so they are compared strictly there (``--nbval``); on TensorFlow and
PyTorch they must run cleanly (``--nbval-lax``). Kernels inherit this process's
environment (``--nbval-current-env``), which is set up here before any Keras
import: the backend, quiet TensorFlow, private Keras / matplotlib caches.

Two checks nbval does not make are added here:

* a notebook cell whose fresh output contains ``UsageError`` fails (IPython
  prints a usage error, e.g. a mistyped magic option, on stderr, and nbval
  would pass the cell; in lax mode even a changed output passes);
* each notebook must run in ``--notebook-time-limit`` seconds (default 60, the
  tutorials' budget on a 2-core machine): the setup (kernel start) and call
  times of its cells are summed, printed in the terminal summary, and a
  notebook over the limit fails the session.
"""

import os
import tempfile

import pytest

ROOT = os.path.dirname(os.path.abspath(__file__))
NOTEBOOK_TIME_LIMIT_S = 60.0
_notebook_times: dict = {}  # notebook path (as in the node id) -> seconds, this session

os.environ.setdefault("KERAS_BACKEND", "jax")
# Quiet TensorFlow's C++ logs unless the caller asked for them: on TF/torch the
# notebooks run lax (stderr is not compared); on JAX TensorFlow is not imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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
# Under pytest-xdist each worker takes its own core (gw0 the first allowed
# one, gw1 the next, ...), so `-n 2` still runs in parallel; the cores first
# allowed are remembered for the processes this one starts.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)
if os.environ["KERAS_BACKEND"] == "jax" and hasattr(os, "sched_setaffinity"):
    _cpus = os.environ.setdefault(
        "LOSS_INSPECT_TEST_CPUS", ",".join(map(str, sorted(os.sched_getaffinity(0)))))
    _cpus = [int(cpu) for cpu in _cpus.split(",")]
    _worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    os.sched_setaffinity(0, {_cpus[int(_worker) % len(_cpus) if _worker.isdigit() else 0]})


def pytest_addoption(parser):
    parser.addoption(
        "--notebook-time-limit", type=float, default=NOTEBOOK_TIME_LIMIT_S, metavar="SECONDS",
        help="fail the run when a notebook's cells (kernel start included) take longer "
             f"than this in total (default {NOTEBOOK_TIME_LIMIT_S:g})",
    )


def _given(config, option: str) -> bool:
    """Was ``option`` given on the command line (``--opt VALUE`` or ``--opt=VALUE``)?"""
    return any(arg == option or arg.startswith(option + "=")
               for arg in config.invocation_params.args)


def pytest_configure(config):
    import matplotlib.font_manager  # noqa: F401  build the font cache here, not in a notebook

    _notebook_times.clear()
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
    if not _given(config, "--nbval-cell-timeout"):
        option.nbval_cell_timeout = 300
    if not _given(config, "--nbval-kernel-startup-timeout"):
        option.nbval_kernel_startup_timeout = 180


# ------------------------------------------------------------ UsageError check
def _output_text(output) -> str:
    parts = [output.get("text", ""), output.get("ename", ""), output.get("evalue", "")]
    data = output.get("data", {})
    parts += [data.get("text/plain", ""), data.get("text/html", "")]
    return "\n".join(str(p) for p in parts)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    # nbval's IPyNbCell keeps the outputs the cell produced in this run.
    outputs = getattr(item, "test_outputs", None)
    if outputs:
        bad = [text for text in map(_output_text, outputs) if "UsageError" in text]
        if bad:
            item.raise_cell_error("UsageError in the cell's output (nbval alone passes it)",
                                  "\n".join(bad))
    return result


# ------------------------------------------------------- per-notebook run time
def notebook_of(nodeid: str):
    """The notebook path of an nbval item's node id, else None."""
    path = nodeid.split("::", 1)[0]
    return path if path.endswith(".ipynb") else None


def pytest_runtest_logreport(report):
    # The first cell's setup includes starting the kernel; the last teardown
    # (stopping it) is not counted. Under xdist the controller sees every report.
    notebook = notebook_of(report.nodeid)
    if notebook is not None and report.when in ("setup", "call"):
        _notebook_times[notebook] = _notebook_times.get(notebook, 0.0) + report.duration


def notebooks_over_limit(times: dict, limit: float) -> list:
    return sorted(notebook for notebook, seconds in times.items() if seconds > limit)


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller decides
    slow = notebooks_over_limit(_notebook_times, session.config.getoption("notebook_time_limit"))
    if slow and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _notebook_times or hasattr(config, "workerinput"):
        return
    limit = config.getoption("notebook_time_limit")
    backend = os.environ["KERAS_BACKEND"]
    terminalreporter.section(f"notebook run times ({backend}, limit {limit:g} s)")
    for notebook, seconds in sorted(_notebook_times.items()):
        flag = "  OVER THE LIMIT" if seconds > limit else ""
        terminalreporter.write_line(f"{seconds:7.1f} s  {notebook}{flag}")
    slow = notebooks_over_limit(_notebook_times, limit)
    if slow:
        terminalreporter.write_line(
            f"FAILED: {len(slow)} notebook(s) over the {limit:g} s limit on {backend}: "
            + ", ".join(slow), red=True)
