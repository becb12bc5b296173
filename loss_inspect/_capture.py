"""Per-step capture: pack the terms inside ``compute_loss`` and read them back.

Inside a traced train step (TensorFlow ``tf.function``, JAX ``jit``) Python runs
once per trace, so values cannot be appended to a Python list. Each step instead
writes one row ``[layout id, batch size, total, term values...]`` into a small
ring buffer held by a Keras metric; the metric's variables travel through the
step like any metric's (JAX threads them through its stateless state), and the
host reads the new rows after each execution. Eager steps (PyTorch,
``run_eagerly=True``) hand their row straight to the host instead, with no
capacity limit.

The layout (which terms, in which order) is fixed when the step is traced, and
interned so a row only carries its id.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import ops

from . import _keras_internals as internals
from ._terms import Origin, name_terms
from .history import Term

_HEADER = 3  # layout id, batch size, total


@dataclasses.dataclass(frozen=True)
class Layout:
    """The terms of one kind of record, in row order."""

    id: int
    phase: str
    terms: tuple[Term, ...]


class LayoutTable:
    """Interns layouts so that each row only needs a small integer id."""

    def __init__(self):
        self._by_key: dict[tuple, Layout] = {}
        self.layouts: list[Layout] = []

    def intern(self, phase: str, origins: list[Origin]) -> Layout:
        key = (phase, tuple(origins))
        layout = self._by_key.get(key)
        if layout is None:
            layout = Layout(len(self.layouts), phase, tuple(name_terms(origins)))
            self._by_key[key] = layout
            self.layouts.append(layout)
        return layout


class StateBuffer(keras.metrics.Metric):
    """Ring buffer of packed rows, carried through the train step as metric state.

    ``result()`` is empty, so nothing reaches the logs, the progress bar or
    ``history.history``; ``reset_state()`` is a no-op, so Keras's per-epoch
    metric reset does not disturb the cursor.
    """

    def __init__(self, rows: int, capacity: int, dtype: str):
        super().__init__(name="loss_inspect_state", dtype=dtype)
        self.rows = rows
        self.capacity = capacity
        self.width = capacity + _HEADER
        self.values = self.add_variable(
            shape=(rows, self.width), initializer="zeros", dtype=dtype, name="rows"
        )
        self.cursor = self.add_variable(
            shape=(), initializer="zeros", dtype="int32", name="cursor"
        )

    def update_state(self, *args, **kwargs):  # rows are written by `write`
        pass

    def result(self):
        return {}

    def reset_state(self):
        pass

    def write(self, row, slice_update: bool = False) -> None:
        """Store ``row`` (length <= width) at the cursor and advance it.

        Each backend's cheapest write (`internals.write_row_in_place`); Keras's
        scatter otherwise. Never ``ops.slice_update`` on TensorFlow: without
        XLA it is an XLA op compiled on demand, several times dearer per step.
        ``slice_update`` asks JAX for a slice update instead of the scatter.
        """
        if row.shape[0] < self.width:
            row = ops.pad(row, [[0, self.width - row.shape[0]]])
        cursor = self.cursor.value
        index = ops.reshape(ops.mod(cursor, self.rows), (1, 1))
        row = ops.expand_dims(row, 0)
        if internals.write_row_in_place(self.values, self.cursor, index, row, slice_update):
            return
        self.values.assign(ops.scatter_update(self.values.value, index, row))
        self.cursor.assign(cursor + 1)


@dataclasses.dataclass
class StepCapture:
    """What the hooks saw during one ``compute_loss`` call."""

    compiled_total: object = None
    compiled_parts: list = dataclasses.field(default_factory=list)  # (index, raw)
    added: list = dataclasses.field(default_factory=list)  # (tensor in, value out)


def is_readable(value) -> bool:
    """False for a JAX array that was donated to a step or deleted by an interrupt."""
    if isinstance(value, keras.Variable):
        value = internals.raw_value(value)
        if value is None:  # a JAX variable purged while fit() runs
            return False
    is_deleted = getattr(value, "is_deleted", None)
    return not (callable(is_deleted) and is_deleted())


def to_numpy(value) -> np.ndarray:
    """A numpy copy of a tensor or Keras variable, without Keras's generic path.

    ``keras.ops.convert_to_numpy`` goes through ``np.array(x)``, which on
    TF variables and torch tensors raises a NumPy 2 DeprecationWarning per
    call (their ``__array__`` has no ``copy`` argument): on the per-step path
    that is both noise and time.
    """
    if isinstance(value, keras.Variable):
        value = value.value
    if hasattr(value, "detach"):  # torch
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # TF
        return np.asarray(value.numpy())
    return np.asarray(value)  # JAX arrays, numpy, Python numbers


def pack_row(layout_id: int, batch, total, values, dtype):
    """Stack header (layout id, batch size) and values into one 1-D tensor.

    Casts and reshapes are only added where needed: each is an op per step
    on TensorFlow's executor.
    """
    parts = [ops.convert_to_tensor(float(layout_id), dtype=dtype), _scalar(batch, dtype)]
    parts += [_scalar(v, dtype) for v in (total, *values)]
    return ops.stack(parts)


def eager_row(total, values) -> tuple:
    """``(total, values...)`` of an eager step, kept as they are until their
    block is read: cut off from autograd (no graph stays alive while it
    waits), with nothing stacked or cast per step (`stack_eager_rows` does
    that once per block)."""
    return internals.detach_all((total, *values))


def stack_eager_rows(rows, dtype) -> np.ndarray:
    """Eager rows of equal length as one float64 ``(len(rows), k)`` array:
    one stack and one host transfer for the whole block."""
    flat = [value for row in rows for value in row]
    stacked = internals.stack_scalars(flat, dtype)
    if stacked is None:  # mixed dtypes or shapes, or not torch: Keras's path
        stacked = ops.stack([_scalar(v, dtype) for v in flat])
    return to_numpy(stacked).astype(np.float64).reshape(len(rows), -1)


def _scalar(value, dtype):
    if isinstance(value, (int, float)):  # a static batch size
        return ops.convert_to_tensor(float(value), dtype=dtype)
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) != 0:
        value = ops.reshape(value, ())
    return cast(value, dtype)


def cast(value, dtype):
    """``ops.cast``, skipped where ``value`` has ``dtype`` already (Keras's
    dispatch costs more than the check, at every eager step)."""
    if keras.backend.standardize_dtype(getattr(value, "dtype", None) or "float64") != dtype:
        return ops.cast(value, dtype)
    return value


def batch_size_of(y_pred):
    """Number of samples in ``y_pred`` (first flat tensor), or NaN."""
    if y_pred is None:
        return float("nan")
    flat = flat_tensors(y_pred)
    shape = getattr(flat[0], "shape", ()) if flat else ()
    if len(shape) == 0:
        return float("nan")
    # The static size where there is one (eager steps, JAX traces); a
    # tensor only in a TensorFlow graph with an unknown batch dimension.
    return shape[0] if isinstance(shape[0], int) else ops.shape(flat[0])[0]


def is_symbolic_call(y_pred) -> bool:
    """A ``compute_loss`` call made for shape inference, not for a real step."""
    if internals.in_symbolic_scope():
        return True
    return any(isinstance(t, keras.KerasTensor) for t in flat_tensors(y_pred))


def flat_tensors(structure) -> list:
    """``keras.tree.flatten``, without the tree walk for a lone tensor (the
    usual ``y_pred`` or added loss): this runs at every step."""
    if hasattr(structure, "shape") and hasattr(structure, "dtype"):
        return [structure]
    return keras.tree.flatten(structure)
