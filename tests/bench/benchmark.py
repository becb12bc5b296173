"""loss_inspect benchmark: fit() overhead against plain fit() and other tools, memory, scale.

One command measures everything side by side and prints one markdown table
(with the machine and the versions):

    python tests/bench/benchmark.py [--backends jax,tensorflow,torch] [--quick]
                                    [--default-malloc] [--out FILE]

Needs the ``bench`` extra (``pip install -e ".[bench,jax,tensorflow]" torch==2.13.0``).

Per backend, a fresh child process (``KERAS_BACKEND`` set; Keras fixes its
backend at import) times ``fit()`` on two models, interleaved in one process
and on one model instance (see `_overhead.py`): plain (twice: the second is
an A/A control), the recorder (``li.attach``, every step recorded), the
recorder with the live widget (on longer fits, against a plain fit of that
length), Keras's ``TensorBoard(update_freq="batch")``, livelossplot's
``PlotLossesKeras``, and a naive "one Mean metric per term" recorder. Each
row is the median over rounds of the ratio to plain ``fit()`` in the same
round. A second child per backend resolves the recorder's overhead below
1 % with many paired short fits on two instances, crossed over (see
`_paired.py`); a third times single training steps of the two instances
call by call, to a few tenths of a percent (see `_steps.py`); a fourth
starts a real IPython kernel and alternates plain cells with ``%%losses``
cells, live widget and all (see `_kernel.py`). Then, in
fresh processes (see `_scale.py`): the memory and redraw time of a
1,000,000-record history, the resident memory of 10,000 torch steps, and
the time of ``import loss_inspect`` and ``%load_ext loss_inspect``.
`_report.py` turns the results into the table.

This measures; it asserts nothing. Timing assertions do not belong in the
unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import _paired  # noqa: E402 - sibling modules of this script
import _report  # noqa: E402
import _scale  # noqa: E402

BACKENDS = ("jax", "tensorflow", "torch")

#: Settings of a full run (about an hour on a 2-core CPU) and of --quick.
#: ``seconds``: target length of one plain fit() per model (whole epochs, at least 1).
#: ``live_seconds``: length of the live widget's fits (and of their plain
#: reference), long enough for its throttled frames; models without one skip it.
#: ``paired_seconds``: length of each of the three phases of the paired
#: short-fit measurement of each model (`_paired.py`); 0 skips it.
#: ``steps_seconds``: the same for the interleaved single steps (`_steps.py`).
#: ``kernel_seconds``: time for the pairs of plain and ``%%losses`` cells in a
#: real kernel (`_kernel.py`; fits of ``live_seconds``); 0 skips it.
FULL = dict(rounds=6, seconds={"tiny": 1.0, "mid": 1.5}, live_seconds={"tiny": 8.0},
            paired_seconds=45.0, steps_seconds=20.0, kernel_seconds=240.0,
            torch_steps=10_000, torch_seconds=240, repeats=5, processes=5)
QUICK = dict(rounds=1, seconds={"tiny": 0.3, "mid": 0.45}, live_seconds={"tiny": 4.0},
             paired_seconds=8.0, steps_seconds=5.0, kernel_seconds=30.0,
             torch_steps=2_000, torch_seconds=60, repeats=3, processes=3)


#: glibc malloc settings of the fit() children (unless --default-malloc).
#: Setting either threshold turns glibc's adaptive mmap threshold off: buffers
#: up to 32 MiB come from the heap, and the heap is not handed back to the
#: kernel below 1 GiB of free top. With the adaptive default, whether a large
#: torch step's buffers are mmapped afresh (a page fault per 4 KiB touched)
#: depends on the sizes the process freed earlier, so one fit of the mid model
#: ran 1.6 times as long as the next whatever was attached (_report.NOTES).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
              "MALLOC_TRIM_THRESHOLD_": str(2**30)}


# --------------------------------------------------------------- children
def child(argv):
    """Entry point of a child process; writes its result as JSON to --json."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True,
                        choices=["fit", "paired", "steps", "kernel", "history",
                                 "torch-memory"])
    parser.add_argument("--json", required=True)
    parser.add_argument("--settings", required=True)
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    backend = os.environ.get("KERAS_BACKEND", "?")

    def log(message):
        print(f"[{args.child} {backend}] {message}", file=sys.stderr, flush=True)

    if args.child == "fit":
        import _overhead

        with tempfile.TemporaryDirectory(prefix="li-bench-tb-") as tmp:
            result = _overhead.run(settings["models"], settings["rounds"],
                                   settings["seconds"], settings["live_seconds"], tmp, log)
    elif args.child == "paired":
        result = {"results": [
            _paired.measure(model, settings["paired_seconds"], log, length, workers)
            for model in settings["models"]
            for length, workers in _paired.runs(model, backend)]}
    elif args.child == "steps":
        import _steps

        result = {"results": [_steps.measure(model, settings["steps_seconds"], log)
                              for model in settings["models"]]}
    elif args.child == "kernel":
        import _kernel

        result = _kernel.measure("tiny", settings["live_seconds"]["tiny"],
                                 settings["kernel_seconds"], log)
    elif args.child == "history":
        result = _scale.history_memory_and_redraw(repeats=settings["repeats"])
    else:
        result = _scale.torch_memory(steps=settings["torch_steps"],
                                     max_seconds=settings["torch_seconds"])
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


