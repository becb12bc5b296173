"""Behaviour of `loss_inspect.history.LossHistory` and `Term` (pure numpy).

Histories are built the way the recorder builds them: `_add_term` registers a
term and returns its column, `_append` adds a block of records that share one
phase and one set of term columns.
"""

import dataclasses
import math

import numpy as np
import pytest

from loss_inspect.history import (
    KINDS,
    NO_EPOCH,
    PHASES,
    BreakdownRow,
    LossHistory,
    NonFinite,
    Term,
)

TRAIN, EVAL, CALL = (PHASES.index(p) for p in ("train", "eval", "call"))


def append(h, phase, cols, values, *, steps=None, epochs=None, batch=None, totals=None):
    """Append len(values) records to ``h``; totals default to the row sums."""
    values = np.asarray(values, dtype=np.float64)
    k = values.shape[0] if values.ndim else 0
    values = values.reshape(k, len(cols))
    start = len(h)
    steps = np.arange(start + 1, start + k + 1) if steps is None else np.asarray(steps)
    epochs = np.zeros(k, np.int64) if epochs is None else np.asarray(epochs)
    batch = np.full(k, 16.0) if batch is None else np.asarray(batch, dtype=np.float64)
    totals = values.sum(axis=1) if totals is None else np.asarray(totals, dtype=np.float64)
    h._append(phase, steps, epochs, batch, totals, np.asarray(cols, dtype=np.intp), values)


def two_term_history():
    """compiled + add_loss:m/x, three train records and two eval records."""
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    a = h._add_term(Term("add_loss:m/x", "add_loss", layer="m/x"))
    append(h, TRAIN, [c, a], [[1.0, 2.0], [2.0, 3.0], [3.0, 4.0]],
           steps=[1, 2, 3], epochs=[0, 0, 1])
    append(h, EVAL, [c, a], [[10.0, 20.0], [30.0, 40.0]],
           steps=[3, 3], epochs=[1, 1])
    return h


# ---------------------------------------------------------------- Term


def test_a_compiled_term_whose_loss_weight_changed_keeps_its_column_and_forgets_the_weight():
    h = LossHistory()
    first = h._add_term(Term("compiled:b", "compiled", output="b", weight=0.2))
    append(h, TRAIN, [first], [[0.5]], steps=[1], epochs=[0])
    again = h._add_term(Term("compiled:b", "compiled", output="b", weight=3.0))
    append(h, TRAIN, [again], [[7.5]], steps=[2], epochs=[0])
    assert again == first and h.keys() == ["compiled:b"]
    assert h.term("compiled:b").weight is None  # no one factor holds for both records
    np.testing.assert_array_equal(h["compiled:b"], [0.5, 7.5])
    assert h._add_term(Term("compiled:b", "compiled", output="b", weight=0.2)) == first


def test_a_term_key_taken_by_another_kind_of_term_is_still_refused():
    h = LossHistory()
    h._add_term(Term("compiled:b", "compiled", output="b", weight=0.2))
    with pytest.raises(ValueError, match="already used"):
        h._add_term(Term("compiled:b", "compiled", output="c", weight=0.2))


@pytest.mark.parametrize("kind", ["loss", "Compiled", "", "regularizers"])
def test_term_with_unknown_kind_raises_value_error_naming_kinds(kind):
    with pytest.raises(ValueError, match="kind must be one of") as info:
        Term("k", kind)
    assert repr(kind) in str(info.value)


def test_term_key_total_is_reserved():
    with pytest.raises(ValueError, match="reserved"):
        Term("total", "add_loss")


def test_term_empty_key_is_rejected():
    with pytest.raises(ValueError, match="reserved or empty"):
        Term("", "compiled")


def test_term_accepts_every_documented_kind():
    assert [Term(f"k{i}", kind).kind for i, kind in enumerate(KINDS)] == list(KINDS)


def test_term_is_frozen():
    term = Term("compiled", "compiled")
    with pytest.raises(dataclasses.FrozenInstanceError):
        term.key = "other"


# ---------------------------------------------------------------- empty history


def test_empty_history_has_no_records_and_no_keys():
    h = LossHistory()
    assert len(h) == 0
    assert h.keys() == []
    assert h.terms == []
    assert h["total"].shape == (0,)
    assert h.first_nonfinite() is None
    assert repr(h) == "<LossHistory: 0 records, 0 terms>"


