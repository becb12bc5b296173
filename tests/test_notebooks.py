"""Lint the tutorial notebooks; check the nbval sanitize file; check that nbval
runs (as the top-level conftest.py sets them up) fail when they should.

nbval itself executes the notebooks (see the top-level conftest.py); these
checks catch what nbval lets pass silently: a marker comment above ``%%losses``
(the magic then never runs), a marker with trailing text (ignored), a
``raises-exception`` cell that raises nothing, a ``UsageError`` in an output,
a malformed sanitize line (dropped), a magic that swallows nbval's timeout
interrupt, a notebook over its time budget.

The nbval runs in a subprocess are kept small (short generated notebooks):
they run once per backend in CI. Running every tutorial under pytest-xdist
(``-n 2 --dist loadscope``) needs no test of its own: it is how the README's
test command, and so CI, runs them.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
SANITIZE = os.path.join(NOTEBOOKS, "nbval_sanitize.cfg")
PATHS = sorted(glob.glob(os.path.join(NOTEBOOKS, "[0-9]*.ipynb")))
EXPECTED = [
    "01_quickstart", "02_the_losses_property", "03_add_loss",
    "04_loss_functions_and_reduction", "05_compiled_losses",
    "06_custom_training_loops", "07_debugging_with_the_breakdown",
]
SANITIZE_PAIRS = 5

# nbval reads a marker from any line that starts with "#" once stripped
# (nbval.plugin.find_comment_markers), so the lint looks at stripped lines too.
MARKER = re.compile(r"^#+\s*NBVAL_", re.IGNORECASE)
VALID_MARKER = re.compile(r"^# NBVAL_(IGNORE_OUTPUT|CHECK_OUTPUT|RAISES_EXCEPTION|SKIP)$")
TAGS = {"nbval-ignore-output", "nbval-check-output", "nbval-skip", "raises-exception"}
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


# ------------------------------------------------------------------ the lint
def _output_text(output) -> str:
    data = output.get("data", {})
    parts = [output.get("text", ""), output.get("ename", ""), output.get("evalue", ""),
             data.get("text/plain", ""), data.get("text/html", ""),
             "\n".join(output.get("traceback", []))]
    return "\n".join(str(p) for p in parts)


def _expects_error(cell) -> bool:
    """nbval's own reading: the raises-exception tag or an NBVAL_RAISES_EXCEPTION comment."""
    from nbval.plugin import find_comment_markers, find_metadata_tags

    options = dict(find_comment_markers(cell.source))
    options.update(find_metadata_tags(cell.metadata))
    return bool(options.get("check_exception"))


def _live_widget_possible(first_line: str) -> bool:
    """A %%losses cell shows a live widget unless -q or --no-live is given."""
    words = first_line.split()
    return bool(words) and words[0] == "%%losses" and not {"-q", "--no-live"} & set(words)


def lint_notebook(nb, name: str = "notebook") -> list[str]:
    """Every problem found in one notebook (an empty list: it is clean)."""
    problems = []
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        problems.append(f"{name}: kernelspec name must be python3")
    cells = [c for c in nb.cells if c.cell_type == "code"]
    if [c.execution_count for c in cells] != list(range(1, len(cells) + 1)):
        problems.append(f"{name}: execution counts are not 1..n: run top to bottom, then commit")
    if not any(re.search(r"^\s*assert ", c.source, re.M) for c in cells):
        problems.append(f"{name}: no proof cell (no assert)")
    for n, cell in enumerate(cells):
        where = f"{name} code cell {n + 1}"
        lines = cell.source.splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            if MARKER.match(stripped) and not VALID_MARKER.match(stripped):
                problems.append(f"{where}: marker nbval does not read as meant: {line!r}")
            if i > 0 and stripped.startswith("%%"):
                problems.append(f"{where}: {line!r} is not the first line, so it never runs")
        tags = set(cell.metadata.get("tags", []))
        if tags - TAGS - {"hide-input"}:
            problems.append(f"{where}: unknown tags {sorted(tags - TAGS - {'hide-input'})}")
        if lines and _live_widget_possible(lines[0]) and "nbval-ignore-output" not in tags:
            problems.append(f"{where}: live-widget cell needs the nbval-ignore-output tag")
        if any(WIDGET_MIME in o.get("data", {}) for o in cell.outputs) \
                and "nbval-ignore-output" not in tags:
            problems.append(f"{where}: widget output needs the nbval-ignore-output tag")
        expects_error = _expects_error(cell)
        has_error = any(o.output_type == "error" for o in cell.outputs)
        if expects_error and not has_error:
            problems.append(f"{where}: marked to raise, but no error output is stored")
        if has_error and not expects_error:
            problems.append(f"{where}: unexpected error output")
        if any("UsageError" in _output_text(o) for o in cell.outputs):
            problems.append(f"{where}: a UsageError was stored")
    return problems