def _child_env(tmp, backend):
    env = dict(os.environ)
    env.update(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg",
               KERAS_HOME=os.path.join(tmp, "keras"),
               MPLCONFIGDIR=os.path.join(tmp, "matplotlib"))
    return env


def _run_child(kind, backend, settings, tmp, timeout, extra_env=None):
    """Run one child; its result dict, or {"error": ...} if it failed."""
    path = os.path.join(tmp, f"{kind}-{backend}.json")
    command = [sys.executable, os.path.abspath(__file__), "--child", kind,
               "--json", path, "--settings", json.dumps(settings)]
    env = {**_child_env(tmp, backend), **(extra_env or {})}
    env = {k: v for k, v in env.items() if v is not None}  # None: unset it
    try:
        proc = subprocess.run(command, env=env, cwd=REPO,
                              timeout=timeout, stdout=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if proc.returncode != 0 or not os.path.exists(path):
        return {"error": f"child exited with status {proc.returncode} (see stderr above)"}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _fresh(code, n, tmp):
    """Run ``python -c code`` n times (after one uncounted warm-up run); parsed JSON."""
    out = []
    for i in range(n + 1):
        proc = subprocess.run([sys.executable, "-c", code], env=_child_env(tmp, "jax"),
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1][:200]}
        if i:  # the first run only warms the file cache
            out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"seconds": [r["seconds"] for r in out],
            "median_s": statistics.median(r["seconds"] for r in out),
            "heavy": sorted({m for r in out for m in r["heavy"]}),
            "magics": all(r.get("magics", True) for r in out)}


# ---------------------------------------------------------------- context
def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle
                     if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        import psutil

        ram = f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM"
    except ImportError:
        ram = "RAM unknown"
    return f"{cpu}, {os.cpu_count()} cores, {ram}, {platform.system()} {platform.release()}"


def versions():
    names = ["keras", "jax", "jaxlib", "tensorflow", "torch", "numpy", "matplotlib",
             "ipywidgets", "ipython", "tensorboard", "livelossplot", "loss_inspect"]
    found = [f"python {platform.python_version()}"]
    for name in names:
        for dist in (name, f"{name}-cpu") if name == "tensorflow" else (name,):
            try:
                found.append(f"{name} {metadata.version(dist)}")
                break
            except metadata.PackageNotFoundError:
                continue
        else:
            found.append(f"{name} not installed")
    return ", ".join(found)


