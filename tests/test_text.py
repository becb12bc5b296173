"""Behaviour of `loss_inspect._text`: number formatting and aligned tables."""

import dataclasses
import math
import re

import numpy as np
import pytest

from loss_inspect._text import (
    align,
    breakdown_table,
    fmt_number,
    fmt_share,
    snapshot_table,
)
from loss_inspect.history import PHASES, LossHistory, Term

TRAIN, EVAL = PHASES.index("train"), PHASES.index("eval")


def make_history():
    """compiled 1,2,3 and add_loss:m/x 0.5,0.25,0.125 (train) + one eval record."""
    h = LossHistory()
    c = h._add_term(Term("compiled", "compiled"))
    a = h._add_term(Term("add_loss:m/x", "add_loss", layer="m/x"))
    vals = np.array([[1.0, 0.5], [2.0, 0.25], [3.0, 0.125]])
    h._append(TRAIN, np.array([1, 2, 3]), np.array([0, 0, 0]), np.full(3, 16.0),
              vals.sum(axis=1), np.array([c, a]), vals)
    h._append(EVAL, np.array([3]), np.array([0]), np.array([16.0]),
              np.array([1000.0]), np.array([c]), np.array([[1000.0]]))
    return h


def column_spans(rule: str):
    """(start, end) of each column, read from the dashed rule line."""
    return [m.span() for m in re.finditer(r"-+", rule)]


# ---------------------------------------------------------------- fmt_number