def test_constructor_registers_given_terms_in_order():
    terms = [Term("compiled", "compiled"), Term("add_loss:a", "add_loss", layer="a")]
    h = LossHistory(terms)
    assert h.terms == terms
    assert len(h) == 0
    assert h["add_loss:a"].shape == (0,)


# ---------------------------------------------------------------- key order


def test_keys_are_ordered_by_kind_then_first_seen():
    h = LossHistory()
    cols = [
        h._add_term(Term("regularizer:d/kernel", "regularizer", layer="d/kernel")),
        h._add_term(Term("activity:d", "activity", layer="d")),
        h._add_term(Term("add_loss:b", "add_loss", layer="b")),
        h._add_term(Term("residual", "residual")),
        h._add_term(Term("compiled:out2", "compiled", output="out2")),
        h._add_term(Term("add_loss:a", "add_loss", layer="a")),
        h._add_term(Term("compiled:out1", "compiled", output="out1")),
    ]
    append(h, TRAIN, cols, [[1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0]])
    expected = [
        "compiled:out2",
        "compiled:out1",
        "add_loss:b",
        "add_loss:a",
        "activity:d",
        "regularizer:d/kernel",
        "residual",
    ]
    assert h.keys() == expected
    assert [t.key for t in h.terms] == expected


def test_all_zero_residual_is_hidden_from_keys_and_terms():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    r = h._add_term(Term("residual", "residual"))
    append(h, TRAIN, [c, r], [[1.0, 0.0], [2.0, -0.0]])
    assert h.keys() == ["compiled"]
    assert [t.key for t in h.terms] == ["compiled"]
    assert h.values().shape == (2, 1)
    assert repr(h) == "<LossHistory: 2 records (train 2), 1 terms>"


def test_residual_with_one_nonzero_record_is_shown():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    r = h._add_term(Term("residual", "residual"))
    append(h, TRAIN, [c, r], [[1.0, 0.0], [2.0, 1e-7]])
    assert h.keys() == ["compiled", "residual"]
    assert [t.kind for t in h.terms] == ["compiled", "residual"]


def test_zero_non_residual_term_is_not_hidden():
    h = LossHistory()
    a = h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    append(h, TRAIN, [a], [[0.0], [0.0]])
    assert h.keys() == ["add_loss:a"]


def test_nan_residual_is_shown():
    h = LossHistory()
    r = h._add_term(Term("residual", "residual"))
    append(h, TRAIN, [r], [[0.0], [np.nan]])
    assert h.keys() == ["residual"]


# ---------------------------------------------------------------- indexing


def test_total_and_term_values_are_float64_and_correct():
    h = two_term_history()
    assert h["total"].dtype == np.float64
    assert h["compiled"].dtype == np.float64
    np.testing.assert_array_equal(h["total"], [3.0, 5.0, 7.0, 30.0, 70.0])
    np.testing.assert_array_equal(h["compiled"], [1.0, 2.0, 3.0, 10.0, 30.0])
    np.testing.assert_array_equal(h["add_loss:m/x"], [2.0, 3.0, 4.0, 20.0, 40.0])


def test_mutating_returned_total_does_not_change_history():
    h = two_term_history()
    total = h["total"]
    total[:] = -1.0
    np.testing.assert_array_equal(h["total"], [3.0, 5.0, 7.0, 30.0, 70.0])


def test_mutating_returned_term_does_not_change_history():
    h = two_term_history()
    values = h["compiled"]
    values[0] = 999.0
    assert h["compiled"][0] == 1.0


