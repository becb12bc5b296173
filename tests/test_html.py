"""HTML tables: same rows as the text tables, escaped, numeric columns right-aligned."""

from __future__ import annotations

import numpy as np

from loss_inspect._html import breakdown_html
from loss_inspect.history import PHASES, LossHistory, Term


def _history():
    h = LossHistory()
    a = h._add_term(Term("compiled", "compiled"))
    b = h._add_term(Term("add_loss:m/<x>&", "add_loss", layer="m/<x>&"))
    h._append(PHASES.index("train"), np.array([1, 2]), np.array([0, 0]), np.array([8.0, 8.0]),
              np.array([3.0, 5.0]), np.array([a, b]), np.array([[1.0, 2.0], [2.0, 3.0]]))
    return h


def test_rows_values_and_escaping():
    html = breakdown_html(_history())
    assert html.count("<tr>") == 1 + 3  # header + two terms + total
    assert "add_loss:m/&lt;x&gt;&amp;" in html and "<x>" not in html
    assert "Loss breakdown (train records: 2)" in html
    assert 'text-align:right;">2.5<' in html  # mean of compiled, right-aligned
    assert "font-weight:bold;\">total" in html


def test_empty_history_says_why():
    html = breakdown_html(LossHistory())
    assert "records: 0" in html and "No records" in html and "<table" not in html
