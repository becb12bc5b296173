"""End-to-end fixtures: a real Jupyter server and a real Chromium, always shut down.

Widgets can fail where no kernel-side test looks ("Error displaying widget:
model not found", front-end/kernel version mismatches, outputs that never
update), so these tests drive the front-end users see: JupyterLab or
Notebook 7 started from this environment's own Python, on 127.0.0.1 with a
random port and a token, and Debian's Chromium through Playwright.

The tests are marked ``e2e`` and run only when asked for by marker::

    KERAS_BACKEND=jax python -m pytest -m e2e tests/e2e

Any other run (the README's ``python -m pytest``, ``-m "not slow"``) leaves
them out as deselected, so the per-backend CI runs do not start a browser
three times. Screenshots go to ``$LOSS_INSPECT_E2E_ARTIFACTS`` (default: a new
temporary folder); the folder is printed at the end of the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("LOSS_INSPECT_E2E_CHROMIUM", "/usr/bin/chromium")
SERVER_START_TIMEOUT = 120  # seconds; 2 shared cores, cold imports
ACTION_TIMEOUT_MS = 30_000  # Playwright's wait for a locator (the page is loaded by then)
NAVIGATION_TIMEOUT_MS = 120_000

_ARTIFACTS: list[Path] = []  # the folder, once a test made it (for the summary)
_DESELECTED: list[int] = []


# ------------------------------------------------------------------ selection
def pytest_collection_modifyitems(config, items):
    """Leave e2e tests out unless the ``-m`` expression names ``e2e``.

    A plain ``addopts = -m "not e2e"`` would be overridden by any other ``-m``
    (``-m "not slow"`` would then start browsers); deselecting here keeps
    them out of every run that does not ask for them by name.
    """
    if "e2e" in (config.option.markexpr or ""):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("e2e") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
        _DESELECTED.append(len(drop))


def pytest_terminal_summary(terminalreporter):
    if _DESELECTED and not terminalreporter.config.option.markexpr:
        terminalreporter.write_line(
            f"{sum(_DESELECTED)} browser tests deselected; run them with: "
            "KERAS_BACKEND=jax python -m pytest -m e2e tests/e2e")
    for folder in _ARTIFACTS:
        terminalreporter.write_line(f"e2e screenshots and server logs: {folder}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can react to failures."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# ------------------------------------------------------------------ helpers
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _all_cores():
    """Let child processes started in this block use every core.

    The repository's conftest pins JAX test processes to one core for
    bit-repeatable runs; children inherit that, and a server, a kernel and a
    browser squeezed onto one core would only test patience.
    """
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    saved = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except OSError:
        pass
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def _die_with_parent():
    """In the child: SIGTERM when pytest dies, even by SIGKILL (Linux prctl)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


try:  # resolved here, not in the forked child
    import ctypes

    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):
    _PRCTL = None


def _stop_process_tree(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the server's process group (it shuts its kernels down), then
    SIGKILL whatever is left, kernels included (they run in their own sessions)."""
    try:
        import psutil

        family = psutil.Process(proc.pid).children(recursive=True)
    except Exception:  # psutil missing, or the server is gone already
        family = []
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    for child in family:
        with contextlib.suppress(Exception):
            child.kill()


class JupyterServer:
    """One ``jupyter lab`` or ``jupyter notebook`` process and its REST API."""

    def __init__(self, app: str, env: dict, workdir: Path):
        self.app = app
        self.port = _free_port()
        self.token = os.urandom(16).hex()
        self.root = workdir / f"{app}-root"
        self.root.mkdir()
        self.log_path = workdir / f"{app}-server.log"
        self.url = f"http://127.0.0.1:{self.port}"
        module = {"lab": "jupyterlab", "notebook": "notebook"}[app]
        cmd = [
            sys.executable, "-m", module,  # = `jupyter lab` / `jupyter notebook`
            "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.terminals_enabled=False",
            # "python3" is the fixture's kernelspec (first on JUPYTER_PATH), and
            # ipykernel's built-in one is not added next to it.
            "--KernelSpecManager.ensure_native_kernel=False",
            "--LanguageServerManager.autodetect=False",
        ]
        if app == "lab":
            cmd += ["--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                    "--LabApp.news_url=None"]
        self._log = open(self.log_path, "w")
        with _all_cores():
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter {self.app} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                self.api("status")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.25)
        raise TimeoutError(f"jupyter {self.app} did not answer within {SERVER_START_TIMEOUT} s:\n"
                           f"{self.log_tail()}")

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(
            f"{self.url}/api/{path}", method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def kernels(self) -> list[dict]:
        """GET /api/kernels; retried, as jupyter_server answers 500 for a kernel
        listed while it starts (no ``last_activity`` yet)."""
        for _ in range(19):
            try:
                return self.api("kernels")
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise
                time.sleep(0.5)
        return self.api("kernels")

    def page_url(self, notebook: str) -> str:
        """The notebook alone: in Lab, a fresh workspace (no tabs restored from a test before)."""
        if self.app == "lab":
            workspace = f"e2e-{os.urandom(4).hex()}"
            return f"{self.url}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"
        return f"{self.url}/notebooks/{notebook}?token={self.token}"

    def shutdown_kernels(self) -> None:
        """Free the CPU for the next test (2 shared cores)."""
        with contextlib.suppress(OSError, urllib.error.URLError):
            for kernel in self.kernels():
                self.api(f"kernels/{kernel['id']}", method="DELETE")

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def save_log(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            self._log.flush()
            shutil.copy(self.log_path, path)

    def stop(self) -> None:
        try:
            _stop_process_tree(self.proc)
        finally:
            self._log.close()


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session", autouse=True)
def _sigterm_runs_teardown():
    """A CI timeout sends SIGTERM: turn it into KeyboardInterrupt, so pytest
    still runs the fixtures' finally blocks (server and browser shut down)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go: $LOSS_INSPECT_E2E_ARTIFACTS or a new temporary folder."""
    chosen = os.environ.get("LOSS_INSPECT_E2E_ARTIFACTS")
    folder = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="loss_inspect-e2e-"))
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    _ARTIFACTS.append(folder)
    print(f"\ne2e artifacts: {folder}")
    return folder


