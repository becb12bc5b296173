"""Hold a Ctrl-C that lands inside a JAX training loop until a step boundary.

Keras's JAX trainer donates the model state to each jitted step and keeps the
new state in local variables until it writes it back at the end of an epoch.
A ``KeyboardInterrupt`` raised between the step's return and Keras's next
bookkeeping line leaves the model's variables pointing at deleted arrays
(plain Keras 3.15, no loss_inspect: about 3 interrupts in 4 during a tiny
``fit()``), and the recorder's unread rows die with them. So while a JAX
``fit`` / ``evaluate`` / ``*_on_batch`` runs, the first Ctrl-C is noted and
raised where the state is whole again: at the next step's entry (after the
state that step received is written back to the model) or when the entry
point returns. A second Ctrl-C raises at once, as without loss_inspect.
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["InterruptGate"]


class InterruptGate:
    """SIGINT handling for one recorder's JAX entry points (main thread only)."""

    def __init__(self) -> None:
        self.pending = False  # a Ctrl-C arrived and waits for a step boundary
        self._armed = False  # a step has started: Keras's JAX state is in flight
        self._depth = 0
        self._installed = False

    @contextlib.contextmanager
    def guard(self):
        """Defer SIGINT while the body (an outermost Keras entry point) runs.

        Installs nothing outside the main thread or when someone else owns
        SIGINT (only Python's default handler, which IPython kernels and
        terminals use during a cell, is replaced). A deferred interrupt is
        raised on normal exit, after Keras has written its state back.
        """
        outermost = self._depth == 0
        if outermost:
            self._installed = (
                threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler
            )
            if self._installed:
                signal.signal(signal.SIGINT, self._on_sigint)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            raise_now = False
            if outermost:
                raise_now, self.pending, self._armed = self.pending, False, False
                if self._installed and signal.getsignal(signal.SIGINT) == self._on_sigint:
                    signal.signal(signal.SIGINT, signal.default_int_handler)
                self._installed = False
        if raise_now:  # reached only when the body returned normally
            raise KeyboardInterrupt

    def step_starting(self) -> bool:
        """Mark a step's entry; True when a deferred interrupt must be raised now."""
        if self.pending:
            self.pending = False
            return True
        self._armed = self._installed
        return False

    def _on_sigint(self, signum, frame) -> None:
        if self._armed and not self.pending:
            self.pending = True
            return
        self.pending = False
        raise KeyboardInterrupt