def git_commit():
    def git(*args):
        return subprocess.run(["git", "--no-optional-locks", "-C", REPO, *args],
                              capture_output=True, text=True, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD") or "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + (" + uncommitted changes" if dirty else "")


def _load():
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        return child(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated subset of jax,tensorflow,torch")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: one round, short fits, 2,000 torch steps "
                             "(about 17 minutes on a 2-core CPU; less with --models tiny "
                             "or --paired-seconds 0)")
    parser.add_argument("--rounds", type=int,
                        help="timed rounds of interleaved fits (default 6, --quick 1; "
                             "0 skips them)")
    parser.add_argument("--fit-seconds", type=float, metavar="S",
                        help="length of one plain fit() of the tiny model (the mid "
                             "model's is 1.5 S); default 1, --quick 0.3")
    parser.add_argument("--live-seconds", type=float, metavar="S",
                        help="length of the live widget's fits on the tiny model "
                             "(and of their plain reference); default 8, --quick 4")
    parser.add_argument("--paired-seconds", type=float, metavar="S",
                        help="length of each of the three phases of the paired "
                             "short-fit measurement of each model (_paired.py); "
                             "default 45, --quick 8; 0 skips it")
    parser.add_argument("--steps-seconds", type=float, metavar="S",
                        help="length of each of the three phases of the interleaved "
                             "single-step measurement of each model (_steps.py); "
                             "default 20, --quick 5; 0 skips it")
    parser.add_argument("--kernel-seconds", type=float, metavar="S",
                        help="time for the pairs of plain and %%%%losses cells in a real "
                             "kernel (_kernel.py), per backend; default 240, --quick 30; "
                             "0 skips it")
    parser.add_argument("--models", default="tiny,mid",
                        help="comma-separated subset of tiny,mid (default: both)")
    parser.add_argument("--no-scale", dest="scale", action="store_false",
                        help="only the fit() overhead rows")
    parser.add_argument("--default-malloc", action="store_true",
                        help="run the fit() children with glibc's adaptive malloc "
                             "thresholds instead of fixed ones (MALLOC_ENV)")
    parser.add_argument("--out", metavar="PATH", help="also write the markdown here")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; choose from {','.join(BACKENDS)}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or set(models) - {"tiny", "mid"}:
        parser.error(f"--models takes tiny and/or mid; got {args.models!r}")
    settings = dict(QUICK if args.quick else FULL, models=models)
    if args.rounds is not None:
        settings["rounds"] = args.rounds
    if args.fit_seconds:
        settings["seconds"] = {"tiny": args.fit_seconds, "mid": 1.5 * args.fit_seconds}
    if args.live_seconds:
        settings["live_seconds"] = {"tiny": args.live_seconds}
    if args.paired_seconds is not None:
        settings["paired_seconds"] = args.paired_seconds
    if args.steps_seconds is not None:
        settings["steps_seconds"] = args.steps_seconds
    if args.kernel_seconds is not None:
        settings["kernel_seconds"] = args.kernel_seconds
    # --default-malloc also unsets the two variables where the caller's
    # environment has them, so that glibc really runs with its default.
    malloc_env = dict.fromkeys(MALLOC_ENV) if args.default_malloc else MALLOC_ENV
    header = {"machine": machine(), "versions": versions(), "commit": git_commit(),
              "malloc": ("glibc's adaptive default (`--default-malloc`)"
                         if args.default_malloc else
                         ", ".join(f"`{k}={v}`" for k, v in MALLOC_ENV.items())
                         + " for the `fit()` children"),
              "load_start": _load(),
              "command": "python tests/bench/benchmark.py " + " ".join(argv)}
    start = time.perf_counter()

    def stage(message):
        print(f"[bench {time.perf_counter() - start:5.0f}s] {message}", file=sys.stderr,
              flush=True)

    results, paired, steps, kernel, scale = {}, {}, {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="li-bench-") as tmp:
        for backend in backends:
            if settings["rounds"] > 0:
                stage(f"fit() overhead on {backend} ...")
                results[backend] = _run_child("fit", backend, settings, tmp, timeout=1800,
                                              extra_env=malloc_env)
            if settings["paired_seconds"] > 0:
                stage(f"paired short fits on {backend} ...")
                paired[backend] = _run_child(
                    "paired", backend, settings, tmp, extra_env=malloc_env,
                    timeout=sum(len(_paired.runs(model, backend)) for model in models)
                    * (3 * settings["paired_seconds"] + 600))
            if settings["steps_seconds"] > 0:
                stage(f"interleaved single steps on {backend} ...")
                steps[backend] = _run_child(
                    "steps", backend, settings, tmp, extra_env=malloc_env,
                    timeout=len(models) * (3 * settings["steps_seconds"] + 600))
            if settings["kernel_seconds"] > 0 and "tiny" in models:
                stage(f"%%losses cells in a kernel on {backend} ...")
                kernel[backend] = _run_child(
                    "kernel", backend, settings, tmp, extra_env=malloc_env,
                    timeout=2 * settings["kernel_seconds"] + 900)
        if args.scale:
            stage("history memory and redraw ...")
            scale["history"] = _run_child("history", "jax", settings, tmp, timeout=900)
            if "torch" in backends:
                stage("torch resident memory ...")
                scale["torch"] = _run_child("torch-memory", "torch", settings, tmp,
                                            timeout=settings["torch_seconds"] + 300)
            stage("import times ...")
            scale["import"] = _fresh(_scale.IMPORT_CODE, settings["processes"], tmp)
            scale["load_ext"] = _fresh(_scale.LOAD_EXT_CODE, settings["processes"], tmp)
    stage("done")
    header["load_end"] = _load()
    text = _report.render(results, scale, settings, header, time.perf_counter() - start,
                          paired, steps, kernel)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        print(f"[bench] wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