@pytest.fixture(scope="session")
def jupyter_env(tmp_path_factory) -> dict:
    """A private Jupyter world whose only kernel is this environment's python.

    Config, data and runtime folders are temporary, so the user's own
    kernelspecs and settings cannot leak in; the ``python3`` kernelspec on
    ``JUPYTER_PATH`` names ``sys.executable`` itself. Kernels inherit this
    environment: JAX backend, quiet TensorFlow, private Keras and matplotlib
    caches.
    """
    base = tmp_path_factory.mktemp("jupyter")
    spec_dir = base / "path" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }))
    config = base / "config"
    # No "would you like news?" toast over the screenshots, no update check.
    settings = config / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = dict(os.environ)
    env.update(
        JUPYTER_PATH=str(base / "path"),
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        IPYTHONDIR=str(base / "ipython"),
        KERAS_BACKEND="jax",
        KERAS_HOME=str(base / "keras"),
        MPLCONFIGDIR=str(base / "matplotlib"),
        TF_CPP_MIN_LOG_LEVEL="3",
        PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
        PYTHONUNBUFFERED="1",
    )
    env.pop("LOSS_INSPECT_LIVE", None)  # the live widget is what we test
    env.pop("JUPYTER_CONFIG_PATH", None)
    # Build matplotlib's font cache once, here, not in the first kernel's cell.
    subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], env=env,
                   check=True, timeout=300)
    return env


def _server(app, jupyter_env, tmp_path_factory):
    server = JupyterServer(app, jupyter_env, tmp_path_factory.mktemp(f"jupyter-{app}"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def lab_server(jupyter_env, tmp_path_factory):
    """``jupyter lab`` from this environment, stopped (with its kernels) at the end."""
    yield from _server("lab", jupyter_env, tmp_path_factory)


@pytest.fixture(scope="session")
def notebook_server(jupyter_env, tmp_path_factory):
    """``jupyter notebook`` (Notebook 7) from this environment, stopped at the end."""
    yield from _server("notebook", jupyter_env, tmp_path_factory)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by Playwright; always closed."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # a missing tool fails the e2e run, it never skips it
        raise RuntimeError(
            "the e2e tests need Playwright: pip install -e '.[e2e]'") from exc
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"the e2e tests need Chromium at {CHROMIUM}: "
                           "apt-get install -y chromium")
    with _all_cores():
        playwright = sync_playwright().start()
    try:
        with _all_cores():
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-default-apps",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                ],
            )
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser, request, artifacts):
    """A fresh browser page; console errors are collected, failures screenshotted."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    pg = context.new_page()
    pg.console_errors = []
    pg.page_errors = []
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))
    pg.on("pageerror", lambda e: pg.page_errors.append(f"{e}\n{e.stack}"))
    try:
        yield pg
    finally:
        with contextlib.suppress(OSError):
            (artifacts / f"{request.node.name}-console.txt").write_text(
                "\n".join(["uncaught errors:", *pg.page_errors, "", "console errors:",
                           *pg.console_errors, ""]))
        try:
            failed = getattr(request.node, "rep_call", None)
            if failed is not None and failed.failed:
                with contextlib.suppress(Exception):
                    pg.screenshot(path=str(artifacts / f"{request.node.name}-FAILED.png"),
                                  full_page=True)
        finally:
            context.close()
