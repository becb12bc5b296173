"""Lint the tutorial notebooks; check the nbval sanitize file really parses.

nbval itself executes the notebooks (see the top-level conftest.py); these
checks catch what nbval lets pass silently: a marker comment above ``%%losses``
(the magic then never runs), a marker with trailing text (ignored), a
``raises-exception`` cell that raises nothing, a ``UsageError`` in an output.
"""

from __future__ import annotations

import glob
import os
import re

import nbformat
import pytest

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "notebooks")
PATHS = sorted(glob.glob(os.path.join(NOTEBOOKS, "[0-9]*.ipynb")))
EXPECTED = [
    "01_quickstart", "02_the_losses_property", "03_add_loss",
    "04_loss_functions_and_reduction", "05_compiled_losses",
    "06_custom_training_loops", "07_debugging_with_the_breakdown",
]
MARKER = re.compile(r"^#\s*NBVAL_\w*")
VALID_MARKER = re.compile(r"^# NBVAL_(IGNORE_OUTPUT|CHECK_OUTPUT|RAISES_EXCEPTION|SKIP)$")
TAGS = {"nbval-ignore-output", "nbval-check-output", "nbval-skip", "raises-exception"}


def _code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_every_tutorial_is_there():
    assert [os.path.basename(p)[: -len(".ipynb")] for p in PATHS] == EXPECTED


@pytest.mark.parametrize("path", PATHS, ids=os.path.basename)
def test_notebook_lint(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    cells = _code_cells(path)
    counts = [c.execution_count for c in cells]
    assert counts == list(range(1, len(cells) + 1)), "run top to bottom once, then commit"
    assert any(re.search(r"^\s*assert ", c.source, re.M) for c in cells), "no proof cell"
    for n, cell in enumerate(cells):
        lines = cell.source.splitlines()
        where = f"{os.path.basename(path)} code cell {n + 1}"
        for i, line in enumerate(lines):
            if MARKER.match(line):
                assert VALID_MARKER.match(line), f"{where}: marker with extra text: {line!r}"
            if line.startswith("%%"):
                assert i == 0, f"{where}: {line!r} is not the first line, so it never runs"
        tags = set(cell.metadata.get("tags", []))
        assert tags <= TAGS | {"hide-input"}, f"{where}: unknown tags {tags - TAGS}"
        if lines and lines[0].startswith("%%losses") and "-q" not in lines[0].split():
            assert "nbval-ignore-output" in tags, f"{where}: live-widget cell needs the tag"
        shows_widget = any(
            "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in cell.outputs
        )
        if shows_widget:
            assert "nbval-ignore-output" in tags, f"{where}: widget output needs the tag"
        if "raises-exception" in tags:
            assert any(o.output_type == "error" for o in cell.outputs), f"{where}: raises nothing"
        for output in cell.outputs:
            text = output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
            text += " ".join(output.get("traceback", []))
            assert "UsageError" not in text, f"{where}: a UsageError was stored"
            if output.output_type == "error":
                assert "raises-exception" in tags, f"{where}: unexpected error output"


def test_sanitize_file_parses_every_pattern():
    from nbval.plugin import get_sanitize_patterns

    with open(os.path.join(NOTEBOOKS, "nbval_sanitize.cfg"), encoding="utf-8") as handle:
        text = handle.read()
    assert "\r" not in text
    pairs = get_sanitize_patterns(text)
    declared = [line for line in text.splitlines() if line.startswith("regex:")]
    assert len(pairs) == len(declared) == 5
    assert len({regex for regex, _ in pairs}) == len(pairs), "duplicate regexes collapse"
    for regex, replace in pairs:
        re.sub(regex, replace, "0.0047265 1.2186 3.8977e-07 0x7f00aa00bb00")
    sanitized = get_sanitize_patterns(text)
    float_noise = dict(sanitized)[r"(?<![\w.])(-?(?:0\.0*[1-9]\d{0,2}|[1-9]\d*\.\d{0,2}))\d*"]
    assert re.sub(
        r"(?<![\w.])(-?(?:0\.0*[1-9]\d{0,2}|[1-9]\d*\.\d{0,2}))\d*", float_noise,
        "total 1.2186 share 0.0047265",
    ) == "total 1.21 share 0.00472"