def test_every_tutorial_is_there():
    assert [os.path.basename(p)[: -len(".ipynb")] for p in PATHS] == EXPECTED


@pytest.mark.parametrize("path", PATHS, ids=os.path.basename)
def test_notebook_lint(path):
    assert lint_notebook(nbformat.read(path, as_version=4), os.path.basename(path)) == []


def test_a_strict_losses_cell_is_checked_somewhere():
    """At least one tutorial %%losses cell is compared by strict nbval (not ignored)."""
    strict = [
        (os.path.basename(path), cell.source.splitlines()[0])
        for path in PATHS for cell in nbformat.read(path, as_version=4).cells
        if cell.cell_type == "code" and cell.source.startswith("%%losses")
        and "-q" not in cell.source.splitlines()[0].split()
        and "nbval-ignore-output" not in cell.metadata.get("tags", [])
    ]
    assert strict, "every %%losses cell with output is ignored by nbval"


def _clean_notebook():
    """A small notebook the lint accepts: a proof, a quiet and a strict --no-live cell."""
    table = new_output("display_data", data={"text/plain": "Loss breakdown (all records: 2)"})
    cells = [
        new_code_cell("import math\nassert math.pi > 3", execution_count=1),
        new_code_cell("%%losses model -q\nmodel.fit(x, y)", execution_count=2),
        new_code_cell("%%losses model --no-live --plot none\nmodel(x)", execution_count=3,
                      outputs=[table]),
        new_code_cell("if True:\n    # NBVAL_CHECK_OUTPUT\n    print(1)", execution_count=4,
                      outputs=[new_output("stream", name="stdout", text="1\n")]),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def _error_output(ename="ValueError"):
    return new_output("error", ename=ename, evalue="boom", traceback=[f"{ename}: boom"])


def _set(index, **fields):
    """Mutation: set fields of code cell ``index`` (``tags`` goes to its metadata)."""
    def mutate(nb):
        cell = nb.cells[index]
        for key, value in fields.items():
            if key == "tags":
                cell.metadata["tags"] = value
            else:
                cell[key] = value
    return mutate


def _append(source, tags=(), outputs=()):
    def mutate(nb):
        cell = new_code_cell(source, execution_count=len(nb.cells) + 1, outputs=list(outputs))
        if tags:
            cell.metadata["tags"] = list(tags)
        nb.cells.append(cell)
    return mutate


LINT_CASES = {
    "kernelspec": (lambda nb: nb.metadata.kernelspec.update(name="conda-env-py"), "kernelspec"),
    "execution order": (_set(1, execution_count=7), "execution counts"),
    "no assert": (_set(0, source="import math"), "no proof cell"),
    "marker with text": (_append("# NBVAL_IGNORE_OUTPUT: random\nprint(1)"), "marker"),
    "indented marker with text": (_append("if True:\n    # NBVAL_SKIP because slow\n    pass"),
                                  "marker"),
    "lower-case marker": (_append("# nbval_skip\nprint(1)"), "marker"),
    "marker above %%": (_append("# NBVAL_IGNORE_OUTPUT\n%%losses model\nmodel.fit(x, y)",
                                tags=["nbval-ignore-output"]), "never runs"),
    "unknown tag": (_set(0, tags=["nbval-ignore"]), "unknown tags"),
    "live cell without tag": (_append("%%losses model -o report\nmodel.fit(x, y)"),
                              "live-widget cell"),
    "live cell with --plot none": (_append("%%losses model --plot none\nmodel.fit(x, y)"),
                                   "live-widget cell"),
    "widget output without tag": (_append("display(w)", outputs=[new_output(
        "display_data", data={WIDGET_MIME: {"model_id": "x"}, "text/plain": "LiveView()"})]),
        "widget output"),
    "raises-exception tag, no error": (_append("1 / 1", tags=["raises-exception"]),
                                       "no error output"),
    "NBVAL_RAISES_EXCEPTION comment, no error": (_append("# NBVAL_RAISES_EXCEPTION\n1 / 1"),
                                                 "no error output"),
    "error output, not marked": (_append("1 / 0", outputs=[_error_output()]),
                                 "unexpected error"),
    "UsageError stored": (_append("%losses --bogus", outputs=[new_output(
        "stream", name="stderr", text="UsageError: unrecognized arguments: --bogus\n")]),
        "UsageError"),
}


def test_lint_accepts_the_clean_notebook_and_both_raise_markers():
    assert lint_notebook(_clean_notebook()) == []
    nb = _clean_notebook()
    _append("# NBVAL_RAISES_EXCEPTION\n1 / 0", outputs=[_error_output()])(nb)
    _append("1 / 0", tags=["raises-exception"], outputs=[_error_output()])(nb)
    assert lint_notebook(nb) == []


@pytest.mark.parametrize("case", LINT_CASES)
def test_each_lint_rule_fires(case):
    mutate, expected = LINT_CASES[case]
    nb = _clean_notebook()
    mutate(nb)
    problems = lint_notebook(nb)
    assert len(problems) == 1 and expected in problems[0], problems


# ------------------------------------------------------------ the sanitize file
SANITIZE_LINE = re.compile(r"^(regex|replace): \S")


def check_sanitize(text: str) -> list[tuple[str, str]]:
    """The (regex, replace) pairs of a sanitize file, or ValueError on any line
    nbval would drop or misread (it parses with one regex and ignores the rest).

    Blank lines and ``#`` comments aside, every line is ``regex: <pattern>`` or
    ``replace: <template>`` with exactly one space after the colon, no trailing
    blanks and no CR; each regex line is directly followed by its replace line;
    no regex appears twice (nbval keeps them in a dict); each pair compiles.
    """
    if "\r" in text:
        raise ValueError("CR line endings: write the file with LF only")
    pairs, pending = [], None
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            if pending is not None:
                raise ValueError(f"line {number - 1}: regex without a replace line below it")
            continue
        if not SANITIZE_LINE.match(line):
            raise ValueError(f"line {number}: not 'regex: X' or 'replace: X' "
                             f"(one space after the colon): {line!r}")
        if line != line.rstrip():
            raise ValueError(f"line {number}: trailing blanks become part of it: {line!r}")
        key, value = line.split(": ", 1)
        if key == "regex":
            if pending is not None:
                raise ValueError(f"line {number - 1}: regex without a replace line below it")
            pending = value
        else:
            if pending is None:
                raise ValueError(f"line {number}: replace without a regex line above it")
            pairs.append((pending, value))
            pending = None
    if pending is not None:
        raise ValueError("last line: regex without a replace line below it")
    regexes = [regex for regex, _ in pairs]
    duplicates = sorted({r for r in regexes if regexes.count(r) > 1})
    if duplicates:
        raise ValueError(f"duplicate regex (nbval keeps only the last): {duplicates}")
    for regex, replace in pairs:
        re.compile(regex).sub(replace, "0.0047265 1.2186 0x7f00aa00bb00 12ms/step")
    return pairs


def _read_sanitize() -> str:
    with open(SANITIZE, encoding="utf-8", newline="") as handle:  # keep CRs visible
        return handle.read()


def test_sanitize_file_passes_the_check():
    assert len(check_sanitize(_read_sanitize())) == SANITIZE_PAIRS


def test_sanitize_file_parses_every_pattern():
    from nbval.plugin import get_sanitize_patterns

    text = _read_sanitize()
    pairs = get_sanitize_patterns(text)
    assert pairs == check_sanitize(text)
    assert len(pairs) == SANITIZE_PAIRS
    float_noise = r"(?<![\w.])(-?(?:0\.0*[1-9]\d{0,2}|[1-9]\d*\.\d{0,2}))\d*"
    assert re.sub(float_noise, dict(pairs)[float_noise], "total 1.2186 share 0.0047265") \
        == "total 1.21 share 0.00472"


def _first(text, old, new):
    assert old in text
    return text.replace(old, new, 1)


MALFORMED = {  # variant: (how to break the real file, what the check must say)
    "two spaces after regex:": (lambda t: _first(t, "\nregex: ", "\nregex:  "), "one space"),
    "two spaces after replace:": (lambda t: _first(t, "\nreplace: ", "\nreplace:  "), "one space"),
    "no space after regex:": (lambda t: _first(t, "\nregex: ", "\nregex:"), "one space"),
    "trailing blank": (lambda t: _first(t, "replace: T/step", "replace: T/step "), "trailing"),
    "CRLF": (lambda t: t.replace("\n", "\r\n"), "CR line endings"),
    "duplicate regex": (lambda t: t + "\nregex: 0x[0-9a-fA-F]{6,16}\nreplace: ADDR\n",
                        "duplicate regex"),
    "dangling regex": (lambda t: t + "\nregex: \\d+ seconds\n", "without a replace"),
    "dangling replace": (lambda t: t + "\nreplace: N seconds\n", "without a regex"),
    "blank line inside a pair": (lambda t: _first(t, "\nreplace: T/step", "\n\nreplace: T/step"),
                                 "without a replace"),
    "section header": (lambda t: t + "\n[timings]\n", "not 'regex: X'"),
}


@pytest.mark.parametrize("variant", MALFORMED)
def test_malformed_sanitize_files_are_rejected(variant):
    breaks, message = MALFORMED[variant]
    with pytest.raises(ValueError, match=re.escape(message)):
        check_sanitize(breaks(_read_sanitize()))


# ------------------------------------------------- nbval runs, in a subprocess
def _notebook(*sources, kernel="python3"):
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "Python 3", "language": "python"}
    return nb


