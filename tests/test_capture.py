"""The packed-row machinery: layouts, the ring buffer, decoding."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from loss_inspect import _capture, _keras_internals
from loss_inspect._terms import Origin


def test_layouts_are_interned_per_phase_and_origins():
    table = _capture.LayoutTable()
    a = table.intern("train", [Origin("compiled"), Origin("add_loss", "m/x")])
    b = table.intern("train", [Origin("compiled"), Origin("add_loss", "m/x")])
    c = table.intern("eval", [Origin("compiled"), Origin("add_loss", "m/x")])
    d = table.intern("train", [Origin("compiled")])
    assert a is b and a.id == 0 and (c.id, d.id) == (1, 2)
    assert [t.key for t in a.terms] == ["compiled", "add_loss:m/x"]
    assert table.layouts == [a, c, d]


def test_state_buffer_wraps_around_and_keeps_every_row_until_read():
    buffer = _capture.StateBuffer(rows=3, capacity=4, dtype="float32")
    assert buffer.result() == {}
    for step in range(5):
        buffer.write(ops.convert_to_tensor([0.0, 16.0, float(step), 1.0], dtype="float32"))
    buffer.reset_state()  # Keras resets metrics every epoch: must not touch rows
    rows = ops.convert_to_numpy(buffer.values.value)
    assert int(ops.convert_to_numpy(buffer.cursor.value)) == 5
    assert rows.shape == (3, 4 + 3)
    # row index = step % 3; steps 3 and 4 overwrote rows 0 and 1
    np.testing.assert_array_equal(rows[:, 2], [3.0, 4.0, 2.0])
    np.testing.assert_array_equal(rows[:, 4:], 0.0)  # short rows are zero-padded


def test_packed_row_is_header_then_values_cut_from_autograd():
    table = _capture.LayoutTable()
    layout = table.intern("train", [Origin("compiled"), Origin("regularizer", "m/d/kernel")])
    total = ops.convert_to_tensor(1.5)
    values = [ops.convert_to_tensor(1.25), 0.25, ops.convert_to_tensor([[0.5]], "float64")]
    row = _capture.pack_row(layout.id, 8, total, values, "float32")
    np.testing.assert_array_equal(_capture.to_numpy(row), [0.0, 8.0, 1.5, 1.25, 0.25, 0.5])
    assert _capture.to_numpy(row).dtype == np.float32
    # An eager step keeps its values as they are; its block is stacked (and
    # cast, and reshaped) only when it is read.
    rows = [_capture.eager_row(total, values), _capture.eager_row(total * 2, values)]
    block = _capture.stack_eager_rows(rows, "float32")
    assert block.dtype == np.float64 and block.shape == (2, 4)
    np.testing.assert_array_equal(block, [[1.5, 1.25, 0.25, 0.5], [3.0, 1.25, 0.25, 0.5]])


def test_eager_rows_of_one_dtype_take_the_single_stack_path():
    rows = [_capture.eager_row(ops.convert_to_tensor(float(i), "float32"),
                               [ops.convert_to_tensor(0.5 * i, "float32")]) for i in range(3)]
    flat = [v for row in rows for v in row]
    fast = _keras_internals.stack_scalars(flat, "float32")
    assert (fast is not None) == (keras.backend.backend() == "torch")
    np.testing.assert_array_equal(_capture.stack_eager_rows(rows, "float32"),
                                  [[0.0, 0.0], [1.0, 0.5], [2.0, 1.0]])
    # another dtype than the history's: the per-value path casts
    assert _keras_internals.stack_scalars(flat, "float64") is None
    np.testing.assert_array_equal(_capture.stack_eager_rows(rows, "float64")[:, 0], [0, 1, 2])


def test_eager_rows_keep_no_autograd_graph():
    if keras.backend.backend() == "torch":
        import torch

        weight = torch.ones((), requires_grad=True)
        row = _capture.eager_row(weight * 3, [weight * 2])
        assert all(not v.requires_grad and v.grad_fn is None for v in row)
    else:  # TF and JAX eager values hold no graph: kept as they are, no op
        total, value = ops.convert_to_tensor(3.0), ops.convert_to_tensor(2.0)
        row = _capture.eager_row(total, [value])
        assert row[0] is total and row[1] is value
    np.testing.assert_array_equal(_capture.stack_eager_rows([row], "float32"), [[3.0, 2.0]])


def test_to_numpy_reads_variables_and_tensors():
    variable = keras.Variable(np.arange(3, dtype="float32"))
    np.testing.assert_array_equal(_capture.to_numpy(variable), [0, 1, 2])
    np.testing.assert_array_equal(_capture.to_numpy(ops.ones((2,))), [1, 1])
    assert _capture.to_numpy(3.0) == 3.0


def test_batch_size_and_symbolic_detection():
    assert _capture.batch_size_of(ops.ones((5, 2))) == 5
    assert np.isnan(_capture.batch_size_of(None))
    assert _capture.batch_size_of({"a": ops.ones((7, 1)), "b": ops.ones((7, 3))}) == 7
    assert _capture.is_symbolic_call(keras.KerasTensor((None, 2)))
    assert not _capture.is_symbolic_call(ops.ones((2, 2)))


def test_row_write_is_in_place_and_jax_slice_update_lowers_without_scatter(backend):
    """TensorFlow writes a row with the variables' own ops; JAX, when asked,
    with a dynamic-update-slice of the buffer (no scatter in the program)."""
    buffer = _capture.StateBuffer(rows=3, capacity=2, dtype="float32")
    row = ops.convert_to_tensor([0.0, 8.0, 1.5, 1.0, 0.5], dtype="float32")
    index = ops.reshape(ops.mod(buffer.cursor.value, buffer.rows), (1, 1))
    wrote = _keras_internals.write_row_in_place(
        buffer.values, buffer.cursor, index, ops.expand_dims(row, 0), slice_update=True)
    assert wrote == (backend in ("tensorflow", "jax"))
    if wrote:
        np.testing.assert_array_equal(_capture.to_numpy(buffer.values)[0], row)
        assert int(_capture.to_numpy(buffer.cursor)) == 1
    if backend != "jax":
        return
    import jax

    def step(values, cursor, row, slice_update):
        mapping = [(buffer.values, values), (buffer.cursor, cursor)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            buffer.write(row, slice_update=slice_update)
        return scope.get_current_value(buffer.values), scope.get_current_value(buffer.cursor)

    for slice_update in (True, False):
        jitted = jax.jit(step, static_argnums=3)
        text = jitted.lower(buffer.values.value, buffer.cursor.value, row, slice_update).as_text()
        assert ("scatter" not in text) == slice_update, text
        assert ("dynamic_update_slice" in text) == slice_update, text
        values, cursor = jitted(buffer.values.value, buffer.cursor.value, row, slice_update)
        np.testing.assert_array_equal(np.asarray(values)[1], row)  # the cursor was 1
        assert int(cursor) == 2
