"""``python -m loss_inspect demo``: the README's main-job command."""

import os
import subprocess
import sys

import pytest

from loss_inspect.__main__ import build_parser
from loss_inspect.history import LossHistory


def test_demo_prints_a_breakdown_that_matches_keras(tmp_path):
    csv, png = tmp_path / "demo.csv", tmp_path / "demo.png"
    proc = subprocess.run(
        [sys.executable, "-m", "loss_inspect", "demo", "--epochs", "2", "--csv", str(csv),
         "--png", str(png)],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Loss breakdown (train records: 14)" in out  # 204 samples / 32, 2 epochs
    for key in ("compiled", "add_loss:demo/smooth", "activity:demo/hidden",
                "regularizer:demo/hidden/kernel", "total"):
        assert key in out
    assert out.count("  epoch ") == 2
    history = LossHistory.from_csv(csv)
    assert len(history.select(phase="train")) == 14
    assert png.read_bytes()[:4] == b"\x89PNG" and f"wrote the figure to {png}" in out


def test_demo_defaults_to_jax_when_no_backend_is_named(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    proc = subprocess.run(
        [sys.executable, "-m", "loss_inspect", "demo", "--epochs", "1"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "backend jax" in proc.stdout
    assert (tmp_path / "loss_breakdown.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv", [["demo", "--epochs", "0"], ["demo", "--epochs", "x"], []])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_help_describes_the_demo(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse re-wraps the description
    assert "Train the quickstart model" in text
    assert "print the per-term breakdown of the loss" in text
    assert "write the figure of the terms over the steps to loss_breakdown.png" in text
    assert "--png PATH" in text and "(default loss_breakdown.png)" in text
