"""Every contact loss_inspect has with Keras's private internals lives here.

Supported Keras versions: 3.14 and 3.15 (CI runs 3.15.1; ``tests/test_keras_internals.py``
checks each private attribute used below on the installed version). Keras 3.14
is the floor because it normalises activity regularizers by batch size (#22021)
and fixed ``add_loss`` under JAX jit (#22395); both change recorded values.

What is used, and why:

* ``Layer.add_loss`` / ``Layer.__call__``: an ``add_loss`` called from
  ``Layer.__call__`` itself is an activity-regularizer term; one called from
  user code is an ``add_loss`` term. Keras gives them no other distinguishing mark.
* ``Layer._layers`` / ``_trainable_variables``: qualified layer and variable paths.
* ``Trainer._aggregate_additional_loss``: called once per ``model.losses`` entry
  inside ``compute_loss``; wrapping it sees the exact values Keras sums.
* ``Trainer._compile_loss`` (``CompileLoss.call`` and ``_flat_losses``): the
  compiled total and each output's unweighted loss, without calling it twice
  (a second call would update its per-output loss trackers twice).
* ``Trainer._metrics``: the recorder's state metric is appended so that it is
  threaded through JAX's stateless train step like any metric.
* ``current_call_ctx`` global and ``in_symbolic_scope``: tell an outermost
  eager call from nested calls and from symbolic shape inference.
* ``train_function`` / ``test_function`` / ``predict_function``: traced step
  functions are rebuilt on attach (so they contain the hook) and restored on detach.
* TensorFlow ``Trainer.distribute_strategy``: several replicas are refused
  (each replica records its share, which Keras rescales).
* JAX ``_jax_state`` / ``_jax_state_synced`` / ``jax_state_sync``: a Ctrl-C held
  until a step's entry writes that step's input state back before it is raised.
* ``CallbackList._async_train``: whether ``fit()`` dispatches batch ends to a
  thread pool, which decides the cheaper JAX row write (`batch_ends_async`).
"""

from __future__ import annotations

import collections
import functools
import inspect
import sys
import warnings

import keras
from keras.src.backend.common import global_state as _global_state
from keras.src.backend.common.stateless_scope import in_stateless_scope as _in_stateless_scope
from keras.src.backend.common.symbolic_scope import in_symbolic_scope as _in_symbolic_scope

MIN_KERAS = (3, 14)
TESTED_KERAS = ((3, 14), (3, 15))

_INSTANCE_ATTRS = (
    "compute_loss",
    "_aggregate_additional_loss",
    "call",
    "fit",
    "evaluate",
    "train_on_batch",
    "test_on_batch",
    "predict",
    "train_step",
    "test_step",
    "make_train_function",
    "make_test_function",
    "make_predict_function",
)


def keras_version() -> tuple[int, ...]:
    """Installed Keras version as a tuple of ints (``(3, 15, 1)``)."""
    parts = []
    for piece in keras.__version__.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_version() -> None:
    """Raise for a Keras older than `MIN_KERAS`; warn once for an untested newer one."""
    version = keras_version()
    if version[:2] < MIN_KERAS:
        raise ImportError(
            f"loss_inspect needs keras>={'.'.join(map(str, MIN_KERAS))}; "
            f"found keras {keras.__version__}. Upgrade with: pip install -U keras"
        )
    if version[:2] not in TESTED_KERAS:
        warnings.warn(
            f"loss_inspect is tested with Keras "
            f"{', '.join('.'.join(map(str, v)) for v in TESTED_KERAS)}; found "
            f"{keras.__version__}. The breakdown is checked against Keras's own "
            "total at every step, so a mismatch would show as a 'residual' term.",
            stacklevel=3,
        )


def backend() -> str:
    return keras.backend.backend()


def eager_steps() -> bool:
    """torch: train and test steps run eagerly, so their rows reach the host
    directly (no traced state to carry them)."""
    return backend() == "torch"


def stateless_steps() -> bool:
    """JAX: a step is a pure function of a state tuple that Keras donates to it
    and writes back to the variables only when ``fit()`` / ``evaluate()``
    return; the recorder reads its rows from the step's output instead."""
    return backend() == "jax"


def jit_reuses_traces_of_equal_methods() -> bool:
    """JAX: Keras jits the bound method ``model.train_step``; bound methods of
    one model compare equal, so while an old jitted function is alive (a
    stored traceback keeps it), JAX hands a new ``jit`` its old trace, with
    the hooks of a recorder that is gone. A fresh function per recorder
    (`Recorder` shadows ``train_step`` / ``test_step``) cannot be mistaken."""
    return backend() == "jax"


