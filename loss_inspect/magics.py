"""``%%losses`` and ``%losses``: the IPython surface of loss_inspect.

Load with ``%load_ext loss_inspect``. No IPython event callbacks are
registered (per-step work happens in Keras, through the recorder), so
``%reload_ext`` can never leave duplicates; unloading detaches every recorder
these magics attached.
"""

from __future__ import annotations

import difflib
import shlex
import warnings

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

__all__ = ["LossInspectMagics", "load", "unload"]

_PHASE_CHOICES = ("train", "eval", "all")
_PLOT_CHOICES = ("stack", "lines", "share", "none")  # plotting.VIEWS + none
_NAN_CHOICES = ("warn", "raise", "ignore")
# Which shells have the magics (and so what %unload_ext must remove). Kept
# across importlib.reload(loss_inspect.magics), which would otherwise forget
# a registration that is still live.
_MAGICS: dict[int, "LossInspectMagics"] = globals().get("_MAGICS", {})


def load(shell) -> None:
    """Register the magics once per shell (a second load is a no-op).

    A failed load leaves nothing registered: a ``%losses`` or ``%%losses``
    that is not ours (another extension's, or the user's own) is refused
    before anything is touched, and a failure while registering is undone.
    """
    if id(shell) in _MAGICS:
        return
    tables = shell.magics_manager.magics
    for kind, prefix in (("line", "%"), ("cell", "%%")):
        taken = tables[kind].get("losses")
        if taken is not None and not _is_ours(taken):
            raise UsageError(
                f"loss_inspect was not loaded: {prefix}losses is already defined "
                f"by {_describe(taken)}. Remove it first (del get_ipython()."
                f"magics_manager.magics[{kind!r}]['losses']), then %load_ext loss_inspect."
            )
    magics = LossInspectMagics(shell)
    try:
        shell.register_magics(magics)
        _MAGICS[id(shell)] = magics
    except BaseException:
        _unregister(shell, magics)
        raise


def unload(shell) -> None:
    """Remove the magics and detach every recorder they attached."""
    magics = _MAGICS.pop(id(shell), None)
    if magics is None:
        return
    magics.detach_all()
    _unregister(shell, magics)


def _unregister(shell, magics) -> None:
    manager = shell.magics_manager
    for kind in ("line", "cell"):
        table = manager.magics[kind]
        if getattr(table.get("losses"), "__self__", None) is magics:
            del table["losses"]
    registry = manager.registry
    name = type(magics).__name__
    if registry.get(name) is magics:
        del registry[name]


def _is_ours(func) -> bool:
    """A magic of a LossInspectMagics, also one made before a module reload."""
    owner = type(getattr(func, "__self__", None))
    return owner.__module__ == __name__ and owner.__name__ == "LossInspectMagics"


def _describe(func) -> str:
    """``module.Class`` of a magic method's owner, else the function (or callable)."""
    owner = getattr(func, "__self__", None)
    target = type(owner) if owner is not None else func
    if not hasattr(target, "__qualname__"):
        target = type(target)  # a callable object, e.g. an %alias
    return f"{target.__module__}.{target.__qualname__}"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--every expects a positive integer; got {text!r}.") from None
    if value < 1:
        raise UsageError(f"--every expects a positive integer; got {value}.")
    return value


