"""Where output can go: every environment check lives here.

A kernel cannot tell whether a widget frontend is listening (nbconvert, nbval
and papermill run kernels with none), so live widgets are on in any kernel
unless switched off with ``LOSS_INSPECT_LIVE=0`` or ``--no-live``; their text
repr is constant, so a frontend-less run still produces stable outputs.
"""

from __future__ import annotations

import os
import sys
import warnings

KERNEL = "kernel"  # Jupyter / ipykernel: rich output and widgets
TERMINAL = "terminal"  # plain IPython: text only
SCRIPT = "script"  # no IPython at all

_OFF = {"0", "false", "no", "off"}
_WARNED_NO_WIDGETS: list = []


def shell():
    """The running IPython shell, or None (a script; IPython is never imported here)."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    return get_ipython()


def context() -> str:
    """`KERNEL`, `TERMINAL` or `SCRIPT` for the running process."""
    ip = shell()
    if ip is None:
        return SCRIPT
    return KERNEL if getattr(ip, "kernel", None) is not None else TERMINAL


def _switched_off(variable: str) -> bool:
    """Is the environment switch ``variable`` set to 0 / false / no / off?"""
    return os.environ.get(variable, "1").strip().lower() in _OFF


def render_process_enabled() -> bool:
    """Should live frames be drawn in a helper process? In a kernel (where a
    frontend may be watching a long run), unless ``LOSS_INSPECT_RENDER_PROCESS=0``."""
    return not _switched_off("LOSS_INSPECT_RENDER_PROCESS") and context() == KERNEL


def live_widgets_enabled(requested: bool = True) -> bool:
    """Should a live widget be shown? Needs a kernel, ipywidgets and no opt-out."""
    if not requested:
        return False
    if _switched_off("LOSS_INSPECT_LIVE"):
        return False
    if context() != KERNEL:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError as exc:
        if not _WARNED_NO_WIDGETS:  # once per process, as tqdm.autonotebook does
            _WARNED_NO_WIDGETS.append(True)
            warnings.warn(
                f"loss_inspect: no live widget, ipywidgets could not be imported "
                f"({type(exc).__name__}: {exc}); showing the table and figure when "
                f"the cell ends. pip install ipywidgets for the live view.",
                RuntimeWarning, stacklevel=2,
            )
        return False
    return True