def write_row_in_place(values, cursor, index, row, slice_update: bool = False) -> bool:
    """``values[index] = row; cursor += 1`` without Keras's generic scatter,
    where that is cheaper. False where it is not (the caller scatters).

    TensorFlow: in place on the ``tf.Variable``s (one op each, not read +
    scatter + assign). JAX, when ``slice_update``: ``lax.dynamic_update_slice``
    of the donated buffer, which costs a tiny model's step 1-2 % where Keras's
    scatter costs 20 %, but only where each step's logs are waited for; see
    `batch_ends_async` for why JAX does not always take it.
    """
    name = backend()
    if name == "tensorflow":
        values.value.scatter_nd_update(index, row)
        cursor.value.assign_add(1)
        return True
    if name == "jax" and slice_update:
        from jax import lax

        current = values.value
        start = (index[0, 0].astype(cursor.value.dtype), 0)
        values.assign(lax.dynamic_update_slice(current, row.astype(current.dtype), start))
        cursor.assign(cursor.value + 1)
        return True
    return False


def waits_for_each_train_step(entry_point: str, callbacks=()) -> bool:
    """JAX: does ``entry_point`` wait for each train step's logs?

    Then a step's device time is on the critical path and its row is best
    written with a slice update (`write_row_in_place`): ``train_on_batch``
    returns the logs as numbers, and ``fit()`` converts them in the main
    thread unless Keras hands its batch ends to a thread pool
    (`batch_ends_async`). False on the other backends: TensorFlow writes in
    place either way, torch keeps its rows on the host.
    """
    if backend() != "jax":
        return False
    if entry_point == "train_on_batch":
        return True
    return entry_point == "fit" and not batch_ends_async(callbacks)


def batch_ends_async(callbacks) -> bool:
    """Will ``fit(callbacks=callbacks)`` hand its batch ends to Keras's thread pool?

    Keras 3.15 does so on thread-safe backends (JAX, torch) unless a callback
    has a batch-end hook and is not ``async_safe`` (``ModelCheckpoint``,
    ``TensorBoard``, ``TerminateOnNaN``...). The mode decides which JAX row
    write is cheaper (docs/performance.md, 2026-12-07): with batch ends in the
    main thread every step's logs are waited for and the scatter's device time
    is paid in full; with the thread pool the slice update made long fits
    slower. ``CallbackList``'s own ``_async_train`` is read, not re-derived.
    """
    if not isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = keras.callbacks.CallbackList(list(callbacks or []))
    return bool(getattr(callbacks, "_async_train", False))


def tf_replicas(model) -> int:
    """Replicas of the TensorFlow distribution strategy ``model`` trains under (1 elsewhere)."""
    if backend() != "tensorflow":
        return 1
    strategy = getattr(model, "distribute_strategy", None)  # the model's, or the scope's
    return int(getattr(strategy, "num_replicas_in_sync", 1) or 1)


def detach_all(values) -> tuple:
    """torch: each tensor cut from autograd with ``Tensor.detach`` (no Keras
    dispatch: this runs at every eager step). TensorFlow and JAX eager values
    keep no graph alive; they are returned as they are."""
    if backend() != "torch":
        return tuple(values)
    return tuple([v.detach() if hasattr(v, "detach") else v for v in values])


def stack_scalars(values, dtype):
    """torch: ``torch.stack`` of 0-d tensors that already have ``dtype``,
    without Keras's conversion of each element (a block holds hundreds).
    None where that does not apply; the caller then takes Keras's path."""
    if backend() != "torch" or not values:
        return None
    import torch

    if not all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in values):
        return None
    dtypes = {v.dtype for v in values}
    if len(dtypes) != 1 or keras.backend.standardize_dtype(dtypes.pop()) != dtype:
        return None
    return torch.stack(values)


