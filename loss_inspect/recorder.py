"""`attach` a recorder to a Keras 3 model and keep its `LossHistory` growing.

The recorder shadows a few methods on the model *instance* (never its class):
``compute_loss`` and ``_aggregate_additional_loss`` to see every term of a
step, ``call`` to see eager forward passes, ``make_*_function`` to read the
rows each execution wrote, ``fit`` to know the epoch, and ``add_loss`` on each
layer to know who added what. `Recorder.detach` removes every one of them and
restores the traced step functions the model had, so the model is left as it
was. Private Keras attributes are only touched through `_keras_internals`;
turning what a step saw into history records is `_readback.RowReadback`'s job.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
import weakref

import keras
import numpy as np

from . import _add_loss_hooks, _capture, _keras_internals as internals
from ._interrupts import InterruptGate
from ._readback import BLOCK_ROWS, RowReadback, _optimizer_iterations
from ._terms import LossRegistry
from .history import NO_EPOCH, LossHistory, NonFiniteLossError

__all__ = ["Recorder", "attach", "recorders", "recorder_for"]

#: id(model) -> its recorder. Weak: a recorder lives as long as its model
#: (whose shadowed methods hold it) or its user, never because of this table.
_ATTACHED: "weakref.WeakValueDictionary[int, Recorder]" = weakref.WeakValueDictionary()
_PHASE_OF_FUNCTION = {"train": "train", "test": "eval", "predict": "predict"}
NAN_POLICIES = ("ignore", "warn", "raise")
_LISTENER_FAILURES_TOLERATED = 3


def attach(
    model, *, capacity: int | None = None, every: int = 1, nan: str = "ignore"
) -> "Recorder":
    """Start recording the loss breakdown of ``model``; see `Recorder`.

    Attaching to a model that already has a recorder returns that recorder
    (so re-running a notebook cell is harmless), unless other options are
    asked for: that raises ``ValueError`` (detach first). ``with
    attach(model):`` detaches it on exit either way.

    A recorder keeps its model alive while attached only through the
    methods it shadows on the model: dropping the model (and the recorder)
    lets both be garbage-collected. Once detached it holds the model weakly.

    Args:
        model: a Keras 3 ``keras.Model``.
        capacity: most terms one traced step can carry (TensorFlow / JAX).
            By default it is sized from the model; terms past it are summed
            into ``residual`` until the next ``fit()`` resizes the buffer.
        every: keep one train record in ``every`` (steps divisible by it);
            eval and call records are all kept. Non-finite checks still see
            every step.
        nan: what a NaN/inf term does: ``"ignore"`` (it is recorded, as
            always), ``"warn"`` (once) or ``"raise"`` (`NonFiniteLossError`
            out of ``fit()``; the records up to it are kept).

    Raises:
        TypeError: ``model`` is not a Keras 3 model.
        ValueError: a bad ``capacity``, ``every`` or ``nan``, or options other
            than those of the recorder already attached to ``model``.
        NotImplementedError: the model trains under a TensorFlow distribution
            strategy with several replicas.
    """
    problem = internals.describe_non_model(model)
    if problem is not None:
        raise TypeError(problem)
    if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
        raise ValueError(
            f"capacity must be a positive int (number of terms); got {capacity!r}."
        )
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ValueError(f"every must be a positive int (keep 1 step in N); got {every!r}.")
    if nan not in NAN_POLICIES:
        raise ValueError(f"nan must be one of {NAN_POLICIES}; got {nan!r}.")
    existing = recorder_for(model)
    if existing is not None:
        asked = {"every": every, "nan": nan}
        have = {"every": existing.every, "nan": existing.nan}
        if capacity is not None:
            asked["capacity"], have["capacity"] = capacity, existing._capacity_wanted
        if asked != have:
            wanted = ", ".join(f"{k}={v!r}" for k, v in asked.items() if have[k] != v)
            current = ", ".join(f"{k}={have[k]!r}" for k, v in asked.items() if have[k] != v)
            raise ValueError(
                f"Model {model.name!r} already has a recorder attached with {current}; "
                f"attach() would return it, not one with {wanted}. Detach it first "
                "(rec.detach() on the recorder attach() gave you; li.recorders() "
                "lists the attached ones), then attach again."
            )
        return existing
    replicas = internals.tf_replicas(model)
    if replicas > 1:
        raise NotImplementedError(
            f"Model {model.name!r} trains under a TensorFlow distribution strategy "
            f"with {replicas} replicas; loss_inspect cannot record that yet (each "
            "replica sees its share of the batch and Keras rescales the loss, so the "
            "recorded terms would not add up to Keras's loss). Inspect the breakdown "
            "on one replica (build the model outside the strategy's scope), or use "
            "the JAX backend with keras.distribution.DataParallel, which is supported."
        )
    return Recorder(model, capacity=capacity, every=every, nan=nan)


def recorders() -> list["Recorder"]:
    """Recorders that are attached now."""
    return list(_ATTACHED.values())


def recorder_for(model) -> "Recorder | None":
    """The recorder attached to ``model``, or None."""
    recorder = _ATTACHED.get(id(model))
    if recorder is not None and recorder.model is model:
        return recorder
    return None


class _EpochTracker(keras.callbacks.Callback):
    """Tells the recorder which epoch ``fit()`` is in (no batch hooks: no slowdown)."""

    def __init__(self, recorder: "Recorder"):
        super().__init__()
        self._recorder = recorder

    def on_epoch_begin(self, epoch, logs=None):
        self._recorder._flush_or_warn()  # rows of the previous epoch keep its number
        self._recorder._epoch = int(epoch)

    def on_train_end(self, logs=None):
        self._recorder._flush_or_warn()  # the last epoch's rows keep its number
        self._recorder._epoch = NO_EPOCH


class _RecordingLossFn:
    """Stands in for one compiled output's loss function and notes its value."""

    def __init__(self, fn, index: int, recorder: "Recorder"):
        self._fn = fn
        self._index = index
        self._recorder = recorder

    def __call__(self, *args, **kwargs):
        value = self._fn(*args, **kwargs)
        capture = self._recorder._capture
        if capture is not None:
            capture.compiled_parts.append((self._index, value))
        return value

    def __getattr__(self, name):
        return getattr(self._fn, name)