MODEL_STARTUP = """\
import time
import numpy as np, keras
from keras import layers
keras.utils.set_random_seed(1)
x = np.random.default_rng(1).normal(size=(64, 4)).astype("float32")
y = x[:, :1]
model = keras.Sequential([keras.Input((4,)), layers.Dense(1, kernel_regularizer="l2")])
model.compile(optimizer="sgd", loss="mse")
sleeper = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs=None: time.sleep(1))
get_ipython().run_line_magic("load_ext", "loss_inspect")
"""


def _plain(text: str) -> str:
    """Without colour codes (junit XML writes ESC as '#x1B')."""
    return re.sub(r"(\x1b|#x1B)\[[0-9;]*m", "", text)


def run_nbval(tmp_path, notebooks: dict, *args, cwd=None, env=None, timeout=240):
    """Run pytest + nbval on ``notebooks`` (name -> notebook, written to tmp_path,
    or name -> existing path) with this repository's conftest.py; return
    (returncode, output, {node id: outcome})."""
    paths = []
    for name, nb in notebooks.items():
        if isinstance(nb, str):
            paths.append(nb)
        else:
            nbformat.write(nb, tmp_path / name)
            paths.append(str(tmp_path / name))
    junit = tmp_path / "junit.xml"
    env = {**os.environ, **(env or {})}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
               f"--junitxml={junit}", *args, *paths]
    if cwd is None:  # outside the repository: load its conftest.py as a plugin
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
        command[3:3] = ["-p", "conftest"]
    proc = subprocess.run(command, cwd=cwd or tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)
    output = _plain(proc.stdout + proc.stderr)
    outcomes = {}
    if junit.exists():
        for case in ET.parse(junit).iter("testcase"):
            kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
            message = _plain(" ".join((child.get("message") or "") + (child.text or "")
                                      for child in case))
            node = f"{case.get('classname')}::{case.get('name')}"
            outcomes[node] = (kinds[0] if kinds else "passed", message)
    return proc.returncode, output, outcomes


