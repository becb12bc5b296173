"""Live frames drawn in a helper process, off the training thread.

Why a process: a frame is 30-70 ms of matplotlib, nearly all of it with the
GIL held. Drawn in the kernel's process it stalls training for all of that
time, and a thread does not help (measured: a torch training loop made 2-8 %
of its usual steps while a thread drew frames). The helper draws on another core;
the kernel only prepares the frame (`plotting.prepare_frame`, numpy, about a
millisecond, sent `reduced`) and forwards the PNG that comes back.

One helper per Python process, started on the first live view that asks
(`shared`) and used by every view after it; it keeps one figure per view,
so frames after a view's first update in place. It runs
``python -m loss_inspect._render_process``, reading requests from its
stdin and writing replies to its stdout, each a length-prefixed pickle
(the parent is its only peer). Two daemon threads of the parent do the
pipe work: the writer sends the latest request of each view (the training
thread only queues it, so a helper busy with another view's frame, or
stuck, never blocks a step) and the reader keeps each view's latest reply.
The helper exits when its stdin closes, which the parent's exit causes, and
`close` (run at exit) waits for it.

The helper runs at the lowest CPU priority (`NICENESS`): it draws with what
training leaves idle. At normal priority it takes its core from training
wherever training keeps both cores busy (a tiny torch fit does: its OpenMP
threads spin), and training then waits for a preempted thread
(`tests/bench/helper_priority.py`: a helper drawing without pause cost a
torch fit 0.73 s per second of its CPU at niceness 0, nothing readable at
19). Frames are paced by the helper's CPU time, not its wall time, so a low
priority delays them (by up to a few seconds under full load) but does not
thin them out.

A helper that cannot start, dies or answers with an error is never fatal:
the view falls back to drawing in its own process (`LiveView`).
"""

from __future__ import annotations

import atexit
import itertools
import os
import pickle
import struct
import subprocess
import sys
import threading
import time

_HEADER = struct.Struct("!Q")  # the length of the pickle that follows
#: Added to the helper's niceness at its start (Unix; 19 is the lowest priority).
NICENESS = 19

_shared: "RenderProcess | None" = None
_start_failure: str | None = None
_lock = threading.Lock()
_view_keys = itertools.count(1)


def new_view_key() -> int:
    """A key for one view's figure in the helper, never reused in this process."""
    return next(_view_keys)


class Reply:
    """One drawn frame: ``png`` is None when drawing failed (``error`` says
    why); ``figures``: how many views' figures the helper holds now."""

    __slots__ = ("view", "sequence", "png", "seconds", "error", "figures")

    def __init__(self, view, sequence, png, seconds, error, figures):
        self.view, self.sequence, self.png = view, sequence, png
        self.seconds, self.error, self.figures = seconds, error, figures


class RenderProcess:
    """The parent's end of one helper process."""

    def __init__(self, argv=None):
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, MPLBACKEND="Agg")
        # The helper imports this package from where this process found it,
        # installed or not.
        env["PYTHONPATH"] = os.pathsep.join(
            [package_root] + [p for p in [env.get("PYTHONPATH")] if p])
        self.pid = os.getpid()  # a forked child must not write into this helper's pipe
        self.process = subprocess.Popen(
            argv or [sys.executable, "-m", "loss_inspect._render_process"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, close_fds=True,
        )
        self._replies: dict = {}
        self._replies_lock = threading.Lock()
        # Messages wait here for the writer thread, the latest per view: the
        # training thread never blocks on the pipe, even while the helper is
        # busy with another view's frame or stuck.
        self._outbox: dict = {}
        self._outbox_changed = threading.Condition()
        self.failure: str | None = None  # why the helper is gone (None: it is not)
        self.last_error: str | None = None  # why the last message could not be sent
        self.replies = 0  # frames (or errors) that came back, all views together
        self._reader = threading.Thread(target=self._read_replies, daemon=True,
                                        name="loss_inspect-render-replies")
        self._writer = threading.Thread(target=self._write_requests, daemon=True,
                                        name="loss_inspect-render-requests")
        self._reader.start()
        self._writer.start()

    @property
    def alive(self) -> bool:
        return self.failure is None

    def submit(self, view: int, sequence: int, frame, dpi: int, rc=None) -> bool:
        """Ask for ``frame`` drawn at ``dpi``; False if the helper is gone.

        ``rc``: the matplotlib rcParams this view's frames are drawn with from
        now on (the user's style lives in this process, not the helper's).
        """
        return self._send((view, sequence, frame, dpi, rc))

    def forget(self, view: int) -> None:
        """The view closed: the helper drops its figure."""
        self._send((view, None, None, None, None))

    def take(self, view: int) -> Reply | None:
        """The latest reply for ``view`` not taken yet, or None."""
        with self._replies_lock:
            return self._replies.pop(view, None)

    def abandon(self, reason: str) -> None:
        """Stop using this helper (it stopped answering); `shared` replaces it."""
        self._fail(reason)

    def close(self, timeout: float = 2.0) -> None:
        """End the helper: close its stdin, then kill it if it lingers."""
        self._fail("closed")
        self._writer.join(timeout)  # wakes at the failure; gone unless stuck in a write
        if self._writer.is_alive():
            self.process.kill()  # a stuck helper: the write fails, the writer ends
            self._writer.join(timeout)
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout)  # it ends at the pipe's end of file
        if not self._reader.is_alive():
            self.process.stdout.close()

    def _send(self, message) -> bool:
        """Queue ``message`` for the writer thread (it replaces one of the
        same view still waiting); never blocks on the helper."""
        if self.failure is not None:
            self.last_error = self.failure
            return False
        try:
            data = _framed(message)
        except Exception as exc:  # e.g. an rcParam that cannot be pickled
            self.last_error = f"cannot send the frame ({type(exc).__name__}: {exc})"
            return False
        with self._outbox_changed:
            self._outbox.pop(message[0], None)  # the newest goes last, in order
            self._outbox[message[0]] = data
            self._outbox_changed.notify()
        return True

    def _write_requests(self) -> None:
        stream = self.process.stdin
        while True:
            with self._outbox_changed:
                while not self._outbox and self.failure is None:
                    self._outbox_changed.wait()
                if self.failure is not None:
                    return
                view = next(iter(self._outbox))
                data = self._outbox.pop(view)
            try:
                stream.write(data)
                stream.flush()
            except (OSError, ValueError) as exc:  # a broken pipe: the helper died
                self._fail(f"the render process stopped ({type(exc).__name__}: {exc})")
                return

    def _read_replies(self) -> None:
        stream = self.process.stdout
        while True:
            message = _read_message(stream)
            if message is None:
                code = self.process.poll()
                self._fail(f"the render process exited (code {code})")
                return
            reply = Reply(*message)
            with self._replies_lock:
                self._replies[reply.view] = reply
                self.replies += 1

    def _fail(self, reason: str) -> None:
        with self._outbox_changed:
            if self.failure is None:
                self.failure = reason
            self._outbox_changed.notify_all()  # the writer thread ends