class Recorder(RowReadback):
    """Records every loss term of ``model`` at each step, eval batch and eager call.

    Create it with `attach`. It is a context manager: ``with attach(m) as rec:``
    detaches on exit, also on an exception or ``KeyboardInterrupt``.

    Attributes:
        history: the `LossHistory`, growing while the model trains.
        model: the recorded model (None once it was garbage-collected).
        attached: False after `detach`.
    """

    def __init__(
        self, model, *, capacity: int | None = None, every: int = 1, nan: str = "ignore"
    ):
        internals.check_version()
        self.every = every
        self.nan = nan
        self._listeners: list = []
        self._listener_failures: dict[int, int] = {}
        self._nonfinite_seen = False
        self._stop_error: NonFiniteLossError | None = None
        self._notified_executions = 0
        self._executions = 0  # step-function calls and recorded eager calls
        self._unread = 0  # rows the device may hold that the host has not read
        self._pending = None  # (output, jax_index, state) of the last call
        self._model_ref = weakref.ref(model, self._model_collected)
        self._model_id = id(model)
        self._model_name = model.name
        self._stateless = internals.stateless_steps()  # JAX
        # JAX only: a Ctrl-C inside its training loop can delete the state.
        self._interrupts = InterruptGate() if self._stateless else None
        self._history = LossHistory()
        self._layouts = _capture.LayoutTable()
        self._layout_columns: dict[int, np.ndarray] = {}
        self._eager_layouts: dict[tuple, tuple] = {}  # see RowReadback._emit_eager
        self._registry = LossRegistry()
        self._capture: _capture.StepCapture | None = None
        self._phase: str | None = None
        self._epoch = NO_EPOCH
        self._step = _optimizer_iterations(model)
        self._call_depth = 0
        self._fit_depth = 0
        # Train steps traced now write their row with a slice update (JAX):
        # set while fit() runs with batch ends in the main thread and in
        # train_on_batch, where each step's logs are waited for.
        self._slice_rows = False
        self._entry_depth = 0  # Keras loops running (fit, evaluate, predict, ...)
        self._release_pending = False
        self._compute_loss_calls = 0
        self._eager_rows: list = []
        self._cursor_seen = 0
        self._warned: set[str] = set()
        self._compute_loss_overridden = internals.is_overridden(model, "compute_loss")
        self._dtype = "float64" if keras.config.floatx() == "float64" else "float32"

        self._tree = internals.layer_tree(model)
        self._regularizer_paths = [
            path for _, path in internals.regularized_variables(model, self._tree)
        ]
        self._weights_seen = len(model.weights)
        self._built_seen = bool(model.built)
        self._capacity_wanted = capacity or _default_capacity(model, self._tree)
        self._state: _capture.StateBuffer | None = None
        self._hooked_compile_loss = None
        self._compiled_previous = None
        self._compiled_info: list[tuple[str, object]] | None = None
        self._saved_functions = internals.step_functions(model)
        self._saved_compile_token = _compile_token(model)
        self._add_loss_hooks: list = []  # (layer, hook)
        self._attached = True
        _ATTACHED[self._model_id] = self
        try:
            self._install(model)
        except BaseException:
            self.detach()
            raise

    # ----------------------------------------------------------- public API
    @property
    def history(self) -> LossHistory:
        self._flush()
        return self._history

    @property
    def model(self):
        return self._model_ref()

    @property
    def attached(self) -> bool:
        return self._attached

    def detach(self) -> None:
        """Stop recording and undo every change made to the model (idempotent).

        Called while Keras runs a loop on the model (from a callback inside
        ``fit()``), it stops recording at once and restores the model when
        that loop returns: Keras fetches the step function on every batch.
        """
        if not self._attached:
            return
        try:
            self._flush_quietly()
        finally:
            self._attached = False
            if _ATTACHED.get(self._model_id) is self:
                del _ATTACHED[self._model_id]
            if self._entry_depth:
                self._release_pending = True
            else:
                self._release()

    def _release(self) -> None:
        """Undo every change to the model, then hold it only weakly."""
        self._release_pending = False
        model = self.model
        if model is not None:
            self._uninstall(model)
        self._registry.clear()
        self._eager_rows.clear()
        self._pending = self._capture = None
        self._tree, self._saved_functions = [], {}

    def add_listener(self, listener) -> None:
        """Call ``listener(recorder, final)`` after each batch of new records.

        Listeners run on the main thread right after a step function returns
        (``final=True`` once ``fit()`` has finished). An exception in a
        listener is reported once as a warning and never reaches training;
        a listener that keeps failing is removed.
        """
        if listener not in self._listeners:
            self._listeners.append(listener)

    def remove_listener(self, listener) -> None:
        self._listeners = [fn for fn in self._listeners if fn != listener]  # bound methods: ==

    def _notify(self, final: bool = False) -> None:
        if not final and self._executions == self._notified_executions:
            return  # nothing ran since the last notification
        self._notified_executions = self._executions
        for listener in list(self._listeners):
            try:
                listener(self, final)
            except Exception as exc:  # a view must never break training
                count = self._listener_failures.get(id(listener), 0) + 1
                self._listener_failures[id(listener)] = count
                self._warn_once(
                    f"listener-{id(listener)}",
                    f"loss_inspect: a display of the breakdown failed "
                    f"({type(exc).__name__}: {exc}); training goes on.",
                )
                if count >= _LISTENER_FAILURES_TOLERATED:
                    self.remove_listener(listener)

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.detach()

    def __repr__(self) -> str:
        state = "attached" if self._attached else "detached"
        return (
            f"<loss_inspect.Recorder model={self._model_name!r} {state}, "
            f"{self._history.records} records, {len(self._history.keys())} terms>"
        )

    # -------------------------------------------------------- installation
    def _install(self, model) -> None:
        self._ensure_state(model)
        for kind in ("train", "test", "predict"):
            internals.set_step_function(model, kind, None)
        for layer, path in self._tree:
            self._add_loss_hooks.append(
                (layer, _add_loss_hooks.install(layer, self._registry, path)))
        self._patch(model, "compute_loss", self._make_compute_loss)
        self._patch(model, "_aggregate_additional_loss", self._make_aggregate)
        self._patch(model, "call", self._make_call)
        self._patch(model, "fit", self._make_fit)
        if internals.jit_reuses_traces_of_equal_methods():
            for name in ("train_step", "test_step"):
                self._patch(model, name, _fresh_alias)
        for name in ("evaluate", "train_on_batch", "test_on_batch", "predict"):
            self._patch(model, name, self._make_entry_point)
        for kind in ("train", "test", "predict"):
            self._patch(
                model,
                f"make_{kind}_function",
                functools.partial(self._make_function_factory, kind=kind),
            )
        self._hook_compile_loss(model)

    def _patch(self, obj, name: str, factory) -> None:
        if internals.instance_attr(obj, name) is not None:
            raise RuntimeError(
                f"{type(obj).__name__}.{name} is already replaced on this instance "
                "(another tool is patching it), so loss_inspect cannot attach safely."
            )
        original = getattr(obj, name)
        internals.set_instance_attr(obj, name, factory(original))

    def _uninstall(self, model) -> None:
        for name in internals._INSTANCE_ATTRS:
            internals.del_instance_attr(model, name)
        for layer, hook in self._add_loss_hooks:
            _add_loss_hooks.remove(layer, hook)
        self._add_loss_hooks.clear()
        self._unhook_compile_loss()
        if self._state is not None:
            internals.remove_state_metric(model, self._state)
            self._state = None
        same_compile = _compile_token(model) == self._saved_compile_token
        for kind, fn in self._saved_functions.items():
            internals.set_step_function(model, kind, fn if same_compile else None)

    def _refresh_structure(self, model) -> None:
        """Pick up layers and variables created after attach (a subclassed
        model attached before its first call builds them then)."""
        self._built_seen = bool(model.built)
        if len(model.weights) == self._weights_seen:
            return
        self._weights_seen = len(model.weights)
        self._tree = internals.layer_tree(model)
        hooked = {id(layer) for layer, _ in self._add_loss_hooks}
        for layer, path in self._tree:
            if id(layer) not in hooked:
                self._add_loss_hooks.append(
                    (layer, _add_loss_hooks.install(layer, self._registry, path)))
        self._regularizer_paths = [
            path for _, path in internals.regularized_variables(model, self._tree)
        ]

    def _ensure_state(self, model) -> None:
        """(Re)build the state buffer when capacity or steps_per_execution outgrew it."""
        if internals.eager_steps():
            return  # torch: rows go straight to the host
        rows = max(BLOCK_ROWS, 2 * _steps_per_execution(model))
        state = self._state
        if state is not None and state.rows >= rows and state.capacity >= self._capacity_wanted:
            return
        if state is not None:
            internals.remove_state_metric(model, state)
            for kind in ("train", "test"):
                internals.set_step_function(model, kind, None)
        self._state = _capture.StateBuffer(rows, self._capacity_wanted, self._dtype)
        self._cursor_seen = 0
        internals.add_state_metric(model, self._state)

    def _hook_compile_loss(self, model) -> None:
        """Wrap the CompileLoss (and, once built, each output's loss function)."""
        compile_loss = internals.compile_loss(model)
        if compile_loss is self._hooked_compile_loss:
            return
        self._unhook_compile_loss()
        if compile_loss is None:
            return
        recorder = self
        original_call = compile_loss.call
        original_build = compile_loss.build

        @functools.wraps(original_call)
        def call(*args, **kwargs):
            value = original_call(*args, **kwargs)
            if recorder._capture is not None:
                recorder._capture.compiled_total = value
            return value

        @functools.wraps(original_build)
        def build(*args, **kwargs):
            # CompileLoss builds itself inside its first call, then loops over
            # its per-output losses: wrap them right here so that this very
            # call (often the only trace of the train step) is split too.
            result = original_build(*args, **kwargs)
            recorder._wrap_compiled_fns(compile_loss)
            return result

        internals.set_instance_attr(compile_loss, "call", call)
        internals.set_instance_attr(compile_loss, "build", build)
        self._hooked_compile_loss = compile_loss
        self._wrap_compiled_fns(compile_loss)

    def _wrap_compiled_fns(self, compile_loss) -> None:
        if self._compiled_previous is not None:
            return
        entries = internals.compiled_entries(compile_loss)
        if entries:
            fns = [_RecordingLossFn(fn, i, self) for i, (_, fn, _) in enumerate(entries)]
            self._compiled_previous = internals.replace_compiled_loss_fns(compile_loss, fns)
            self._compiled_info = [(name, weight) for name, _, weight in entries]

    def _unhook_compile_loss(self) -> None:
        compile_loss = self._hooked_compile_loss
        if compile_loss is None:
            return
        internals.del_instance_attr(compile_loss, "call")
        internals.del_instance_attr(compile_loss, "build")
        if self._compiled_previous is not None:
            internals.restore_compiled_entries(compile_loss, self._compiled_previous)
        self._hooked_compile_loss = None
        self._compiled_previous = None
        self._compiled_info = None

    # ----------------------------------------------------- method wrappers
    def _make_compute_loss(self, original):
        recorder = self

        @functools.wraps(original)
        def compute_loss(*args, **kwargs):
            y_pred = kwargs["y_pred"] if "y_pred" in kwargs else (
                args[2] if len(args) > 2 else None
            )
            if (recorder._phase not in ("train", "eval") or not recorder._attached
                    or _capture.is_symbolic_call(y_pred)):
                return original(*args, **kwargs)
            model = recorder.model
            if not recorder._built_seen:  # built since attach (and the last trace)
                recorder._refresh_structure(model)
            recorder._hook_compile_loss(model)
            capture = _capture.StepCapture()
            outer, recorder._capture = recorder._capture, capture
            try:
                total = original(*args, **kwargs)
            finally:
                recorder._capture = outer
            recorder._compute_loss_calls += 1
            try:
                recorder._emit(capture, total, y_pred)
            except Exception as exc:  # never let the recorder break training
                recorder._internal_error(exc)
            return total

        return compute_loss

    def _make_aggregate(self, original):
        recorder = self

        @functools.wraps(original)
        def aggregate(loss):
            value = original(loss)
            if recorder._capture is not None:
                recorder._capture.added.append((loss, value))
            return value

        return aggregate

    def _make_call(self, original):
        recorder = self

        @functools.wraps(original)
        def call(*args, **kwargs):
            if not recorder._attached:  # detached inside fit(): restored when it returns
                return original(*args, **kwargs)
            recorder._call_depth += 1
            if recorder._call_depth == 1:
                recorder._registry.clear()
            try:
                outputs = original(*args, **kwargs)
            finally:
                recorder._call_depth -= 1
            if recorder._call_depth == 0 and recorder._phase is None:
                try:
                    if recorder._record_call(outputs):
                        recorder._executions += 1
                except Exception as exc:
                    recorder._internal_error(exc)
                recorder._notify()
                if recorder._fit_depth == 0:
                    recorder._raise_pending()
            return outputs

        return call

    def _make_fit(self, original):
        recorder = self
        signature = inspect.signature(original)

        @functools.wraps(original)
        def fit(*args, **kwargs):
            bound = signature.bind_partial(*args, **kwargs)
            callbacks = bound.arguments.get("callbacks")
            tracker = _EpochTracker(recorder)
            if isinstance(callbacks, keras.callbacks.CallbackList):
                callbacks.append(tracker)
            else:
                bound.arguments["callbacks"] = [*(callbacks or []), tracker]
            model = recorder.model
            if recorder._entry_depth == 0 and recorder._attached:
                recorder._sync_step_or_warn(model)
                recorder._ensure_state(model)
            recorder._fit_depth += 1
            recorder._entry_depth += 1
            outer_slice_rows = recorder._slice_rows
            recorder._slice_rows = internals.waits_for_each_train_step(
                "fit", bound.arguments["callbacks"])
            try:
                with recorder._interrupt_guard():
                    result = original(*bound.args, **bound.kwargs)
            except BaseException:
                recorder._fit_depth -= 1
                recorder._entry_point_raised()
                recorder._flush_quietly()  # keep what ran; never mask the error
                recorder._epoch = NO_EPOCH
                recorder._stop_error = None
                raise
            finally:
                recorder._slice_rows = outer_slice_rows
                if isinstance(callbacks, keras.callbacks.CallbackList):
                    callbacks.callbacks.remove(tracker)
                recorder._left_entry_point()
            recorder._fit_depth -= 1
            recorder._flush_or_warn()
            recorder._epoch = NO_EPOCH
            recorder._notify(final=True)
            recorder._raise_pending()
            return result

        return fit

    def _make_entry_point(self, original):
        """Wrap a Keras entry point so a pending `NonFiniteLossError` is raised
        only after Keras has written the step's state back to the model, and
        a `detach` from inside it waits for it to return."""
        recorder = self
        slice_rows = internals.waits_for_each_train_step(getattr(original, "__name__", ""))

        @functools.wraps(original)
        def entry_point(*args, **kwargs):
            if recorder._entry_depth == 0 and recorder._attached:
                recorder._sync_step_or_warn(recorder.model)
            recorder._entry_depth += 1
            outer_slice_rows = recorder._slice_rows
            recorder._slice_rows = slice_rows or outer_slice_rows
            try:
                with recorder._interrupt_guard():
                    result = original(*args, **kwargs)
            except BaseException:
                recorder._entry_point_raised()
                if recorder._fit_depth == 0:
                    recorder._stop_error = None
                raise
            finally:
                recorder._slice_rows = outer_slice_rows
                recorder._left_entry_point()
            if recorder._fit_depth == 0:  # fit() validates with evaluate(): fit raises
                recorder._raise_pending()
            return result

        return entry_point

    def _entry_point_raised(self) -> None:
        """An outermost entry point is raising: no layer call can still be
        running, so a call context Keras left open is stale (see
        `internals.clear_stale_call_context`)."""
        if self._entry_depth == 1:
            internals.clear_stale_call_context()

    def _left_entry_point(self) -> None:
        self._entry_depth -= 1
        if self._entry_depth == 0 and self._release_pending:
            self._release()

    def _interrupt_guard(self):
        gate = self._interrupts
        return gate.guard() if gate is not None else contextlib.nullcontext()

    def _raise_pending(self) -> None:
        error, self._stop_error = self._stop_error, None
        if error is not None:
            raise error

    def _make_function_factory(self, original, kind: str):
        recorder = self

        @functools.wraps(original)
        def make_function(*args, **kwargs):
            if not recorder._attached:  # detached inside fit(): restored when it returns
                return original(*args, **kwargs)
            model = recorder.model
            recorder._refresh_structure(model)
            if kind != "predict" and recorder._fit_depth == 0:
                recorder._ensure_state(model)
            step = internals.instance_attr(model, f"{kind}_step")
            if kind != "predict" and getattr(step, "_loss_inspect_alias", False):
                # A new function per build: JAX must trace it anew (also when
                # the user forces a rebuild to pick up a changed layer).
                internals.set_instance_attr(model, f"{kind}_step", _fresh_alias(step.__wrapped__))
            result = original(*args, **kwargs)
            fn = internals.step_functions(model)[kind]
            if fn is not None and getattr(fn, "_loss_inspect_recorder", None) is not recorder:
                wrapped = recorder._wrap_step_function(fn, kind)
                internals.set_step_function(model, kind, wrapped)
                if result is fn:
                    result = wrapped
            return result

        return make_function

    def _wrap_step_function(self, fn, kind: str):
        recorder = self
        phase = _PHASE_OF_FUNCTION[kind]
        state = self._state if kind != "predict" else None
        jax_index = None
        if state is not None and self._stateless:
            jax_index = internals.metrics_variables_index(
                self.model, [state.values, state.cursor]
            )
        rows_per_call = _steps_per_execution(self.model)
        first_call = [kind != "predict"]

        @functools.wraps(fn)
        def step_function(*args, **kwargs):
            gate = recorder._interrupts
            if gate is not None and kind != "predict" and gate.step_starting():
                # A Ctrl-C held since the last step: the state passed in is whole.
                if internals.jax_restore_state(recorder.model, kind, args):
                    raise KeyboardInterrupt
                gate.pending = True  # unknown state layout: raise when Keras returns
            if kind != "predict":
                recorder._pending = None  # JAX donates the last state to this call
            outer, recorder._phase = recorder._phase, phase
            calls_before = recorder._compute_loss_calls
            eager_before = len(recorder._eager_rows)
            try:
                output = fn(*args, **kwargs)
            except BaseException:
                recorder._drop_unfinished_eager_rows(kind, eager_before)
                if recorder._stateless and kind != "predict":
                    recorder._restore_state_of_failed_step(kind, args)
                raise
            finally:
                recorder._phase = outer
            if kind != "predict" and recorder._attached:
                try:
                    recorder._after_execution(output, state, jax_index, rows_per_call)
                except Exception as exc:  # never let the recorder break training
                    recorder._internal_error(exc)
                if first_call[0]:
                    first_call[0] = False
                    if recorder._compute_loss_calls == calls_before:
                        recorder._warn_bypassed_compute_loss(kind)
                recorder._notify()
            return output

        step_function._loss_inspect_recorder = recorder
        return step_function

    def _restore_state_of_failed_step(self, kind: str, step_args) -> None:
        """JAX: give the model back the state a failed step received.

        Keras's JAX loops purge the model's variables and keep their values
        in local variables, written back only when the loop ends normally: an
        exception in a step (in its trace, say a bug in ``call()`` or a
        Ctrl-C) leaves the model without weights ("'NoneType' object is not
        callable" at the next ``fit()``). The step's input state is the state
        after the last completed step, as recorded; it is written back unless
        the step had already consumed (donated) it.
        """
        model = self.model
        state = step_args[0] if step_args else None
        if model is None or state is None:
            return
        try:
            if all(_capture.is_readable(v) for v in keras.tree.flatten(state)):
                internals.jax_restore_state(model, kind, step_args)
        except Exception:  # never mask the step's own error
            pass

    # ----------------------------------------------------------- messages
    def _warn_bypassed_compute_loss(self, kind: str) -> None:
        model = self.model
        method = f"{type(model).__name__}.{kind}_step"
        self._warn_once(
            f"bypass-{kind}",
            f"{method} did not call compute_loss(), so loss_inspect sees no "
            f"per-term breakdown for its {_PHASE_OF_FUNCTION[kind]} steps. Still "
            "visible: eager forward passes model(x) (phase 'call') and "
            "li.snapshot(model). To get the breakdown, compute the loss in "
            f"{kind}_step with self.compute_loss(x, y, y_pred, sample_weight).",
        )

    def _internal_error(self, exc: Exception) -> None:
        self._warn_once(
            "internal",
            f"loss_inspect could not record a step ({type(exc).__name__}: {exc}); "
            "training goes on unrecorded for such steps. This is a loss_inspect "
            "bug; please report it.",
        )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _model_collected(self, _ref) -> None:
        self._attached = False
        _ATTACHED.pop(self._model_id, None)