def test_mutating_metadata_arrays_does_not_change_history():
    h = two_term_history()
    h.steps[:] = 0
    h.epochs[:] = 7
    h.batch_sizes[:] = 0.0
    h.present("compiled")[:] = False
    h.values()[:] = 0.0
    np.testing.assert_array_equal(h.steps, [1, 2, 3, 3, 3])
    np.testing.assert_array_equal(h.epochs, [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(h.batch_sizes, [16.0] * 5)
    assert h.present("compiled").all()
    assert h.values()[0, 0] == 1.0


def test_unknown_key_raises_key_error_naming_key_and_known_keys():
    h = two_term_history()
    with pytest.raises(KeyError) as info:
        h["add_loss:nope"]
    message = info.value.args[0]
    assert "'add_loss:nope'" in message
    assert "Known keys: 'total', 'compiled', 'add_loss:m/x'" in message


def test_unknown_key_in_present_and_term_raises_key_error():
    h = two_term_history()
    with pytest.raises(KeyError, match="nope"):
        h.present("nope")
    with pytest.raises(KeyError, match="nope"):
        h.term("nope")


def test_contains_total_and_term_keys_only():
    h = two_term_history()
    assert "total" in h
    assert "compiled" in h
    assert "add_loss:m/x" in h
    assert "add_loss:other" not in h


def test_term_returns_registered_term():
    h = two_term_history()
    assert h.term("add_loss:m/x") == Term("add_loss:m/x", "add_loss", layer="m/x")


def test_metadata_arrays_have_documented_dtypes_and_values():
    h = two_term_history()
    assert h.steps.dtype == np.int64
    assert h.epochs.dtype == np.int64
    assert h.batch_sizes.dtype == np.float64
    assert list(h.phases) == ["train", "train", "train", "eval", "eval"]


def test_values_matrix_follows_keys_order():
    h = LossHistory()
    a = h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    c = h._add_term(Term("compiled", "compiled"))
    append(h, TRAIN, [a, c], [[1.0, 2.0], [3.0, 4.0]])
    assert h.keys() == ["compiled", "add_loss:a"]
    np.testing.assert_array_equal(h.values(), [[2.0, 1.0], [4.0, 3.0]])


def test_adding_equal_term_twice_returns_same_column():
    h = LossHistory()
    first = h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    second = h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    assert first == second
    assert h.keys() == ["add_loss:a"]


def test_adding_conflicting_term_with_same_key_raises():
    h = LossHistory()
    h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    with pytest.raises(ValueError, match="already used"):
        h._add_term(Term("add_loss:a", "activity", layer="a"))


# ---------------------------------------------------------------- absence


def test_absent_term_reads_nan_and_is_not_present():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    a = h._add_term(Term("add_loss:drop", "add_loss", layer="drop"))
    append(h, TRAIN, [c, a], [[1.0, 0.5]])
    append(h, EVAL, [c], [[2.0]])
    values = h["add_loss:drop"]
    assert values[0] == 0.5
    assert math.isnan(values[1])
    np.testing.assert_array_equal(h.present("add_loss:drop"), [True, False])
    np.testing.assert_array_equal(h.present("compiled"), [True, True])


def test_real_nan_is_present_unlike_absence():
    h = LossHistory()
    a = h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    append(h, TRAIN, [a], [[np.nan]], totals=[np.nan])
    append(h, TRAIN, [], np.zeros((1, 0)), totals=[0.0])
    assert np.isnan(h["add_loss:a"]).all()
    np.testing.assert_array_equal(h.present("add_loss:a"), [True, False])


def test_present_total_is_true_everywhere():
    h = two_term_history()
    assert h.present("total").dtype == bool
    assert h.present("total").all()
    assert h.present("total").shape == (5,)


# ---------------------------------------------------------------- growth


def test_growth_past_initial_capacity_keeps_every_record():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    block = 700
    for b in range(6):  # 4200 records, far past the initial 64 rows
        start = b * block
        vals = np.arange(start, start + block, dtype=np.float64)[:, None]
        append(h, TRAIN, [c], vals, steps=np.arange(start, start + block),
               epochs=np.full(block, b))
    assert len(h) == 6 * block
    np.testing.assert_array_equal(h["compiled"], np.arange(6 * block, dtype=np.float64))
    np.testing.assert_array_equal(h["total"], np.arange(6 * block, dtype=np.float64))
    np.testing.assert_array_equal(h.steps, np.arange(6 * block))
    np.testing.assert_array_equal(h.epochs, np.repeat(np.arange(6), block))


def test_term_added_midway_is_absent_in_earlier_records():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    append(h, TRAIN, [c], np.ones((1500, 1)))
    append(h, TRAIN, [c], np.full((1500, 1), 2.0))
    a = h._add_term(Term("add_loss:late", "add_loss", layer="late"))
    append(h, TRAIN, [c, a], np.tile([3.0, 0.25], (1200, 1)))
    assert len(h) == 4200
    late = h["add_loss:late"]
    assert np.isnan(late[:3000]).all()
    assert (late[3000:] == 0.25).all()
    present = h.present("add_loss:late")
    assert not present[:3000].any()
    assert present[3000:].all()
    # the older column survived the column resize
    np.testing.assert_array_equal(h["compiled"][[0, 1499, 1500, 2999, 3000, 4199]],
                                  [1.0, 1.0, 2.0, 2.0, 3.0, 3.0])


def test_many_terms_past_initial_column_capacity():
    h = LossHistory()
    cols = []
    for i in range(20):  # past the initial 8 columns, twice
        cols.append(h._add_term(Term(f"add_loss:l{i}", "add_loss", layer=f"l{i}")))
        append(h, TRAIN, cols, [np.arange(len(cols), dtype=np.float64)])
    assert len(h) == 20
    assert h.keys() == [f"add_loss:l{i}" for i in range(20)]
    np.testing.assert_array_equal(h["add_loss:l0"], np.zeros(20))
    last = h["add_loss:l19"]
    assert np.isnan(last[:19]).all()
    assert last[19] == 19.0
    np.testing.assert_array_equal(h["add_loss:l5"][5:], np.full(15, 5.0))


def test_appending_zero_records_is_a_no_op():
    h = two_term_history()
    h._append(TRAIN, np.array([], np.int64), np.array([], np.int64),
              np.array([]), np.array([]), np.array([0], np.intp), np.zeros((0, 1)))
    assert len(h) == 5


# ---------------------------------------------------------------- select


def test_select_by_phase_keeps_only_that_phase():
    h = two_term_history()
    ev = h.select(phase="eval")
    assert len(ev) == 2
    assert list(ev.phases) == ["eval", "eval"]
    np.testing.assert_array_equal(ev["compiled"], [10.0, 30.0])
    np.testing.assert_array_equal(ev["total"], [30.0, 70.0])
    assert ev.keys() == h.keys()


def test_select_by_several_phases():
    h = two_term_history()
    append(h, CALL, [0], [[5.0]], epochs=[NO_EPOCH])
    sub = h.select(phase=["eval", "call"])
    assert list(sub.phases) == ["eval", "eval", "call"]


def test_select_by_epoch_int_and_list():
    h = two_term_history()
    np.testing.assert_array_equal(h.select(epoch=0)["total"], [3.0, 5.0])
    np.testing.assert_array_equal(h.select(epoch=np.int64(1))["total"], [7.0, 30.0, 70.0])
    assert len(h.select(epoch=[0, 1])) == 5
    assert len(h.select(epoch=5)) == 0


def test_select_by_phase_and_epoch_combines_both():
    h = two_term_history()
    sub = h.select(phase="train", epoch=1)
    assert len(sub) == 1
    assert sub["total"][0] == 7.0
    assert sub.steps[0] == 3


def test_select_with_bad_phase_name_raises_value_error():
    h = two_term_history()
    with pytest.raises(ValueError, match="phase must be one of") as info:
        h.select(phase="training")
    assert "'training'" in str(info.value)


def test_select_with_bad_phase_in_list_raises_value_error():
    with pytest.raises(ValueError, match="'valid'"):
        two_term_history().select(phase=["train", "valid"])


def test_select_result_is_independent_of_source():
    h = two_term_history()
    sub = h.select(phase="train")
    append(sub, TRAIN, [0], [[100.0]])
    assert len(sub) == 4
    assert len(h) == 5
    assert 100.0 not in h["total"]


def test_select_preserves_absence():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    a = h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    append(h, TRAIN, [c, a], [[1.0, 2.0]])
    append(h, EVAL, [c], [[3.0]])
    ev = h.select(phase="eval")
    assert not ev.present("add_loss:a")[0]
    assert math.isnan(ev["add_loss:a"][0])


def test_select_nothing_gives_empty_history_with_same_terms():
    h = two_term_history()
    empty = h.select(phase="call")
    assert len(empty) == 0
    assert [t.key for t in empty._terms] == ["compiled", "add_loss:m/x"]
    assert empty["total"].shape == (0,)


# ---------------------------------------------------------------- first_nonfinite


def test_first_nonfinite_is_none_when_all_finite():
    assert two_term_history().first_nonfinite() is None


def test_first_nonfinite_names_the_term_not_the_total():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    a = h._add_term(Term("add_loss:boom", "add_loss", layer="boom"))
    append(h, TRAIN, [c, a], [[1.0, 1.0], [1.0, 1.0]], steps=[10, 11], epochs=[2, 2])
    append(h, TRAIN, [c, a], [[1.0, np.inf]], steps=[12], epochs=[3])
    append(h, TRAIN, [c, a], [[np.nan, np.nan]], steps=[13], epochs=[3])
    found = h.first_nonfinite()
    assert isinstance(found, NonFinite)
    assert found.record == 2
    assert found.key == "add_loss:boom"
    assert found.value == math.inf
    assert found.step == 12
    assert found.epoch == 3
    assert found.phase == "train"


def test_first_nonfinite_reports_negative_infinity_value():
    h = LossHistory()
    a = h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    append(h, EVAL, [a], [[-np.inf]])
    found = h.first_nonfinite()
    assert found.key == "add_loss:a"
    assert found.value == -math.inf
    assert found.phase == "eval"


def test_first_nonfinite_prefers_first_term_in_display_order():
    h = LossHistory()
    a = h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    c = h._add_term(Term("compiled", "compiled"))
    append(h, TRAIN, [a, c], [[np.nan, np.nan]])
    assert h.first_nonfinite().key == "compiled"


def test_first_nonfinite_returns_total_when_only_total_is_bad():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    append(h, TRAIN, [c], [[1.0]], totals=[1.0])
    append(h, TRAIN, [c], [[1.0]], totals=[np.nan], steps=[7])
    found = h.first_nonfinite()
    assert found.record == 1
    assert found.key == "total"
    assert math.isnan(found.value)
    assert found.step == 7


def test_first_nonfinite_ignores_absent_cells():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    a = h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    append(h, TRAIN, [c], np.ones((3, 1)))  # add_loss:a absent (NaN-padded)
    append(h, TRAIN, [c, a], [[1.0, 2.0]])
    assert np.isnan(h["add_loss:a"][:3]).all()
    assert h.first_nonfinite() is None


def test_first_nonfinite_earlier_bad_total_beats_later_bad_term():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    append(h, TRAIN, [c], [[1.0]], totals=[np.inf])
    append(h, TRAIN, [c], [[np.nan]], totals=[np.nan])
    found = h.first_nonfinite()
    assert (found.record, found.key) == (0, "total")


# ---------------------------------------------------------------- epoch_means


def test_epoch_means_weight_ragged_last_batch_by_size():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    append(h, TRAIN, [c], [[1.0], [2.0], [4.0]], epochs=[0, 0, 0], batch=[16, 16, 8])
    append(h, TRAIN, [c], [[3.0], [5.0]], epochs=[1, 1], batch=[16, 4])
    epochs, means = h.epoch_means()
    np.testing.assert_array_equal(epochs, [0, 1])
    expected0 = (16 * 1.0 + 16 * 2.0 + 8 * 4.0) / 40  # 2.0, unweighted mean is 2.333
    expected1 = (16 * 3.0 + 4 * 5.0) / 20  # 3.4, unweighted mean is 4.0
    np.testing.assert_allclose(means, [expected0, expected1], rtol=0, atol=1e-12)
    assert means.dtype == np.float64


def test_epoch_means_of_a_term_key():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    a = h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    append(h, TRAIN, [c, a], [[1.0, 10.0], [1.0, 40.0]], batch=[30, 10])
    _, means = h.epoch_means("add_loss:a")
    np.testing.assert_allclose(means, [(30 * 10.0 + 10 * 40.0) / 40])


def test_epoch_means_treat_nan_batch_size_as_weight_one():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    append(h, TRAIN, [c], [[1.0], [3.0]], epochs=[0, 0], batch=[np.nan, np.nan])
    append(h, TRAIN, [c], [[1.0], [5.0]], epochs=[1, 1], batch=[np.nan, 3.0])
    _, means = h.epoch_means()
    np.testing.assert_allclose(means, [2.0, (1.0 + 3 * 5.0) / 4])


def test_epoch_means_only_use_requested_phase():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    append(h, TRAIN, [c], [[1.0], [3.0]], epochs=[0, 0])
    append(h, EVAL, [c], [[100.0], [200.0]], epochs=[0, 0], batch=[10, 30])
    _, train = h.epoch_means()
    epochs, evals = h.epoch_means(phase="eval")
    np.testing.assert_allclose(train, [2.0])
    np.testing.assert_array_equal(epochs, [0])
    np.testing.assert_allclose(evals, [(10 * 100.0 + 30 * 200.0) / 40])


def test_epoch_means_on_phase_without_records_are_empty():
    epochs, means = two_term_history().epoch_means(phase="call")
    assert epochs.shape == (0,)
    assert means.shape == (0,)


# ---------------------------------------------------------------- breakdown


def test_breakdown_rows_have_statistics_and_total_last():
    h = two_term_history()
    rows = h.breakdown()  # train only: compiled 1,2,3; add_loss 2,3,4; total 3,5,7
    assert [r.key for r in rows] == ["compiled", "add_loss:m/x", "total"]
    assert all(isinstance(r, BreakdownRow) for r in rows)
    comp, add, total = rows
    assert comp.term == Term("compiled", "compiled")
    assert (comp.last, comp.mean, comp.min, comp.max) == (3.0, 2.0, 1.0, 3.0)
    assert (add.last, add.mean, add.min, add.max) == (4.0, 3.0, 2.0, 4.0)
    assert total.term is None
    assert (total.last, total.mean, total.min, total.max) == (7.0, 5.0, 3.0, 7.0)
    assert comp.share == pytest.approx(40.0)
    assert add.share == pytest.approx(60.0)
    assert total.share == 100.0


def test_breakdown_phase_none_uses_every_record():
    rows = two_term_history().breakdown(phase=None)
    total = rows[-1]
    assert total.mean == pytest.approx((3 + 5 + 7 + 30 + 70) / 5)
    assert total.max == 70.0
    assert rows[0].mean == pytest.approx((1 + 2 + 3 + 10 + 30) / 5)


def test_breakdown_eval_phase():
    rows = two_term_history().breakdown(phase="eval")
    assert rows[0].last == 30.0
    assert rows[0].mean == 20.0
    assert rows[-1].mean == 50.0
    assert rows[0].share == pytest.approx(40.0)


def test_breakdown_skips_absent_records():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    a = h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    append(h, TRAIN, [c, a], [[1.0, 4.0]])
    append(h, TRAIN, [c], [[2.0]])
    append(h, TRAIN, [c, a], [[3.0, 8.0]])
    append(h, TRAIN, [c], [[6.0]])
    rows = {r.key: r for r in h.breakdown()}
    add = rows["add_loss:a"]
    assert (add.last, add.mean, add.min, add.max) == (8.0, 6.0, 4.0, 8.0)
    total_mean = (5.0 + 2.0 + 11.0 + 6.0) / 4  # 6.0
    assert rows["total"].mean == total_mean
    assert add.share == pytest.approx(100.0 * 6.0 / total_mean)


def test_breakdown_of_empty_phase_is_nan_total_row():
    rows = two_term_history().breakdown(phase="call")
    assert [r.key for r in rows] == ["compiled", "add_loss:m/x", "total"]
    for row in rows:
        assert math.isnan(row.last) and math.isnan(row.mean)
        assert math.isnan(row.min) and math.isnan(row.max)
        assert math.isnan(row.share)


def test_breakdown_share_is_nan_when_total_mean_is_zero():
    h = LossHistory()
    a = h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    b = h._add_term(Term("add_loss:b", "add_loss", layer="b"))
    append(h, TRAIN, [a, b], [[1.0, -1.0]])
    rows = h.breakdown()
    assert math.isnan(rows[0].share)
    assert math.isnan(rows[1].share)
    assert rows[-1].share == 100.0


def test_breakdown_leaves_out_hidden_residual():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    r = h._add_term(Term("residual", "residual"))
    append(h, TRAIN, [c, r], [[1.0, 0.0]])
    assert [row.key for row in h.breakdown()] == ["compiled", "total"]


# ---------------------------------------------------------------- to_dict / pandas


def test_to_dict_columns_values_and_dtypes():
    h = two_term_history()
    d = h.to_dict()
    assert list(d) == ["step", "epoch", "phase", "batch_size", "total",
                       "compiled", "add_loss:m/x"]
    assert d["step"].dtype == np.int64
    assert d["epoch"].dtype == np.int64
    assert d["batch_size"].dtype == np.float64
    assert d["total"].dtype == np.float64
    assert d["compiled"].dtype == np.float64
    assert list(d["phase"]) == ["train"] * 3 + ["eval"] * 2
    np.testing.assert_array_equal(d["add_loss:m/x"], [2.0, 3.0, 4.0, 20.0, 40.0])


def test_to_pandas_columns_dtypes_and_term_metadata():
    pd = pytest.importorskip("pandas")
    h = two_term_history()
    frame = h.to_pandas()
    assert list(frame.columns) == ["step", "epoch", "phase", "batch_size", "total",
                                   "compiled", "add_loss:m/x"]
    assert len(frame) == 5
    assert frame["step"].dtype == np.int64
    assert frame["epoch"].dtype == np.int64
    assert frame["batch_size"].dtype == np.float64
    assert frame["total"].dtype == np.float64
    assert frame["add_loss:m/x"].dtype == np.float64
    assert pd.api.types.is_string_dtype(frame["phase"])
    assert frame["phase"].tolist() == ["train"] * 3 + ["eval"] * 2
    assert frame["total"].tolist() == [3.0, 5.0, 7.0, 30.0, 70.0]
    assert frame.attrs["terms"] == [
        {"key": "compiled", "kind": "compiled", "layer": None, "output": None,
         "weight": None},
        {"key": "add_loss:m/x", "kind": "add_loss", "layer": "m/x", "output": None,
         "weight": None},
    ]


def test_to_pandas_keeps_absent_cells_as_nan():
    pytest.importorskip("pandas")
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    a = h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    append(h, TRAIN, [c, a], [[1.0, 2.0]])
    append(h, EVAL, [c], [[1.0]])
    frame = h.to_pandas()
    assert frame["add_loss:a"].isna().tolist() == [False, True]


# ---------------------------------------------------------------- repr


def test_repr_counts_records_per_phase_and_terms():
    h = two_term_history()
    assert repr(h) == "<LossHistory: 5 records (train 3, eval 2), 2 terms>"


def test_repr_lists_phases_in_phase_order_and_skips_missing_ones():
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    append(h, CALL, [c], [[1.0]])
    append(h, TRAIN, [c], [[1.0], [2.0]])
    assert repr(h) == "<LossHistory: 3 records (train 2, call 1), 1 terms>"


# ---------------------------------------------------------------- compaction
def realistic_history(full_resolution, max_buckets=8, seed=0):
    """Train epochs with a ragged last batch and a spike, eval batches after
    each epoch, an add_loss present in train records only, a NaN-batch call."""
    rng = np.random.default_rng(seed)
    h = LossHistory(full_resolution=full_resolution, max_buckets=max_buckets)
    comp = h._add_term(Term("compiled", "compiled"))
    aux = h._add_term(Term("add_loss:m/aux", "add_loss", layer="m/aux"))
    step = 0
    for epoch in range(4):
        for start in range(0, 300, 50):  # blocks of 50, as a recorder reads
            k = 50
            values = rng.random((k, 2))
            if epoch == 0 and start == 100:
                values[7, 1] = 1e3  # a spike that must survive compaction
            batch = np.full(k, 32.0)
            if start == 250:
                batch[-1] = 5.0  # ragged last batch
            h._append(0, np.arange(step + 1, step + k + 1), np.full(k, epoch), batch,
                      values.sum(axis=1), np.array([comp, aux]), values)
            step += k
        values = rng.random((10, 1))
        h._append(1, np.full(10, step), np.full(10, epoch), np.full(10, 16.0),
                  values[:, 0], np.array([comp]), values)
    h._append(2, np.array([step]), np.array([-1]), np.array([np.nan]),
              np.array([0.5]), np.array([aux]), np.array([[0.5]]))
    return h


def test_compaction_bounds_rows_and_keeps_every_statistic_exact():
    exact = realistic_history(full_resolution=10_000)
    small = realistic_history(full_resolution=100, max_buckets=8)
    assert not exact.compacted and small.compacted
    assert len(small) < len(exact) // 3 and small.records == exact.records == 1241
    assert small._bucket_records > 8  # buckets doubled to stay under max_buckets
    for phase in ("train", "eval"):
        for key in ("total", "compiled", "add_loss:m/aux"):
            e_epochs, e_means = exact.epoch_means(key, phase)
            s_epochs, s_means = small.epoch_means(key, phase)
            assert list(s_epochs) == list(e_epochs)
            np.testing.assert_allclose(s_means, e_means, rtol=1e-12)
        for e_row, s_row in zip(exact.breakdown(phase), small.breakdown(phase)):
            assert s_row.key == e_row.key
            np.testing.assert_allclose(
                [s_row.last, s_row.mean, s_row.min, s_row.max, s_row.share],
                [e_row.last, e_row.mean, e_row.min, e_row.max, e_row.share], rtol=1e-12)
    assert np.nanmax(small.max("add_loss:m/aux")) == 1e3  # the spike survived
    # rows still add up, and the newest records keep full resolution
    parts = np.nansum([np.where(small.present(k), small[k], 0) for k in small.keys()], axis=0)
    np.testing.assert_allclose(parts, small["total"], rtol=1e-12)
    assert list(small.counts[-100:]) == [1] * 100
    np.testing.assert_array_equal(small["total"][-100:], exact["total"][-100:])


def test_a_bucket_never_spans_phase_epoch_batch_size_or_terms():
    small = realistic_history(full_resolution=100, max_buckets=8)
    exact = realistic_history(full_resolution=10_000)
    ends = np.cumsum(small.counts) - 1
    starts = ends - small.counts + 1
    for name in ("phases", "epochs", "batch_sizes"):
        a, b = getattr(exact, name)[starts], getattr(exact, name)[ends]
        assert np.all((a == b) | (pd_isnan(a) & pd_isnan(b))), name
    for key in small.keys():
        assert np.all(exact.present(key)[starts] == exact.present(key)[ends])
    np.testing.assert_array_equal(small.steps, exact.steps[ends])  # a bucket's last step


def pd_isnan(a):
    return np.isnan(a) if a.dtype.kind == "f" else np.zeros(len(a), bool)


def test_min_and_max_equal_the_values_of_uncompacted_rows():
    h = two_term_history()
    for key in ["total", *h.keys()]:
        np.testing.assert_array_equal(h.min(key), h[key])
        np.testing.assert_array_equal(h.max(key), h[key])
    assert list(h.counts) == [1] * len(h) and h.records == len(h)


def test_million_records_of_sixteen_terms_fit_in_32_mb():
    h = LossHistory()
    cols = np.array([h._add_term(Term(f"t{i}", "add_loss")) for i in range(16)])
    values = np.random.default_rng(0).random((1000, 16))
    for block in range(1000):
        h._append(0, np.arange(block * 1000 + 1, block * 1000 + 1001), np.full(1000, block // 100),
                  np.full(1000, 32.0), values.sum(axis=1), cols, values)
    assert h.records == 1_000_000
    assert h.nbytes <= 32 * 2**20, h.nbytes
    assert list(h.counts[-LossHistory.FULL_RESOLUTION:]) == [1] * LossHistory.FULL_RESOLUTION
    epochs, means = h.epoch_means("t3")
    np.testing.assert_allclose(means, np.full(10, values[:, 3].mean()), rtol=1e-9)


def test_since_counts_records_not_rows():
    small = realistic_history(full_resolution=100, max_buckets=8)
    tail = small.since(small.records - 25)
    assert tail.records == 25 and list(tail.phases[-1:]) == ["call"]
    assert small.since(0).records == small.records
    assert small.since(small.records).records == 0


def test_bad_resolution_is_a_clear_error():
    with pytest.raises(ValueError, match="full_resolution=0"):
        LossHistory(full_resolution=0)


def test_record_reads_one_row_and_phase_counts_count_records():
    h = realistic_history(full_resolution=100, max_buckets=8)
    last = h.record(-1)
    assert last == {"step": 1200, "epoch": -1, "phase": "call", "total": 0.5,
                    "add_loss:m/aux": 0.5}
    first = h.record(0)
    assert first["phase"] == "train" and set(first) >= {"compiled", "add_loss:m/aux"}
    assert first["total"] == h["total"][0]
    assert h.phase_counts() == {"train": 1200, "eval": 40, "call": 1}
    assert LossHistory().phase_counts() == {}
    with pytest.raises(IndexError, match="row 121 is out of range"):
        h.record(len(h))