# --------------------------------------------------------------------- models
def describe_non_model(obj) -> str | None:
    """Why ``obj`` cannot be recorded, or None if it is a Keras 3 model."""
    if isinstance(obj, keras.Model):
        return None
    cls = type(obj)
    name = f"{cls.__module__}.{cls.__qualname__}"
    module = cls.__module__ or ""
    if module.startswith(("tf_keras", "keras.src.engine", "tensorflow.python.keras")) or (
        module.startswith("keras.") and not module.startswith("keras.src")
    ) or _is_tf_keras_model(obj):
        hint = (
            "This is a tf.keras / Keras 2 model. loss_inspect needs a Keras 3 "
            "model: build it with `import keras` (keras>=3), not `tf.keras` or "
            "`tf_keras`."
        )
    elif isinstance(obj, keras.layers.Layer):
        hint = (
            "This is a Keras layer, not a model. Attach to the model that "
            "contains it; its terms appear under its layer path."
        )
    else:
        hint = "Pass a keras.Model (Sequential, Functional or a subclass)."
    return f"Expected a Keras 3 model (keras.Model); got {name}: {_short_repr(obj)}. {hint}"


def _is_tf_keras_model(obj) -> bool:
    for mod_name in ("tf_keras", "tensorflow.python.keras.engine.training"):
        mod = sys.modules.get(mod_name)
        model_cls = getattr(mod, "Model", None) if mod else None
        if model_cls is not None and isinstance(obj, model_cls):
            return True
    return False


def _short_repr(obj, limit: int = 60) -> str:
    try:
        text = repr(obj)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(obj).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_overridden(model, name: str) -> bool:
    """Has the model's class (or the user) replaced Keras's ``name`` method?"""
    own = type(model).__dict__.get(name)
    if own is not None:
        return True
    for klass in type(model).__mro__[1:]:
        if name in klass.__dict__:
            return not klass.__module__.startswith("keras.")
    return False


def layer_tree(model) -> list[tuple[object, str]]:
    """Every layer under ``model`` (itself first) with its qualified path.

    Breadth first from the model, so a shared layer is named by its shortest
    path (``vae/encoder/sampling``), as in Keras's own ``_flatten_layers``.
    """
    out = [(model, model.name)]
    seen = {id(model)}
    queue = collections.deque((child, model.name) for child in model._layers)
    while queue:
        layer, parent = queue.popleft()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        path = f"{parent}/{layer.name}"
        out.append((layer, path))
        queue.extend((child, path) for child in getattr(layer, "_layers", ()))
    return out


def regularized_variables(model, tree) -> list[tuple[object, str]]:
    """Trainable variables with a regularizer, in ``model.losses`` order, with paths.

    ``Layer._get_regularization_losses`` appends one term per variable of
    ``model.trainable_weights`` whose ``regularizer`` is set, in that order.
    """
    owner = {}
    for layer, path in tree:
        for variable in getattr(layer, "_trainable_variables", ()):
            owner.setdefault(id(variable), path)
    out = []
    for variable in model.trainable_weights:
        if getattr(variable, "regularizer", None) is None:
            continue
        base = owner.get(id(variable), model.name)
        out.append((variable, f"{base}/{variable.name}"))
    return out


@functools.lru_cache(maxsize=None)
def layer_call_code():
    """Code object of ``Layer.__call__``, the caller of activity-regularizer add_loss."""
    from keras.src.layers.layer import Layer

    return inspect.unwrap(Layer.__call__).__code__


def called_from_layer_call(depth: int = 2) -> bool:
    """Is the caller ``depth`` frames up Keras's ``Layer.__call__``?"""
    return sys._getframe(depth).f_code is layer_call_code()


# ------------------------------------------------------------ instance patches
def set_instance_attr(obj, name: str, value) -> None:
    """Shadow a method on one instance, bypassing Keras's attribute tracking."""
    obj.__dict__[name] = value


def del_instance_attr(obj, name: str) -> None:
    obj.__dict__.pop(name, None)


def instance_attr(obj, name: str):
    return obj.__dict__.get(name)


def compile_loss(model):
    """The model's ``CompileLoss`` (None before compile or with ``loss=None``)."""
    return getattr(model, "_compile_loss", None)


def compiled_entries(compile_loss_obj):
    """``(name, loss_fn, weight)`` per compiled output, or None before it is built."""
    flat = getattr(compile_loss_obj, "_flat_losses", None)
    if not flat:
        return None
    return [(entry.name, entry.loss, entry.loss_weights) for entry in flat]


def replace_compiled_loss_fns(compile_loss_obj, loss_fns) -> list:
    """Swap each output's loss function; returns the previous entries."""
    previous = list(compile_loss_obj._flat_losses)
    compile_loss_obj._flat_losses = [
        entry._replace(loss=fn) for entry, fn in zip(previous, loss_fns)
    ]
    return previous


def restore_compiled_entries(compile_loss_obj, previous) -> None:
    compile_loss_obj._flat_losses = previous