def test_nbval_run_fails_on_usage_error_raising_body_and_timeout(tmp_path):
    """One nbval run (lax, --nbval-cell-timeout=5) of one generated notebook whose
    cells each must fail for their own reason, and a last cell that must pass:

    * a marker above ``%%losses``: the magic never runs and IPython prints a
      UsageError, which nbval alone passes; the conftest hook fails it;
    * a ``%%losses`` body that raises (no raises-exception tag);
    * a ``%%losses`` fit that runs past the cell timeout: nbval interrupts it,
      and the KeyboardInterrupt must come out of the cell as an error (a magic
      that swallowed it would turn the timeout into a pass);
    * the kernel survived all that, and the notebook is reported over its time limit.
    """
    # The imports and the model are made at kernel start (an IPython startup
    # file), so the 5-second limit applies to the cells alone on every backend.
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-model.py").write_text(MODEL_STARTUP)
    nb = _notebook(
        "print(model.name)",
        "# NBVAL_IGNORE_OUTPUT\n%%losses model\nprint('the magic ran')",
        "%%losses model -q\nmodel.fit(x, y, verbose=0)\nraise RuntimeError('the body failed')",
        "%%losses model -q\n"
        "model.fit(x, y, batch_size=8, epochs=100, verbose=0, callbacks=[sleeper])",
        "print('still alive')",
    )
    rc, output, outcomes = run_nbval(
        tmp_path, {"cells.ipynb": nb}, "--nbval-lax", "--nbval-cell-timeout=5",
        "--notebook-time-limit=1", env={"IPYTHONDIR": str(tmp_path / "ipython")})
    assert rc == 1, output
    kinds = {node: kind for node, (kind, _) in outcomes.items()}
    # (nbval marks the cells after a timeout xfail; "still alive" then xpasses)
    assert kinds == {"cells.ipynb::Cell 0": "passed", "cells.ipynb::Cell 1": "failure",
                     "cells.ipynb::Cell 2": "failure", "cells.ipynb::Cell 3": "failure",
                     "cells.ipynb::Cell 4": "passed"}, output
    usage, body, timeout = (outcomes[f"cells.ipynb::Cell {n}"][1] for n in (1, 2, 3))
    assert "UsageError: Line magic function `%%losses` not found" in usage
    assert "nbval alone passes it" in usage
    assert "RuntimeError: the body failed" in body
    assert "Timeout of 5 seconds exceeded executing cell" in timeout, output
    assert "KeyboardInterrupt" in timeout  # raised in the cell, not a killed kernel
    assert re.search(r"\d+\.\d s  cells\.ipynb  OVER THE LIMIT", output), output


