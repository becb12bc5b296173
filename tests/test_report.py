"""`LossReport` and `li.last()`: the result object of a ``%%losses`` cell."""

from __future__ import annotations

import numpy as np

import loss_inspect as li
import models
from loss_inspect import report as report_module
from loss_inspect.report import LossReport


def _recorded(epochs=1, call=False):
    x, y = models.data()
    model = models.mlp()
    with li.attach(model) as rec:
        model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, validation_data=(x[:32], y[:32]))
        if call:
            model(x[:4])
    return rec


def test_report_holds_only_records_after_start():
    rec = _recorded(epochs=2)
    report = LossReport(rec, start=6)  # epoch 0: 4 train + 2 eval records
    assert len(report.history) == 6 and list(report.history.epochs) == [1] * 6
    np.testing.assert_array_equal(report.history["total"], rec.history["total"][6:])


def test_phase_falls_back_to_all_when_the_cell_has_none_of_it():
    rec = _recorded(call=True)
    only_call = LossReport(rec, start=len(rec.history) - 1)
    assert only_call.phase is None and list(only_call.history.phases) == ["call"]
    assert LossReport(rec, 0).phase == "train"
    assert LossReport(rec, 0, phase="all").phase is None


def test_text_html_and_pretty_reprs():
    report = LossReport(_recorded(), 0, error=KeyboardInterrupt())
    text = str(report)
    assert text.startswith("Loss breakdown (train records: 4)")
    assert text.endswith("(cell ended with KeyboardInterrupt; records up to then)")
    assert repr(report) == "<LossReport 'mlp': 6 records, 5 terms>"
    html = report._repr_html_()
    assert html.startswith("<table") and "add_loss:mlp/extra" in html

    class Printer:
        def __init__(self):
            self.out = ""

        def text(self, value):
            self.out += value

    printer = Printer()
    report._repr_pretty_(printer, cycle=False)
    assert printer.out == text


def test_figure_and_png_follow_the_report_options():
    report = LossReport(_recorded(), 0, view="lines", logy=True)
    figure = report.figure()
    assert figure.axes[0].get_yscale() == "log"
    assert "total" in figure._loss_inspect_series
    assert report.png(view="share")[:4] == b"\x89PNG"


def test_last_returns_the_most_recent_report():
    rec = _recorded()
    first, second = LossReport(rec, 0), LossReport(rec, 2)
    report_module._remember(first)
    report_module._remember(second)
    assert li.last() is second