@magics_class
class LossInspectMagics(Magics):
    """The ``losses`` line and cell magic."""

    def __init__(self, shell):
        super().__init__(shell)
        self._owned = []  # recorders these magics attached and must detach

    def detach_all(self) -> None:
        for recorder in self._owned:
            recorder.detach()
        self._owned.clear()

    @magic_arguments()
    @argument("model", nargs="?", help="the Keras 3 model: a name or expression "
              "in the notebook (net, gan.generator, models[0]).")
    @argument("-o", dest="output", metavar="NAME",
              help="store the LossReport (recorder, history, breakdown) in NAME.")
    @argument("-q", dest="quiet", action="store_true", help="no output.")
    @argument("--every", type=_positive_int, default=1, metavar="N",
              help="record every N-th train step (eval and forward passes: all).")
    @argument("--plot", choices=_PLOT_CHOICES, default="stack",
              help="figure at the end of the cell: stack (default), lines, share or none.")
    @argument("--logy", action="store_true", help="log-scale y axis.")
    @argument("--no-live", dest="live", action="store_false",
              help="no live widget while the cell runs (also: LOSS_INSPECT_LIVE=0).")
    @argument("--phase", choices=_PHASE_CHOICES, default="train",
              help="records in the table: train (default), eval or all.")
    @argument("--nan", choices=_NAN_CHOICES, default="warn",
              help="non-finite term: warn (default), raise (stop training with an "
                   "error naming the term, layer and step) or ignore.")
    @argument("--on", metavar="EXPR",
              help="line magic only: run MODEL(EXPR, training=True) first.")
    @argument("-h", "--help", dest="help", action="store_true", help="show this help.")
    @no_var_expand
    @line_cell_magic
    def losses(self, line: str = "", cell: str | None = None):
        """Show what a Keras 3 model's loss is made of.

        Cell magic: attach to MODEL for the cell, run it (a ``fit()``, a custom
        loop, forward passes), detach, then show the breakdown table and a
        figure of every term over the steps. A live widget follows training.
        Line magic: the terms of MODEL's ``model.losses`` from its last eager
        forward pass; with no MODEL, the recorders attached now.

        Examples::

            In [1]: %load_ext loss_inspect
            In [2]: %%losses model -o report --plot lines
               ...: model.fit(x, y, epochs=3, verbose=0)
            In [3]: %losses model --on x[:32]
        """
        args = self._parse(line)
        if args.help:
            print(self.losses.__doc__)
            return None
        if cell is None:
            return self._line(args)
        return self._cell(args, cell)

    # ------------------------------------------------------------ parsing
    def _parse(self, line: str):
        try:
            shlex.split(line)  # the message IPython gives for this is a raw traceback
        except ValueError as exc:
            raise UsageError(f"%losses: cannot parse {line!r}: {exc}.") from None
        parser = self.losses.parser
        parser.allow_abbrev = False  # --ev must not silently mean --every
        args = parse_argstring(self.losses, line)
        for name in ("model", "output", "on"):
            value = getattr(args, name)
            if isinstance(value, str):
                setattr(args, name, _unquote(value))
        if args.output is not None and not args.output.isidentifier():
            raise UsageError(f"-o expects a variable name; got {args.output!r}.")
        return args

    def _resolve_model(self, expression: str):
        if expression[:1] in ("$", "{"):
            raise UsageError(
                f"%losses takes the model as a Python expression; {expression!r} is "
                "not expanded ($ and {} are left alone). Write e.g. %losses model."
            )
        namespace = self.shell.user_ns
        try:
            value = eval(expression, namespace)  # noqa: S307 - the user's own namespace
        except NameError as exc:
            name = getattr(exc, "name", None) or expression
            known = [k for k in namespace if not k.startswith("_")]
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UsageError(f"%losses: no variable named {name!r} in the notebook.{hint}") from None
        except Exception as exc:
            raise UsageError(
                f"%losses: could not evaluate {expression!r}: {type(exc).__name__}: {exc}"
            ) from None
        from ._keras_internals import describe_non_model

        problem = describe_non_model(value)
        if problem is not None:
            raise UsageError(f"%losses {expression}: {problem}")
        return value

    # --------------------------------------------------------- line magic
    def _line(self, args):
        from .recorder import recorders
        from .snapshots import snapshot

        if args.model is None:
            if args.on is not None:
                raise UsageError("--on needs a MODEL: %losses MODEL --on EXPR")
            attached = recorders()
            if not attached:
                print("No loss_inspect recorder is attached.")
            for recorder in attached:
                print(repr(recorder))
            return None
        model = self._resolve_model(args.model)
        if args.on is not None:
            try:
                inputs = eval(args.on, self.shell.user_ns)  # noqa: S307
            except Exception as exc:
                raise UsageError(
                    f"--on: could not evaluate {args.on!r}: {type(exc).__name__}: {exc}"
                ) from None
            model(inputs, training=True)
        snap = snapshot(model)
        if args.output:
            self.shell.user_ns[args.output] = snap
        if not args.quiet:
            _CellRendering().run(lambda: self._display(snap))
        return None

    # --------------------------------------------------------- cell magic
    def _cell(self, args, cell: str):
        if args.model is None:
            raise UsageError("%%losses needs a MODEL: %%losses model [options]")
        if args.on is not None:
            raise UsageError("--on is for the line magic (%losses MODEL --on EXPR).")
        model = self._resolve_model(args.model)
        from . import report as report_module
        from ._display import live_widgets_enabled
        from .recorder import attach, recorder_for

        existing = recorder_for(model)
        if existing is not None:
            recorder = existing
            saved = (recorder.every, recorder.nan)
            recorder.every, recorder.nan = args.every, args.nan
        else:
            recorder = attach(model, every=args.every, nan=args.nan)
            self._owned.append(recorder)
        start = recorder.history.records
        rendering = _CellRendering()  # one report per cell, whatever fails
        live = follow = None
        if not args.quiet and live_widgets_enabled(args.live):
            live = rendering.run(lambda: self._start_live(recorder, args))
        if live is not None:
            # The recorder would report a failing listener itself, a second
            # time; this wrapper reports through the cell's flag instead.
            follow = rendering.follow(live)
            recorder.add_listener(follow)
        error = None
        try:
            self._run(cell)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if follow is not None:
                recorder.remove_listener(follow)
            if existing is None:
                recorder.detach()
                self._owned = [r for r in self._owned if r is not recorder]
            else:
                recorder.every, recorder.nan = saved
            report = report_module.LossReport(
                recorder, start, phase=args.phase,
                view="stack" if args.plot == "none" else args.plot,
                logy=args.logy, error=error,
            )
            report_module._remember(report)
            if args.output:
                self.shell.user_ns[args.output] = report
            if live is not None:
                # Every record, and "done" or "stopped by <error> at step N";
                # never raises, so the body's exception is the one that shows.
                rendering.run(lambda: live.finish(error))
        if not args.quiet:
            rendering.run(lambda: self._show(report, args))
        return None

    def _run(self, cell: str) -> None:
        """Run the body so that its exceptions (and Ctrl-C) propagate.

        ``shell.run_cell`` would report a failing body as success and fire
        cell events twice; compiling through the shell keeps magics in the
        body working and tracebacks showing its source.
        """
        code = self.shell.transform_cell(cell)
        filename = self.shell.compile.cache(code)
        exec(self.shell.compile(code, filename, "exec"), self.shell.user_ns)  # noqa: S102

    def _start_live(self, recorder, args):
        from IPython.display import display

        from .widgets import LiveView

        phase = None if args.phase == "all" else args.phase
        live = LiveView(recorder, view="stack" if args.plot == "none" else args.plot,
                        phase=phase, logy=args.logy, final_in_fit=False)
        display(live)
        return live

    def _show(self, report, args) -> None:
        from ._display import KERNEL, context

        if context() != KERNEL:
            print(str(report))
            return
        from IPython.display import Image, display

        display(report)
        if args.plot != "none" and len(report.history):
            display(Image(data=report.png(), format="png"))

    def _display(self, obj) -> None:
        from ._display import KERNEL, context

        if context() == KERNEL:
            from IPython.display import display

            display(obj)
        else:
            print(str(obj))


class _CellRendering:
    """The rendering of one cell: its first failure is reported, later ones not.

    Shared by the live view (during training) and the output at the end of
    the cell, so one broken renderer gives one warning per cell, and never
    an exception: training, the cell's own error and later cells go on.
    """

    def __init__(self):
        # Only the description: the exception's traceback would keep the
        # frames of fit() (and the recorder) alive after the cell.
        self.failure: str | None = None

    def run(self, action):
        """``action()``, or None if it raised (reported if it is the first failure)."""
        try:
            return action()
        except Exception as exc:
            if self.failure is None:
                self.failure = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"loss_inspect could not draw the breakdown ({self.failure}); "
                    f"training goes on and the records are kept in li.last().",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return None

    def follow(self, live):
        """A recorder listener that drives ``live`` until something fails."""

        def listener(recorder, final: bool) -> None:
            if self.failure is None:
                self.run(lambda: live(recorder, final))

        return listener


def _unquote(text: str) -> str:
    """``magic_arguments`` keeps quotes (``arg_split(posix=False)``); drop one pair."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text

