"""Environment detection: script, terminal IPython, kernel; the live switch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loss_inspect import _display


def test_a_plain_script_is_a_script_with_no_live_widgets():
    code = "from loss_inspect import _display as d; print(d.context(), d.live_widgets_enabled())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["script", "False"]


def test_terminal_ipython_is_text_only():
    from IPython.testing.globalipapp import get_ipython

    get_ipython()  # starts the test shell once per process
    assert _display.context() == _display.TERMINAL
    assert not _display.live_widgets_enabled()


@pytest.mark.parametrize("value", ["0", "false", "OFF", " no "])
def test_live_widgets_can_be_switched_off_by_environment(monkeypatch, value):
    monkeypatch.setenv("LOSS_INSPECT_LIVE", value)
    monkeypatch.setattr(_display, "context", lambda: _display.KERNEL)
    assert not _display.live_widgets_enabled()
    assert not _display.live_widgets_enabled(requested=False)


def test_live_widgets_on_in_a_kernel_by_default(monkeypatch):
    monkeypatch.delenv("LOSS_INSPECT_LIVE", raising=False)
    monkeypatch.setattr(_display, "context", lambda: _display.KERNEL)
    assert _display.live_widgets_enabled()
    assert not _display.live_widgets_enabled(requested=False)
