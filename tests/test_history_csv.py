"""CSV export and import of a `LossHistory` (`loss_inspect._history_csv`)."""

import math

import numpy as np
import pytest

from loss_inspect.history import NO_EPOCH, PHASES, LossHistory, Term
from test_history import append, realistic_history, two_term_history

TRAIN, EVAL, CALL = (PHASES.index(p) for p in ("train", "eval", "call"))


def rich_history():
    """Every Term field, all phases, NaN batch, NaN/inf values, absent cells."""
    h = LossHistory()
    c1 = h._add_term(Term("compiled:out_a", "compiled", output="out_a", weight=0.5))
    c2 = h._add_term(Term("compiled:out_b", "compiled", output="out_b", weight=2.0))
    a = h._add_term(Term("add_loss:vae/sampling", "add_loss", layer="vae/sampling"))
    g = h._add_term(Term("regularizer:mlp/dense/kernel", "regularizer",
                         layer="mlp/dense/kernel"))
    r = h._add_term(Term("residual", "residual"))
    append(h, TRAIN, [c1, c2, a, g, r], [[0.1, 0.2, 0.3, 0.4, 1e-9]],
           steps=[1], epochs=[0], batch=[32.0])
    append(h, TRAIN, [c1, c2, a, g, r], [[np.nan, np.inf, -np.inf, -0.0, 0.0]],
           steps=[2], epochs=[0], batch=[7.0], totals=[np.nan])
    append(h, EVAL, [c1, c2, g], [[1 / 3, 2 / 3, 1e-300]],
           steps=[2], epochs=[0], batch=[np.nan], totals=[1.0 + 1e-300])
    append(h, CALL, [a], [[5.5]], steps=[2], epochs=[NO_EPOCH], batch=[np.nan])
    return h


def test_csv_round_trip_preserves_terms_with_all_fields(tmp_path):
    h = rich_history()
    path = tmp_path / "h.csv"
    h.to_csv(path)
    back = LossHistory.from_csv(path)
    assert back.terms == h.terms
    assert back.term("compiled:out_a") == Term(
        "compiled:out_a", "compiled", layer=None, output="out_a", weight=0.5
    )
    assert back.term("regularizer:mlp/dense/kernel").layer == "mlp/dense/kernel"
    assert back.keys() == h.keys()


def test_csv_round_trip_preserves_record_metadata(tmp_path):
    h = rich_history()
    h.to_csv(tmp_path / "h.csv")
    back = LossHistory.from_csv(tmp_path / "h.csv")
    assert len(back) == 4
    assert list(back.phases) == ["train", "train", "eval", "call"]
    np.testing.assert_array_equal(back.steps, [1, 2, 2, 2])
    np.testing.assert_array_equal(back.epochs, [0, 0, 0, -1])
    np.testing.assert_array_equal(back.batch_sizes, [32.0, 7.0, np.nan, np.nan])
    np.testing.assert_array_equal(back["total"], h["total"])


def test_csv_round_trip_preserves_values_exactly_including_nan_and_inf(tmp_path):
    h = rich_history()
    h.to_csv(tmp_path / "h.csv")
    back = LossHistory.from_csv(tmp_path / "h.csv")
    for key in h.keys():
        np.testing.assert_array_equal(back[key], h[key], err_msg=key)
    assert back["compiled:out_b"][1] == math.inf
    assert back["add_loss:vae/sampling"][1] == -math.inf
    assert back["compiled:out_a"][2] == 1 / 3
    assert math.copysign(1.0, back["regularizer:mlp/dense/kernel"][1]) == -1.0


def test_csv_round_trip_keeps_absent_absent_and_nan_present(tmp_path):
    h = rich_history()
    h.to_csv(tmp_path / "h.csv")
    back = LossHistory.from_csv(tmp_path / "h.csv")
    for key in h.keys():
        np.testing.assert_array_equal(back.present(key), h.present(key), err_msg=key)
    # a real NaN stays a present NaN
    assert math.isnan(back["compiled:out_a"][1]) and back.present("compiled:out_a")[1]
    # an absent cell stays absent
    assert not back.present("add_loss:vae/sampling")[2]
    assert not back.present("compiled:out_a")[3]
    found, expected = back.first_nonfinite(), h.first_nonfinite()
    assert (found.record, found.key, found.step) == (expected.record, expected.key, 2)
    assert math.isnan(found.value)