def shared() -> RenderProcess | None:
    """This process's helper, started on first use; None if it cannot run.

    A helper that failed to start is not tried again (each try would cost a
    process start per view); one that died since is replaced.
    """
    global _shared, _start_failure
    with _lock:
        if _shared is not None and _shared.pid == os.getpid():
            if _shared.alive:
                return _shared
            _shared.close()  # died: its pipes go before a new one starts
        if _start_failure is not None:
            return None
        try:
            _shared = RenderProcess()
        except (OSError, ValueError) as exc:
            _start_failure = f"{type(exc).__name__}: {exc}"
            return None
        return _shared


def _close_shared() -> None:
    if _shared is not None and _shared.pid == os.getpid():
        _shared.close()


atexit.register(_close_shared)


def _read_message(stream):
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    body = _read_exactly(stream, _HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def _read_exactly(stream, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _framed(message) -> bytes:
    """``message`` as it goes down a pipe: its pickle's length, then the pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _write_message(stream, message) -> None:
    stream.write(_framed(message))
    stream.flush()


def _warm_up(plotting) -> None:
    """Import and draw once before the first request: views pace their
    frames by what the helper says a frame took, and a first frame that
    also paid for the imports (0.2-0.3 s) would space the next ones 100 times
    that far apart."""
    from .history import LossHistory

    figure = plotting.draw_frame(plotting.prepare_frame(LossHistory(), title="warm-up"))
    plotting.figure_to_png(figure, dpi=80, fast=True)


def _lower_priority() -> None:
    """Yield the CPU to training (see the module's docstring); a no-op where
    the OS has no niceness (Windows) or a sandbox refuses the change."""
    try:
        os.nice(NICENESS)
    except (AttributeError, OSError):
        pass


def main() -> None:
    """The helper: draw each requested frame into that view's figure, reply with its PNG."""
    _lower_priority()  # first: the imports and the warm-up draw yield too
    import matplotlib

    from . import plotting

    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies may reach the parent's pipe
    _warm_up(plotting)
    figures: dict = {}
    styles: dict = {}
    while True:
        message = _read_message(requests)
        if message is None:
            return  # the parent closed the pipe or exited
        view, sequence, frame, dpi, rc = message
        if frame is None:
            figures.pop(view, None)
            styles.pop(view, None)
            continue
        if rc is not None:
            styles[view] = rc
        start = time.process_time()
        try:
            with matplotlib.rc_context(styles.get(view)):
                figure = plotting.draw_frame(frame, figure=figures.get(view))
                figures[view] = figure
                png = plotting.figure_to_png(figure, dpi=dpi, fast=True)
            error = None
        except Exception as exc:  # reported to the view, which draws it itself
            png, error = None, f"{type(exc).__name__}: {exc}"
        _write_message(replies, (view, sequence, png, time.process_time() - start, error,
                                 len(figures)))


if __name__ == "__main__":
    main()