def compile_loss_dtype(compile_loss_obj):
    return compile_loss_obj.dtype


def add_state_metric(model, metric) -> None:
    model._metrics.append(metric)


def remove_state_metric(model, metric) -> None:
    model._metrics[:] = [m for m in model._metrics if m is not metric]


def step_functions(model) -> dict:
    return {
        "train": getattr(model, "train_function", None),
        "test": getattr(model, "test_function", None),
        "predict": getattr(model, "predict_function", None),
    }


def set_step_function(model, kind: str, fn) -> None:
    setattr(model, f"{kind}_function", fn)


def metrics_variables_index(model, variables) -> list[int]:
    """Positions of ``variables`` in ``model.metrics_variables`` (JAX state order)."""
    ids = [id(v) for v in model.metrics_variables]
    return [ids.index(id(v)) for v in variables]


def jax_metrics_state(output):
    """The metrics-variable values a JAX train/test function returned."""
    _logs, state = output
    return state[-1]


def raw_value(variable):
    """A variable's array without Keras's accessors (None once JAX purged it)."""
    return variable._value


_JAX_STATE_PARTS = {
    "train": ("trainable_variables", "non_trainable_variables",
              "optimizer_variables", "metrics_variables"),
    "test": ("trainable_variables", "non_trainable_variables", "metrics_variables"),
}


def jax_restore_state(model, kind: str, step_args) -> bool:
    """Write the state a JAX step function was about to receive back to the model.

    The JAX trainer purges the model's variables while its loop runs and
    keeps their values in ``_jax_state``; ``jax_state_sync`` writes them back.
    Used before an interrupt is raised at a step's entry, so that the model
    holds whole, not donated, arrays. False when the arguments are not the
    ``(state, data)`` pair this Keras passes (nothing is changed then).
    """
    parts = _JAX_STATE_PARTS.get(kind)
    state = step_args[0] if step_args else None
    if parts is None or not isinstance(state, (tuple, list)) or len(state) != len(parts):
        return False
    model._jax_state = dict(zip(parts, state))
    model._jax_state_synced = False
    model.jax_state_sync()
    model._jax_state = None
    return True


# ----------------------------------------------------------- execution context
#: Keras's global attribute for the open layer-call context (3.14, 3.15).
_CALL_CTX = "current_call_ctx"


def in_symbolic_scope() -> bool:
    return _in_symbolic_scope()


def in_stateless_scope() -> bool:
    return _in_stateless_scope()


def call_context_entry():
    """The layer whose call opened the current call context, or None."""
    ctx = _global_state.get_global_attribute(_CALL_CTX)
    return None if ctx is None else ctx.entry_layer


def clear_stale_call_context() -> bool:
    """Drop a layer-call context that an exception left behind; True if one was.

    ``Layer.__call__`` (Keras 3.14, 3.15) opens the global call context, and
    clears the layers' last losses, before the ``try`` whose ``finally``
    closes it: a Ctrl-C landing there (clearing the losses of many layers
    takes a while) leaves it open. Every later call of the model then runs as
    if nested and keeps the interrupted step's losses: on PyTorch the next
    ``fit()`` fails with "Trying to backward through the graph a second time".
    Called when a Keras entry point (``fit``, ``evaluate``...) raises, where
    no layer call can still be running.
    """
    if _global_state.get_global_attribute(_CALL_CTX) is None:
        return False
    _global_state.set_global_attribute(_CALL_CTX, None)
    return True


def is_concrete(value) -> bool:
    """True for an eager value that can be read now (not a graph tensor or tracer)."""
    if isinstance(value, keras.KerasTensor):
        return False
    return _concrete_check(backend())(value)


@functools.lru_cache(maxsize=None)
def _concrete_check(name: str):
    if name == "tensorflow":
        import tensorflow as tf

        return lambda value: not tf.is_symbolic_tensor(value) if tf.is_tensor(value) else True
    if name == "jax":
        import jax

        return lambda value: not isinstance(value, jax.core.Tracer)
    # torch: shape inference runs on "meta" tensors, which hold no data.
    return lambda value: not getattr(value, "is_meta", False)


def own_eager_losses(layer) -> list:
    """Loss tensors a layer stored in its last eager call (``Layer._losses``)."""
    return list(getattr(layer, "_losses", ()))


def had_stateless_losses(layer) -> bool:
    """Did the layer add losses inside a stateless scope (JAX train step)?"""
    return bool(getattr(layer, "_loss_ids", ())) and not getattr(layer, "_losses", ())
