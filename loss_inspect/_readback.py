"""The recorder's capture and read-back half: step values in, history rows out.

`RowReadback` is a mixin of `loss_inspect.recorder.Recorder` (as Keras's
``Trainer`` is of ``Model``): the recorder's hooks call `_emit` inside each
``compute_loss`` and `_record_call` after an eager forward pass, and
`_after_execution` after each step-function call. Rows of traced steps wait
in the device buffer (`_capture.StateBuffer`) and are read in blocks, one
host sync per `BLOCK_ROWS` rows, never one per step; rows of eager (torch)
steps wait on the host. `_append` turns them into `LossHistory` records and
applies ``every`` and the ``nan`` policy.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from . import _capture, _keras_internals as internals
from ._terms import Origin, attribute_added
from .history import PHASES, NonFiniteLossError

#: Rows the device keeps between two reads. Reading forces a host sync, so it
#: happens once per block (and at epoch ends, fit ends and history reads),
#: never once per step.
BLOCK_ROWS = 128


class RowReadback:
    """Turns what the hooks saw into packed rows and reads them into the history."""

    def _emit(self, capture: _capture.StepCapture, total, y_pred) -> None:
        """Turn what one ``compute_loss`` call saw into a packed row."""
        eager = internals.is_concrete(total)
        residual = self._compute_loss_overridden
        if eager and not residual:
            self._emit_eager(capture, total, y_pred)
            return
        origins, values = self._terms(capture)
        if not eager and len(values) + residual > self._state.capacity:
            keep = self._state.capacity - 1
            self._capacity_wanted = max(self._capacity_wanted, 2 * (len(values) + 1))
            self._warn_once(
                "capacity",
                f"This step has {len(values)} loss terms, more than the "
                f"{self._state.capacity} the recorder holds per traced step; the "
                f"last {len(values) - keep} are summed into 'residual' until the "
                "next fit() resizes it (or pass attach(model, capacity=N)).",
            )
            origins, values, residual = origins[:keep], values[:keep], True
        if residual:
            explained = (
                ops.sum(ops.stack([ops.cast(ops.reshape(v, ()), total.dtype) for v in values]))
                if values
                else 0.0
            )
            origins.append(Origin("residual"))
            values.append(ops.subtract(total, explained))

        layout = self._layouts.intern(self._phase, origins)
        batch = _capture.batch_size_of(y_pred)
        if eager:  # no op per step: the block is stacked when it is read
            self._eager_rows.append((layout, float(batch), _capture.eager_row(total, values)))
        else:
            row = _capture.pack_row(layout.id, batch, total, values, self._dtype)
            self._state.write(row, slice_update=self._slice_rows and self._phase == "train")

    def _emit_eager(self, capture: _capture.StepCapture, total, y_pred) -> None:
        """`_emit` for an eager step (torch, ``run_eagerly``), which runs it at
        every step: the layout is looked up by what decides it (the phase, the
        outputs seen, each added tensor's registered origin) instead of being
        rebuilt, which took half of `_emit`'s time."""
        parts = capture.compiled_parts
        lookup = self._registry.lookup
        key = (self._phase, capture.compiled_total is not None,
               tuple([index for index, _ in parts]),
               tuple([lookup(tensor) for tensor, _ in capture.added]))
        entry = self._eager_layouts.get(key)
        if (entry is None or entry[1] is not self._compiled_info
                or entry[2] is not self._regularizer_paths):
            per_output = self._per_output(parts)
            layout = self._layouts.intern(self._phase, self._origins(capture, per_output))
            self._eager_layouts[key] = (
                layout, self._compiled_info, self._regularizer_paths, per_output)
        else:
            layout, per_output = entry[0], entry[3]
        values = self._values(capture, per_output)
        batch = float(_capture.batch_size_of(y_pred))
        self._eager_rows.append((layout, batch, _capture.eager_row(total, values)))

    def _terms(self, capture: _capture.StepCapture) -> tuple[list[Origin], list]:
        """Origins and values of the terms one ``compute_loss`` call saw."""
        per_output = self._per_output(capture.compiled_parts)
        return self._origins(capture, per_output), self._values(capture, per_output)

    def _origins(self, capture: _capture.StepCapture, per_output: bool) -> list[Origin]:
        """Where each term of `_values` comes from, in the same order."""
        if per_output:
            info = self._compiled_info
            origins = [Origin("compiled", None, *info[i]) for i, _ in capture.compiled_parts]
        elif capture.compiled_total is not None:
            origins = [Origin("compiled")]
        else:
            origins = []
        added = [tensor for tensor, _ in capture.added]
        return origins + attribute_added(added, self._registry, self._regularizer_paths)

    def _values(self, capture: _capture.StepCapture, per_output: bool) -> list:
        """The step's term values: the compiled loss (per output where
        ``per_output``), then each added loss."""
        if per_output:
            values = self._weighted_parts(capture.compiled_parts)
        elif capture.compiled_total is not None:
            values = [capture.compiled_total]
        else:
            values = []
        return values + [value for _, value in capture.added]

    def _per_output(self, parts) -> bool:
        """Can the compiled loss be split by output? Each output's loss was
        seen once (a loss function shared by outputs is seen more often)."""
        return bool(parts and self._compiled_info and len(parts) == len({i for i, _ in parts}))

    def _weighted_parts(self, parts) -> list:
        """Each output's loss, in the CompileLoss dtype, times its loss weight."""
        dtype = internals.compile_loss_dtype(self._hooked_compile_loss)
        info = self._compiled_info
        values = []
        for index, raw in parts:
            value = _capture.cast(raw, dtype)
            weight = info[index][1]
            if weight is not None:
                value = ops.multiply(value, weight)
            values.append(value)
        return values

    def _record_call(self, outputs) -> bool:
        """Record the terms of an outermost eager ``model(x)`` (phase "call")."""
        model = self.model
        entry = internals.call_context_entry()
        if entry is not None and entry is not model:
            return False  # called as a sublayer of another model
        if internals.in_symbolic_scope() or internals.in_stateless_scope():
            return False  # shape inference, or a stateless_call: not an eager pass
        if not all(internals.is_concrete(t) for t in keras.tree.flatten(outputs)):
            return False  # traced (tf.function, jax.jit, shape inference)
        self._sync_step(model)  # earlier steps come first; custom loops' updates count
        if not self._built_seen:
            self._refresh_structure(model)
        losses = model.losses
        if not all(internals.is_concrete(t) for t in losses):
            return False  # inside tf.function / jax.jit: the values are not readable
        origins = attribute_added(losses, self._registry, self._regularizer_paths)
        layout = self._layouts.intern("call", origins)
        if losses:
            stacked = ops.stack(
                [ops.sum(ops.cast(ops.stop_gradient(t), self._dtype)) for t in losses]
            )
            values = _capture.to_numpy(stacked).astype(np.float64)
        else:
            values = np.zeros(0)
        total = float(np.sum(values)) if len(values) else 0.0
        self._append(layout, [np.nan], [total], values[None, :])
        return True

    def _after_execution(self, output, state, jax_index, rows_per_call) -> None:
        """Account for the rows one step-function call wrote; read them if due.

        The device buffer holds ``state.rows`` rows. It is read (one host
        sync) only when the next call could overwrite unread rows, or when
        non-finite values must stop training at once (``nan="raise"``).
        """
        self._executions += 1
        self._pending = (output, jax_index, state)
        if len(self._eager_rows) >= BLOCK_ROWS or self.nan == "raise":
            self._flush_eager_rows()
        if state is None or state is not self._state:
            return
        self._unread += rows_per_call
        if self._unread + rows_per_call > state.rows or self.nan == "raise":
            self._read_state()

    def _sync_step(self, model) -> None:
        """Count optimizer updates made outside the recorded entry points (a
        custom loop's ``optimizer.apply``): steps are the optimizer's."""
        self._flush()
        self._step = max(self._step, _optimizer_iterations(model))

    def _sync_step_or_warn(self, model) -> None:
        """`_sync_step` as a Keras entry point starts: a failed read is this
        library's bug (`_flush_or_warn`), the user's ``fit()`` runs, and the
        step count stays the optimizer's."""
        self._flush_or_warn()
        self._step = max(self._step, _optimizer_iterations(model))

    def _drop_unfinished_eager_rows(self, kind: str, start: int) -> None:
        """Forget the rows of an eager step that an exception (Ctrl-C) cut
        short, unless the optimizer applied it: the history then holds
        exactly the steps that happened, as with TF's and JAX's atomic steps."""
        rows = self._eager_rows
        if len(rows) <= start:
            return
        if kind == "train":
            done_before = self._step + sum(layout.phase == "train" for layout, _, _ in rows[:start])
            if _optimizer_iterations(self.model) > done_before:
                return
        del rows[start:]

    def _flush(self) -> None:
        """Bring every row the host can reach into the history, in order."""
        if not self._attached:
            return  # detach flushed; later rows belong to no one
        self._flush_eager_rows()
        self._read_state()

    def _flush_or_warn(self) -> None:
        """`_flush` inside Keras's loop: a failure is this library's bug, and
        it is reported as one (`_internal_error`) instead of ending training."""
        try:
            self._flush()
        except Exception as exc:
            self._internal_error(exc)

    def _flush_quietly(self) -> None:
        """`_flush` while another exception is on its way: it must win."""
        try:
            self._flush()
        except Exception:  # e.g. NonFiniteLossError found late: already stopping
            pass

    def _read_state(self) -> None:
        state = self._state
        if state is None or self._unread == 0:
            # Only a step function writes rows, and none ran since the last
            # read: skip the host sync (on TensorFlow a read costs a few
            # tenths of a millisecond, and fit() asked four times per call).
            return
        pending = self._pending
        if self._stateless and pending is not None and pending[2] is state:
            metrics = internals.jax_metrics_state(pending[0])
            values_at, cursor_at = pending[1]
            cursor_source, rows_source = metrics[cursor_at], metrics[values_at]
        elif self._stateless and (self._fit_depth or self._phase is not None):
            # Outside a step the JAX values live in the Keras variables only
            # after fit/evaluate synced them, not while they run.
            return
        else:
            cursor_source, rows_source = state.cursor, state.values
        if not (_capture.is_readable(cursor_source) and _capture.is_readable(rows_source)):
            self._pending = None
            self._warn_once(
                "deleted",
                "The recorder's last unread steps were lost: JAX deleted the "
                "training state when fit() was interrupted twice mid-step (the "
                "model's weights went with it). The history keeps every step "
                "read before that.",
            )
            return
        cursor = int(_capture.to_numpy(cursor_source))
        rows = None if cursor == self._cursor_seen else _capture.to_numpy(rows_source)
        self._unread = 0
        new = cursor - self._cursor_seen
        if new <= 0 or rows is None:
            return
        if new > state.rows:
            self._warn_once(
                "lost",
                f"{new - state.rows} steps ran between two reads of the recorder's "
                f"{state.rows}-row buffer and were not recorded. This is a "
                "loss_inspect bug; please report it.",
            )
            self._cursor_seen = cursor - state.rows
            new = state.rows
        order = (self._cursor_seen + np.arange(new)) % state.rows
        self._cursor_seen = cursor
        self._append_rows(rows[order])

    def _flush_eager_rows(self) -> None:
        if not self._eager_rows:
            return
        pending, self._eager_rows = self._eager_rows, []
        start = 0
        while start < len(pending):  # one transfer per run of equal layouts
            layout = pending[start][0]
            end = start
            while end < len(pending) and pending[end][0] is layout:
                end += 1
            run = pending[start:end]
            block = _capture.stack_eager_rows([row for _, _, row in run], self._dtype)
            batch = np.array([b for _, b, _ in run])
            self._append(layout, batch, block[:, 0], block[:, 1 : 1 + len(layout.terms)])
            start = end

    def _append_rows(self, rows: np.ndarray, layout=None) -> None:
        """Append packed rows ``[layout id, batch, total, values...]``."""
        layouts = self._layouts.layouts
        ids = rows[:, 0].astype(np.intp)
        cuts = [0, *(np.flatnonzero(np.diff(ids)) + 1), len(rows)]
        for start, end in zip(cuts[:-1], cuts[1:]):
            run_layout = layout or layouts[ids[start]]
            n = len(run_layout.terms)
            block = rows[start:end].astype(np.float64)
            self._append(run_layout, block[:, 1], block[:, 2], block[:, 3 : 3 + n])

    def _append(self, layout, batch, totals, values) -> None:
        cols = self._layout_columns.get(layout.id)
        if cols is None:
            cols = np.array([self._history._add_term(t) for t in layout.terms], dtype=np.intp)
            self._layout_columns[layout.id] = cols
        k = len(totals)
        batch = np.asarray(batch, np.float64)
        totals = np.asarray(totals, np.float64)
        if layout.phase == "train":
            steps = np.arange(self._step + 1, self._step + k + 1)
            self._step += k
        else:
            steps = np.full(k, self._step)
        bad = None
        if self.nan != "ignore" and not self._nonfinite_seen:
            bad = _first_nonfinite_row(totals, values)
        keep = slice(None)
        if layout.phase == "train" and self.every > 1:
            keep = steps % self.every == 0
            if bad is not None:
                keep[bad] = True  # the culprit is always recorded
        self._history._append(
            PHASES.index(layout.phase),
            steps[keep],
            np.full(len(steps[keep]), self._epoch),
            batch[keep],
            totals[keep],
            cols,
            values[keep],
        )
        if bad is not None:
            self._nonfinite_seen = True
            self._report_nonfinite()

    def _report_nonfinite(self) -> None:
        where = self._history.first_nonfinite()
        if where is None:  # pragma: no cover - guarded by _first_nonfinite_row
            return
        layer = self._history.term(where.key).layer if where.key != "total" else None
        epoch = f"epoch {where.epoch + 1}, " if where.epoch >= 0 else ""
        message = (
            f"Loss term {where.key!r}{f' (layer {layer})' if layer else ''} became "
            f"{where.value} at step {where.step} ({epoch}{where.phase})."
        )
        if self.nan != "raise":
            self._warn_once("nonfinite", message + " Recording goes on (nan='warn').")
            return
        # Raising here, inside the step, would leave Keras before it writes the
        # step's state back (on JAX the model's arrays would be gone). Stop
        # training the Keras way; fit()/evaluate()/train_on_batch() raise after.
        self._stop_error = NonFiniteLossError(
            message + " Training stopped by loss_inspect (nan='raise'); the records "
            "up to here are kept in the recorder's history.",
            where,
            layer,
        )
        model = self.model
        if model is not None:
            model.stop_training = True


def _first_nonfinite_row(totals, values):
    """Index of the first row with a non-finite total or term, or None."""
    bad = ~np.isfinite(totals)
    if values.size:
        bad |= ~np.all(np.isfinite(values), axis=1)
    rows = np.flatnonzero(bad)
    return int(rows[0]) if rows.size else None


def _optimizer_iterations(model) -> int:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not getattr(optimizer, "built", False):
        return 0
    return int(_capture.to_numpy(optimizer.iterations))