def _root_conftest(config):
    path = os.path.join(ROOT, "conftest.py")
    for plugin in config.pluginmanager.get_plugins():
        if os.path.abspath(getattr(plugin, "__file__", "") or "") == path:
            return plugin
    raise LookupError("the repository's conftest.py is not loaded")


def test_notebook_time_limit_sums_setup_and_call_and_fails_the_session(request, monkeypatch):
    from types import SimpleNamespace

    root = _root_conftest(request.config)
    times = {}
    monkeypatch.setattr(root, "_notebook_times", times)
    for nodeid, when, seconds in [
        ("notebooks/a.ipynb::Cell 0", "setup", 12.0),   # starts the kernel
        ("notebooks/a.ipynb::Cell 0", "call", 30.0),
        ("notebooks/a.ipynb::Cell 1", "call", 18.5),
        ("notebooks/a.ipynb::Cell 1", "teardown", 9.0),  # stops the kernel: not counted
        ("notebooks/b.ipynb::Cell 0", "call", 59.0),
        ("tests/test_x.py::test_y", "call", 99.0),       # not a notebook
    ]:
        root.pytest_runtest_logreport(SimpleNamespace(nodeid=nodeid, when=when, duration=seconds))
    assert times == {"notebooks/a.ipynb": 60.5, "notebooks/b.ipynb": 59.0}

    config = SimpleNamespace(getoption=lambda name: {"notebook_time_limit": 60.0}[name])
    session = SimpleNamespace(config=config, exitstatus=pytest.ExitCode.OK)
    root.pytest_sessionfinish(session, pytest.ExitCode.OK)
    assert session.exitstatus == pytest.ExitCode.TESTS_FAILED
    times["notebooks/a.ipynb"] = 59.9
    session.exitstatus = pytest.ExitCode.OK
    root.pytest_sessionfinish(session, pytest.ExitCode.OK)
    assert session.exitstatus == pytest.ExitCode.OK