def test_csv_file_format_marks_absent_as_empty_and_nan_as_text(tmp_path):
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    a = h._add_term(Term("add_loss:a", "add_loss", layer="a"))
    append(h, TRAIN, [c, a], [[np.nan, np.inf]], totals=[np.nan], batch=[np.nan])
    append(h, EVAL, [c], [[1.5]], epochs=[-1])
    h.to_csv(tmp_path / "h.csv")
    lines = (tmp_path / "h.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# loss_inspect history v1"
    assert lines[1].startswith("# terms: [")
    assert lines[2] == "step,epoch,phase,batch_size,total,compiled,add_loss:a"
    assert lines[3] == "1,0,train,nan,nan,nan,inf"
    assert lines[4] == "2,-1,eval,16.0,1.5,1.5,"
    assert len(lines) == 5


def test_csv_is_readable_by_pandas_with_comment_option(tmp_path):
    pd = pytest.importorskip("pandas")
    h = two_term_history()
    h.to_csv(tmp_path / "h.csv")
    frame = pd.read_csv(tmp_path / "h.csv", comment="#")
    assert list(frame.columns) == ["step", "epoch", "phase", "batch_size", "total",
                                   "compiled", "add_loss:m/x"]
    assert frame["total"].tolist() == [3.0, 5.0, 7.0, 30.0, 70.0]


def test_csv_round_trip_of_empty_history_with_terms(tmp_path):
    h = LossHistory([Term("compiled", "compiled"), Term("add_loss:a", "add_loss",
                                                        layer="a")])
    h.to_csv(tmp_path / "h.csv")
    back = LossHistory.from_csv(tmp_path / "h.csv")
    assert len(back) == 0
    assert back.keys() == ["compiled", "add_loss:a"]


@pytest.mark.parametrize("only_term", [None, "zero residual"])
def test_csv_round_trip_of_history_without_shown_terms(tmp_path, only_term):
    # A history with no term at all, or whose only term is an all-zero residual
    # (hidden), is written with no term columns; it must still read back.
    h = LossHistory()
    if only_term is None:
        append(h, CALL, [], np.zeros((2, 0)), totals=[0.0, 0.0], epochs=[-1, -1])
    else:
        r = h._add_term(Term("residual", "residual"))
        append(h, CALL, [r], [[0.0], [0.0]], totals=[0.0, 0.0], epochs=[-1, -1])
    assert h.keys() == []
    h.to_csv(tmp_path / "h.csv")
    back = LossHistory.from_csv(tmp_path / "h.csv")
    assert len(back) == 2
    assert back.keys() == []
    np.testing.assert_array_equal(back["total"], [0.0, 0.0])


def test_from_csv_rejects_a_foreign_csv_with_helpful_message(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("step,loss\n1,0.5\n", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        LossHistory.from_csv(path)
    message = str(info.value)
    assert "not a loss_inspect history CSV" in message
    assert "'step,loss'" in message
    assert "LossHistory.to_csv()" in message
    assert str(path) in message


def test_from_csv_rejects_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="not a loss_inspect history CSV"):
        LossHistory.from_csv(path)


def test_from_csv_rejects_missing_terms_line(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("# loss_inspect history v1\nstep,epoch\n", encoding="utf-8")
    with pytest.raises(ValueError, match="# terms: "):
        LossHistory.from_csv(path)


def test_from_csv_rejects_header_that_does_not_match_terms(tmp_path):
    h = two_term_history()
    path = tmp_path / "h.csv"
    h.to_csv(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace("add_loss:m/x", "add_loss:renamed")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="does not match its terms"):
        LossHistory.from_csv(path)


def test_compacted_history_round_trips_through_csv(tmp_path):
    small = realistic_history(full_resolution=100, max_buckets=8)
    small.to_csv(tmp_path / "h.csv")
    back = LossHistory.from_csv(tmp_path / "h.csv")
    assert back.records == small.records and len(back) == len(small)
    for key in ["total", *small.keys()]:
        np.testing.assert_array_equal(back.counts, small.counts)
        for read in (lambda h: h[key], lambda h: h.min(key), lambda h: h.max(key)):
            np.testing.assert_array_equal(read(back), read(small))
    frame = small.to_pandas()
    assert {"count", "min:total", "max:add_loss:m/aux"} <= set(frame.columns)