def _fresh_alias(method):
    """A new function object that calls ``method`` (see
    `_keras_internals.jit_reuses_traces_of_equal_methods`)."""

    @functools.wraps(method)
    def alias(*args, **kwargs):
        return method(*args, **kwargs)

    alias._loss_inspect_alias = True
    return alias


def _steps_per_execution(model) -> int:
    """Steps (so rows) one call of a traced step function may run."""
    return max(1, int(getattr(model, "steps_per_execution", 1) or 1))


def _compile_token(model) -> tuple:
    """What the traced step functions depend on; if it changed, they are stale."""
    return (
        id(getattr(model, "optimizer", None)),
        id(internals.compile_loss(model)),
        getattr(model, "compiled", False),
        getattr(model, "_jit_compile", None),
        getattr(model, "_run_eagerly", None),
        getattr(model, "steps_per_execution", 1),
    )


def _default_capacity(model, tree) -> int:
    regularized = sum(
        1 for v in model.trainable_weights if getattr(v, "regularizer", None) is not None
    )
    activity = sum(1 for layer, _ in tree if getattr(layer, "activity_regularizer", None))
    custom = sum(1 for layer, _ in tree if not type(layer).__module__.startswith("keras."))
    try:
        outputs = len(model.outputs)
    except (AttributeError, TypeError, ValueError):
        outputs = 1
    return max(16, regularized + 2 * activity + 2 * custom + outputs + 8)