@pytest.mark.parametrize(
    "value, text",
    [
        (1.234567, "1.2346"),
        (123456.7, "1.2346e+05"),
        (0.000123456, "0.00012346"),
        (2.0, "2"),
        (0.5, "0.5"),
        (-3.14159265, "-3.1416"),
        (12345.0, "12345"),
        (0.0, "0"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (np.float64(2.718281828), "2.7183"),
    ],
)
def test_fmt_number_uses_five_significant_digits(value, text):
    assert fmt_number(value) == text


def test_fmt_number_nan_is_nan():
    assert fmt_number(math.nan) == "nan"
    assert fmt_number(np.float64("nan")) == "nan"
    assert fmt_number(np.float32("nan")) == "nan"


def test_fmt_number_none_is_dash():
    assert fmt_number(None) == "-"


# ---------------------------------------------------------------- fmt_share


@pytest.mark.parametrize(
    "value, text",
    [(12.345, "12.3%"), (100.0, "100.0%"), (0.0, "0.0%"), (-5.06, "-5.1%"),
     (87.27272727, "87.3%")],
)
def test_fmt_share_is_one_decimal_percent(value, text):
    assert fmt_share(value) == text


def test_fmt_share_nan_is_dash():
    assert fmt_share(math.nan) == "-"


# ---------------------------------------------------------------- align


def test_align_pads_columns_and_adds_dashed_rule_under_header():
    text = align([["a", "num"], ["long", "1"], ["b", "22.5"]], right={1})
    assert text.splitlines() == [
        "a      num",
        "----  ----",
        "long     1",
        "b     22.5",
    ]


def test_align_strips_trailing_spaces_of_left_aligned_last_column():
    text = align([["x", "name"], ["1", "a"], ["22", ""]], right={0})
    assert text.splitlines() == [" x  name", "--  ----", " 1  a", "22"]


# ---------------------------------------------------------------- breakdown_table


def test_breakdown_table_exact_text():
    expected = "\n".join([
        "Loss breakdown (train records: 3)",
        "term          kind      layer   last     mean    min    max   share",
        "------------  --------  -----  -----  -------  -----  -----  ------",
        "compiled      compiled             3        2      1      3   87.3%",
        "add_loss:m/x  add_loss  m/x    0.125  0.29167  0.125    0.5   12.7%",
        "total                          3.125   2.2917    1.5  3.125  100.0%",
    ])
    assert breakdown_table(make_history()) == expected


def test_breakdown_table_has_header_rule_and_one_row_per_term_plus_total():
    lines = breakdown_table(make_history()).splitlines()
    assert lines[0] == "Loss breakdown (train records: 3)"
    assert lines[1].split() == ["term", "kind", "layer", "last", "mean", "min",
                                "max", "share"]
    assert set(lines[2]) == {"-", " "}
    body = lines[3:]
    assert [line.split()[0] for line in body] == ["compiled", "add_loss:m/x", "total"]


def test_breakdown_table_numeric_columns_are_right_aligned():
    lines = breakdown_table(make_history()).splitlines()
    spans = column_spans(lines[2])
    assert len(spans) == 8
    for line in lines[1:2] + lines[3:]:
        padded = line.ljust(spans[-1][1])
        for i, (start, end) in enumerate(spans):
            cell = padded[start:end]
            if i >= 3:  # last, mean, min, max, share
                assert cell == cell.strip().rjust(end - start), (line, i)
            else:
                assert cell == cell.strip().ljust(end - start), (line, i)


def test_breakdown_table_cells_per_row():
    lines = breakdown_table(make_history()).splitlines()
    spans = column_spans(lines[2])
    cells = {
        line.split()[0]: [line.ljust(spans[-1][1])[s:e].strip() for s, e in spans]
        for line in lines[3:]
    }
    assert cells["compiled"] == ["compiled", "compiled", "", "3", "2", "1", "3", "87.3%"]
    assert cells["add_loss:m/x"] == ["add_loss:m/x", "add_loss", "m/x", "0.125",
                                     "0.29167", "0.125", "0.5", "12.7%"]
    assert cells["total"] == ["total", "", "", "3.125", "2.2917", "1.5", "3.125",
                              "100.0%"]


def test_breakdown_table_for_eval_phase():
    lines = breakdown_table(make_history(), phase="eval").splitlines()
    assert lines[0] == "Loss breakdown (eval records: 1)"
    compiled = lines[3].split()
    assert compiled == ["compiled", "compiled", "1000", "1000", "1000", "1000", "100.0%"]
    # add_loss:m/x is absent from the eval record: statistics are nan, share "-"
    add = lines[4].split()
    assert add == ["add_loss:m/x", "add_loss", "m/x", "nan", "nan", "nan", "nan", "-"]


def test_breakdown_table_all_phases_title_and_total():
    lines = breakdown_table(make_history(), phase=None).splitlines()
    assert lines[0] == "Loss breakdown (all records: 4)"
    assert lines[-1].split()[:2] == ["total", "1000"]


def test_breakdown_table_of_empty_history_says_why_instead_of_nan_rows():
    lines = breakdown_table(LossHistory()).splitlines()
    assert lines[0] == "Loss breakdown (train records: 0)"
    assert lines[1].startswith("No records: nothing ran fit()")
    assert "nan" not in "\n".join(lines) and len(lines) == 2


# ---------------------------------------------------------------- snapshot_table


@dataclasses.dataclass
class FakeSnapshot:
    model_name: str
    terms: tuple
    values: np.ndarray
    total: float
    message: str | None = None

    def __len__(self):
        return len(self.terms)


def test_snapshot_table_lists_terms_values_and_total():
    snap = FakeSnapshot(
        "vae",
        (Term("add_loss:vae/kl", "add_loss", layer="vae/kl"),
         Term("regularizer:vae/dense/kernel", "regularizer", layer="vae/dense/kernel")),
        np.array([1.23456789, 0.001]),
        1.23556789,
    )
    assert snapshot_table(snap) == "\n".join([
        "model.losses of 'vae' (2 terms)",
        "term                          kind         layer              value",
        "----------------------------  -----------  ----------------  ------",
        "add_loss:vae/kl               add_loss     vae/kl            1.2346",
        "regularizer:vae/dense/kernel  regularizer  vae/dense/kernel   0.001",
        "total                                                        1.2356",
    ])


def test_snapshot_table_appends_message_as_note():
    snap = FakeSnapshot("m", (), np.array([]), math.nan, message="Run model(x) first.")
    text = snapshot_table(snap)
    assert text.startswith("model.losses of 'm' (0 terms)\n")
    assert text.endswith("\n\nNote: Run model(x) first.")
    lines = text.splitlines()
    assert lines[3] == "total                 nan"
    assert lines[3].split() == ["total", "nan"]
