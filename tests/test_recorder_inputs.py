"""Unusual model inputs and execution modes (docs: fault-matrix.md), on the
backend of this process.

Each test runs a real Keras model. Where Keras itself raises, the same
exception (type and message) must come out with a recorder attached, checked
against the same model without one; where it trains, the breakdown must be
exact (terms sum to the total at every record, epoch means equal the
``history.history`` of that very fit) and the term keys must be the ones the
README documents, per backend where Keras differs. "Attaching changes
nothing" (bit-identical fits) is test_recorder.py's; here it is rechecked
only where an item is about it (history keys, exceptions, custom loops).
"""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import loss_inspect as li
import models
from test_recorder import (
    FIT,
    assert_invariants,
    assert_keras_totals,
    assert_terms_sum_to_total,
    fit_with_and_without,
)

BACKEND = os.environ["KERAS_BACKEND"]  # one backend per pytest process (conftest)


def fit_recorded(build, x, y, then=None, **fit_kwargs):
    """One recorded fit (1 epoch, no validation unless asked), checked exact.

    ``then(model)`` runs after the fit while the same recorder is attached
    (no new trace), so its records (epoch -1) follow the fit's in the history.
    Returns the model, Keras's ``history.history`` and the recorder's history.
    """
    kwargs = {**FIT, "epochs": 1, **fit_kwargs}
    model = build()
    with li.attach(model) as rec:
        logs = model.fit(x, y, **kwargs).history
        fit_records = rec.history.since(0)
        if then is not None:
            then(model)
    assert_terms_sum_to_total(rec.history)
    assert_keras_totals(fit_records, logs)
    return model, logs, rec.history


def outcome(fn):
    """``("returned", value)``, or ``(exception type, message)`` if ``fn`` raised."""
    try:
        return "returned", fn()
    except Exception as exc:  # compared between plain Keras and the recorder
        return type(exc), str(exc)


def value(tensor) -> float:
    """Sum of a loss tensor as a float, cut from autograd (no torch warning)."""
    return float(ops.sum(ops.stop_gradient(ops.cast(tensor, "float32"))))


def last_record(history) -> dict:
    """The terms present in the last record, by key."""
    return {k: history[k][-1] for k in history.keys() if history.present(k)[-1]}


def keys_in(history) -> list[str]:
    """Keys present in at least one record (a selection keeps every column)."""
    return [k for k in history.keys() if history.present(k).any()]


def keys_present_in_every(history, phase) -> list[str]:
    sub = history.select(phase=phase)
    return [k for k in sub.keys() if sub.present(k).all()]


def assert_call_record_is_model_losses(history, model):
    """The last record is a call whose terms are ``model.losses``, one each."""
    expected = [value(t) for t in model.losses]
    assert history.phases[-1] == "call"
    np.testing.assert_allclose(history["total"][-1], sum(expected), rtol=1e-6)
    np.testing.assert_allclose(sorted(last_record(history).values()), sorted(expected), rtol=1e-6)


def call_checked(x):
    """A `then` for fit_recorded: ``model(x, training=True)``, its call record
    checked against model.losses."""

    def then(model):
        model(x, training=True)
        assert_call_record_is_model_losses(li.attach(model).history, model)

    return then


# --------------------------------------------------------- 1. no loss at all
def test_no_loss_at_all_behaves_as_in_keras_and_model_stays_usable():
    """loss=None and nothing added: JAX trains on a loss of 0, TF and torch
    raise "No loss to compute"; attached, the same happens, exactly."""
    x, y = models.data(32)

    def run(attach):
        model = models.no_loss()
        rec = li.attach(model) if attach else None
        try:
            fit = outcome(lambda: model.fit(x, y, batch_size=16, epochs=1, verbose=0).history)
            evaluate = outcome(lambda: model.evaluate(x, y, batch_size=16, verbose=0))
            model(x[:4])  # still callable while attached
        finally:
            if rec is not None:
                rec.detach()
        # Usable afterwards: give it a loss and train it.
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        after = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
        return fit, evaluate, after, rec

    plain_fit, plain_eval, plain_after, _ = run(attach=False)
    fit, evaluate, after, rec = run(attach=True)
    assert (fit, evaluate, after) == (plain_fit, plain_eval, plain_after)
    assert not rec.attached and li.recorders() == []
    h = rec.history
    assert h.keys() == []  # nothing to attribute
    if BACKEND == "jax":  # Keras's JAX trainer: no loss is a zero loss
        assert fit == ("returned", {"loss": [0.0]})
        assert evaluate == ("returned", 0.0)
        assert list(h.phases) == ["train"] * 2 + ["eval"] * 2 + ["call"]
        np.testing.assert_array_equal(h["total"], 0.0)
        assert_keras_totals(h.select(epoch=0), fit[1])
    else:
        message = "No loss to compute. Provide a `loss` argument in `compile()`."
        assert fit == (ValueError, message) and evaluate == (ValueError, message)
        assert list(h.phases) == ["call"]  # only the eager call; no step ran
        assert h["total"][0] == 0.0


# -------------------------------------------------------- 2. add_loss variants
ADD_LOSS_VARIANTS = {
    # variant: added term keys
    "list": ["add_loss:variants/variant", "add_loss:variants/variant#2"],
    "nonscalar": ["add_loss:variants/variant"],
    "int": ["add_loss:variants/variant"],
}


@pytest.mark.parametrize("variant", sorted(ADD_LOSS_VARIANTS))
def test_add_loss_list_nonscalar_and_int_are_exact(variant):
    """add_loss([t1, t2]) gives two terms; a non-scalar tensor is summed and an
    int tensor cast, as Keras does, and the breakdown shows those values."""
    x, y = models.data()
    seen = {}

    def call(model):
        model(x[:4], training=True)
        seen["shapes"] = [tuple(t.shape) for t in model.losses]
        seen["raw"] = [value(t) for t in model.losses]

    _, _, h = fit_recorded(lambda: models.add_loss_variant(variant), x, y, then=call,
                           validation_data=(x[:32], y[:32]))
    added = ADD_LOSS_VARIANTS[variant]
    assert h.keys() == ["compiled", *added]
    assert all(h.term(k).layer == "variants/variant" for k in added)
    assert keys_present_in_every(h, "eval") == ["compiled", *added]
    assert keys_present_in_every(h, "call") == added
    np.testing.assert_allclose(list(last_record(h).values()), seen["raw"], rtol=1e-6)
    np.testing.assert_allclose(h["total"][-1], sum(seen["raw"]), rtol=1e-6)
    if variant == "nonscalar":  # Keras keeps it whole in model.losses, sums it in the loss
        assert seen["shapes"] == [(4, 4)]
    if variant == "int":  # ... and casts an int term: whole numbers in every record
        term = h["add_loss:variants/variant"]
        assert np.all(term == np.round(term)) and np.all(term > 0)


@pytest.mark.parametrize("entry", ["call", "fit"])
@pytest.mark.parametrize("number", [3.0, np.float32(1)], ids=["python_float", "numpy_float32"])
def test_add_loss_of_a_plain_number_does_what_keras_does(number, entry):
    """add_loss(3.0) / add_loss(np.float32(1)) in call(): the recorder must
    neither accept what Keras rejects nor change Keras's error."""
    x, y = models.data(32)

    def run(attach):
        model = models.adds_a_number(number)
        rec = li.attach(model) if attach else None
        try:
            if entry == "call":
                result = outcome(lambda: float(ops.sum(model(x[:4]))))
            else:
                result = outcome(
                    lambda: model.fit(x, y, batch_size=16, epochs=1, verbose=0).history)
        finally:
            if rec is not None:
                rec.detach()
        return result, rec

    plain, _ = run(attach=False)
    recorded, rec = run(attach=True)
    assert recorded == plain
    if plain[0] == "returned":  # a Keras that accepts numbers: exact breakdown
        assert_terms_sum_to_total(rec.history)
    else:  # Keras 3.14 / 3.15: "add_loss() can only be called ... on a tensor input"
        assert plain[0] is ValueError and "on a tensor input" in plain[1]
        assert len(rec.history) == 0


# -------------------------------------------- 3. model.add_loss outside call()
def test_model_add_loss_outside_call_on_a_subclassed_model():
    """Accepted by Keras and kept in model.losses until the next call clears
    it; the recorder names it after the model and never lets it leak into a
    later record."""
    x, y = models.data()

    def run(attach):
        model = models.subclassed()
        rec = li.attach(model) if attach else None
        try:
            model(x[:4], training=True)
            model.add_loss(ops.convert_to_tensor(0.5))
            losses = [value(t) for t in model.losses]
            snap = li.snapshot(model) if attach else None
            model(x[:4], training=True)  # clears the outside term
            call_losses = [value(t) for t in model.losses]
            if attach:
                assert_call_record_is_model_losses(rec.history, model)
            model.add_loss(ops.convert_to_tensor(0.5))
            fit = model.fit(x, y, **dict(FIT, epochs=1)).history
        finally:
            if rec is not None:
                rec.detach()
        return (losses, call_losses, fit), snap, rec

    plain, _, _ = run(attach=False)
    recorded, snap, rec = run(attach=True)
    assert recorded == plain
    losses, call_losses, fit = recorded
    assert len(losses) == 4 and len(call_losses) == 3 and 0.5 in losses  # came and went
    # The model adds its own term in call(), so the outside one is its #2.
    assert snap.keys() == ["add_loss:subclassed", "add_loss:subclassed#2",
                           "add_loss:subclassed/twice", "add_loss:subclassed/twice#2"]
    assert snap["add_loss:subclassed#2"] == 0.5 and snap.readable
    np.testing.assert_allclose(snap.total, sum(losses), rtol=1e-6)
    h = rec.history
    assert "add_loss:subclassed#2" not in h.keys()  # never part of a record
    assert list(h.phases) == ["call", "call"] + ["train"] * 4
    assert_terms_sum_to_total(h)
    assert_keras_totals(h.select(phase="train"), fit)


def test_snapshot_right_after_attach_names_terms_as_without_a_recorder():
    x, _ = models.data(8)
    model = models.subclassed()
    model(x[:4], training=True)
    model.add_loss(ops.convert_to_tensor(0.5))
    without = li.snapshot(model)
    with li.attach(model):
        attached = li.snapshot(model)
    assert without.keys() == ["add_loss:subclassed", "add_loss:subclassed#2",
                              "add_loss:subclassed/twice", "add_loss:subclassed/twice#2"]
    assert attached.keys() == without.keys()
    np.testing.assert_array_equal(attached.values, without.values)


def test_model_add_loss_on_a_functional_model_raises_as_in_keras():
    x, _ = models.data()
    plain_model = models.mlp()
    plain_model(x[:4], training=True)
    plain = outcome(lambda: plain_model.add_loss(ops.convert_to_tensor(0.5)))
    model = models.mlp()
    with li.attach(model) as rec:
        model(x[:4], training=True)
        recorded = outcome(lambda: model.add_loss(ops.convert_to_tensor(0.5)))
        assert [value(t) for t in model.losses] == [value(t) for t in plain_model.losses]
        model(x[:4], training=True)  # the recorder goes on
        assert_call_record_is_model_losses(rec.history, model)
    assert recorded == plain and plain[0] is NotImplementedError
    assert list(rec.history.phases) == ["call", "call"] and len(rec.history.keys()) == 4


# ---------------------------------------- 4. nested twice, shared, TimeDistributed
# README, Known limits: under JAX fit(), Keras keeps only the terms of the *last*
# top-level application of a layer applied twice in one pass (each application
# inside stateless_call clears the earlier one's); eager calls, TF and torch
# keep one term per application (#2, #3, ... in application order).
def eval_and_call(x, y):
    """A `then` for fit_recorded: an eval record and an eager call on the
    same batch and weights, the call checked against model.losses."""

    def then(model):
        model.test_on_batch(x, y)
        model(x)  # training=False, like the eval step
        h = li.attach(model).history
        assert_call_record_is_model_losses(h, model)

    return then


def after_fit(h, phase):
    return h.select(phase=phase, epoch=-1)


def test_nested_model_used_twice():
    x, y = models.data()
    _, _, h = fit_recorded(models.nested_used_twice, x, y, then=eval_and_call(x[:16], y[:16]))
    evaluated, called = after_fit(h, "eval"), after_fit(h, "call")
    h = h.select(epoch=0)
    once = ["compiled", "add_loss:outer/enc/kl", "activity:outer/enc/code",
            "regularizer:outer/enc/code/kernel"]  # one weight term: shared variables
    twice = ["add_loss:outer/enc/kl#2", "activity:outer/enc/code#2"]
    expected = once if BACKEND == "jax" else once + twice
    assert sorted(keys_in(h)) == sorted(expected)
    assert sorted(keys_present_in_every(h, "train")) == sorted(expected)
    assert {h.term(k).layer for k in expected[1:]} == {
        "outer/enc/kl", "outer/enc/code", "outer/enc/code/kernel"}
    assert sorted(keys_present_in_every(called, "call")) == sorted(once[1:] + twice)
    for key in ("add_loss:outer/enc/kl", "activity:outer/enc/code"):
        # JAX keeps the second (last) application's value, under the first key.
        source = key + "#2" if BACKEND == "jax" else key
        np.testing.assert_allclose(evaluated[key], called[source], rtol=1e-5)
        assert not np.allclose(called[key], called[key + "#2"])  # the two differ


def test_same_layer_under_two_attributes():
    """One layer object as self.first and self.second, applied twice: named
    by its layer name, one activity term per application, one weight term."""
    x, y = models.data()
    _, _, h = fit_recorded(models.same_layer_two_attributes, x, y,
                           then=eval_and_call(x[:16], y[:16]))
    evaluated, called = after_fit(h, "eval"), after_fit(h, "call")
    h = h.select(epoch=0)
    expected = ["compiled", "add_loss:two_attrs/penalty", "activity:two_attrs/shared",
                "regularizer:two_attrs/shared/kernel"]
    if BACKEND != "jax":
        expected.append("activity:two_attrs/shared#2")
    assert sorted(keys_in(h)) == sorted(expected)
    assert sorted(keys_present_in_every(h, "train")) == sorted(expected)
    assert h.term("regularizer:two_attrs/shared/kernel").kind == "regularizer"
    assert "activity:two_attrs/shared#2" in keys_present_in_every(called, "call")
    source = "activity:two_attrs/shared" + ("#2" if BACKEND == "jax" else "")
    np.testing.assert_allclose(evaluated["activity:two_attrs/shared"], called[source],
                               rtol=1e-5)


def test_unbuilt_subclassed_model_names_its_regularizer_terms():
    x, y = models.data()
    _, _, h = fit_recorded(lambda: models.same_layer_two_attributes(built=False), x, y)
    assert "regularizer:two_attrs/shared/kernel" in h.keys()
    assert not any("unattributed" in k for k in h.keys())


# On JAX "auto" is jit_compile=True (test_recorder checks jit modes); on torch
# True means torch.compile, whose bit-exactness is not promised (README).
TD_JIT = {"jax": [True], "tensorflow": ["auto", True], "torch": ["auto"]}[BACKEND]


@pytest.mark.parametrize("jit_compile", TD_JIT)
def test_time_distributed_add_loss_layer_on_two_inputs(jit_compile):
    """keras-team/keras#21605: TimeDistributed(add_loss layer) on two inputs
    crashed JAX jit. 3 timesteps x 2 inputs: 6 terms; JAX fit keeps the 3 of
    the last application (see above)."""
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(64, 3, 8)).astype("float32") for _ in range(2)]
    xs[1] *= 2.0  # the two applications differ
    _, y = models.data()
    _, _, h = fit_recorded(lambda: models.time_distributed_twice(jit_compile), xs, y,
                           validation_data=([v[:32] for v in xs], y[:32]),
                           then=eval_and_call([v[:16] for v in xs], y[:16]))
    evaluated, called = after_fit(h, "eval"), after_fit(h, "call")
    h = h.select(epoch=0)
    keys = ["add_loss:tdm/td/inner"] + [f"add_loss:tdm/td/inner#{i}" for i in range(2, 7)]
    in_fit = keys[:3] if BACKEND == "jax" else keys
    assert keys_in(h) == ["compiled", *in_fit]
    assert keys_present_in_every(h, "train") == keys_present_in_every(h, "eval") == keys_in(h)
    assert keys_present_in_every(called, "call") == keys
    sources = keys[3:] if BACKEND == "jax" else keys
    for key, source in zip(in_fit, sources):
        np.testing.assert_allclose(evaluated[key], called[source], rtol=1e-5)


# -------------------------------------------------- 5. term count changes
def test_train_only_add_loss_is_absent_from_eval_records():
    x, y = models.data()
    key = "add_loss:cond/train_only"

    def then(model):
        model.evaluate(x[:32], y[:32], batch_size=16, verbose=0)
        model(x[:4])  # training=False: no term either
        model(x[:4], training=True)

    _, _, full = fit_recorded(models.conditional, x, y, then=then,
                              validation_data=(x[:32], y[:32]))
    h, later = full.select(epoch=0), full.select(epoch=-1)
    for history, phase, present in [(h, "train", True), (h, "eval", False),
                                    (later, "eval", False)]:
        sub = history.select(phase=phase)
        assert len(sub) > 0 and np.all(sub.present(key) == present), phase
        # LossHistory: an absent term reads as NaN; a present one is a number
        assert np.all(np.isnan(sub[key]) != present), phase
    assert list(later.phases) == ["eval", "eval", "call", "call"]
    assert list(later.present(key)) == [False, False, False, True]
    epochs, means = h.epoch_means(key, phase="eval")
    assert len(epochs) == len(means) == 0


@pytest.mark.parametrize("retrace", [True, False], ids=["retraced", "stale_trace"])
def test_term_set_changing_between_two_fits(retrace):
    """A layer attribute switches a second add_loss on between two fit()s. A
    traced step (TF, JAX) only runs it once the step functions are rebuilt;
    torch's eager step runs it at once. The recorder shows what Keras ran:
    both fits' epoch means equal their history.history."""
    x, y = models.data()
    fit = dict(FIT, epochs=1, validation_data=(x[:32], y[:32]))
    model, toggle = models.toggled()
    with li.attach(model) as rec:
        first = model.fit(x, y, **fit).history
        first_records = rec.history.since(0)  # a copy
        toggle.extra = True
        if retrace:
            model.make_train_function(force=True)
            model.make_test_function(force=True)
        second = model.fit(x, y, **fit).history
    h = rec.history
    second_records = h.since(first_records.records)
    assert len(first_records) == len(second_records) == 6  # 4 train + 2 eval each
    assert_terms_sum_to_total(h)
    assert_keras_totals(first_records, first)
    assert_keras_totals(second_records, second)
    extra = "add_loss:toggled/toggle#2"
    runs_it = retrace or BACKEND == "torch"
    assert first_records.keys() == ["compiled", "add_loss:toggled/toggle"]
    assert h.keys() == first_records.keys() + ([extra] if runs_it else [])
    if runs_it:
        assert second_records.present(extra).all() and np.all(second_records[extra] > 0)


# ------------------------------------------ 6. metrics named like *_loss
def test_metrics_named_like_losses_on_a_multi_output_model():
    """Metrics `aux_loss`, `something_loss` and `b_loss` (logged `a_aux_loss`,
    `a_something_loss`, `b_b_loss`) next to Keras's per-output `a_loss` and
    `b_loss`: history keys unchanged, breakdown exact, compiled terms match
    the per-output losses times their weights, not the look-alike metrics."""
    x, y = models.multi_output_data("dict")
    result = fit_with_and_without(models.multi_output_loss_named_metrics, x, y, epochs=1)
    assert_invariants(result)  # includes: history.history identical, same keys
    logs = result["recorded"]
    assert sorted(logs) == sorted(
        f"{prefix}{key}" for prefix in ("", "val_")
        for key in ("loss", "a_loss", "b_loss", "a_aux_loss", "a_something_loss", "b_b_loss"))
    h = result["history"]
    assert h.keys() == ["compiled:a", "compiled:b", "regularizer:named/trunk/kernel"]
    for name, weight in (("a", 1.0), ("b", 0.3)):
        assert h.term(f"compiled:{name}").weight == weight
        for phase, prefix in (("train", ""), ("eval", "val_")):
            _, means = h.epoch_means(f"compiled:{name}", phase=phase)
            np.testing.assert_allclose(means, np.asarray(logs[f"{prefix}{name}_loss"]) * weight,
                                       rtol=1e-5)


# ------------------------------------------ 7. activity regularizers
@pytest.mark.parametrize("batch_size", [1, 64])
def test_activity_on_a_layer_with_two_outputs(batch_size):
    """One activity term per output (#2 for the second); since Keras 3.14
    each is divided by the batch size, which the recorded values show."""
    x, y = models.data(64)
    n = 64 if batch_size == 64 else 8  # batch 1: 8 steps, not 64
    x, y = x[:n], y[:n]
    _, _, full = fit_recorded(models.multi_output_activity, x, y, batch_size=batch_size,
                              validation_data=(x, y), then=call_checked(x[:batch_size]))
    h, call = full.select(epoch=0), full.select(epoch=-1)
    keys = ["activity:split_act/split", "activity:split_act/split#2"]
    assert h.keys() == ["compiled", *keys]
    assert list(h.phases) == ["train"] * (n // batch_size) + ["eval"] * (n // batch_size)
    assert np.all(h.batch_sizes == batch_size)

    def by_hand(batch):  # the layer's outputs are its input's halves, as they are
        batch = batch.astype(np.float64)
        return [0.05 * np.sum(batch[:, :4] ** 2) / len(batch),
                0.05 * np.sum(batch[:, 4:] ** 2) / len(batch)]

    evals = h.select(phase="eval")  # eval batch i is x[i*bs:(i+1)*bs], the final weights
    for i in range(len(evals)):
        np.testing.assert_allclose([evals[k][i] for k in keys],
                                   by_hand(x[i * batch_size:(i + 1) * batch_size]), rtol=1e-5)
    np.testing.assert_allclose([call[k][0] for k in keys], by_hand(x[:batch_size]), rtol=1e-5)


def test_activity_regularizer_on_an_lstm_with_batch_size_1():
    n = 8
    x = np.random.default_rng(0).normal(size=(n, 3, 8)).astype("float32")
    _, y = models.data(n)
    _, _, h = fit_recorded(lambda: models.rnn("LSTM"), x, y, batch_size=1)
    expected = ["compiled", "activity:recurrent/rnn", "regularizer:recurrent/rnn/lstm_cell/kernel"]
    assert h.keys() == keys_present_in_every(h, "train") == expected
    assert len(h) == n and np.all(h.batch_sizes == 1)
    assert np.all(h["activity:recurrent/rnn"] > 0)


def test_simple_rnn_activity_regularizer_is_reported_as_keras_applies_it():
    """Keras 3.15's SimpleRNN accepts activity_regularizer but never applies
    it (LSTM and GRU do): the recorder reports what Keras adds, no more."""
    x = np.random.default_rng(0).normal(size=(4, 3, 8)).astype("float32")
    plain = models.rnn("SimpleRNN")
    plain(x, training=True)
    model = models.rnn("SimpleRNN")
    with li.attach(model) as rec:
        model(x, training=True)
        assert_call_record_is_model_losses(rec.history, model)
    assert [value(t) for t in model.losses] == [value(t) for t in plain.losses]
    keras_applies_it = len(plain.losses) == 2  # activity + kernel; False on Keras 3.15
    assert rec.history.keys() == (["activity:recurrent/rnn"] if keras_applies_it else []) + [
        "regularizer:recurrent/rnn/simple_rnn_cell/kernel"]


# ------------------------------------------ 8. many terms
# Measured on JAX on the project's 2-core machine, this test alone (JAX warm-up
# included) takes 6.7 s with 200 layers, 8.4 s with 300, 10.7 s with 400 (about
# 13 s with 500); Keras's own fit is most of it (the recorder adds ~20 %), and
# wall time doubles while other test runs share the machine. 300 keeps it under
# ~15 s even then and keeps this file within its 60 s budget per backend.
MANY = 300


def test_hundreds_of_regularized_layers_each_a_term():
    x, y = models.data(32, in_dim=4)
    model = models.many_regularized(MANY)
    with li.attach(model) as rec:  # a capacity warning would be an error here
        logs = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    h = rec.history
    assert h.keys() == ["compiled"] + [f"regularizer:deep/d{i:03d}/kernel" for i in range(MANY)]
    assert all(h.term(k).kind == "regularizer" for k in h.keys()[1:])
    assert len(h) == 2 and "residual" not in h  # no capacity overflow
    assert_terms_sum_to_total(h)
    assert_keras_totals(h, logs)

    # The text table documents one row per term: every term is listed.
    lines = li.breakdown_table(h).splitlines()
    assert lines[0] == "Loss breakdown (train records: 2)"
    assert lines[1].split() == ["term", "kind", "layer", "last", "mean", "min", "max", "share"]
    assert [line.split()[0] for line in lines[3:]] == h.keys() + ["total"]
    rows = h.breakdown()
    shares = sum(row.share for row in rows[:-1])  # percent of a float32 total
    np.testing.assert_allclose(shares, 100.0, rtol=1e-6)
    # The figure documents max_terms (8): the 7 largest terms, the rest summed.
    from loss_inspect.plotting import plot_history, plotted_series

    series = plotted_series(plot_history(h))
    other = f"other ({MANY + 1 - 7} terms)"
    assert list(series)[-2:] == [other, "total"] and len(series) == 9
    assert "compiled" in series  # the largest term is kept by name
    bands = sum(y for label, (_, y) in series.items() if label != "total")
    np.testing.assert_allclose(bands, series["total"][1], rtol=1e-6)


# ------------------------------------------ 9. mixed precision, float64
@pytest.fixture
def restore_dtype_policy():
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    try:
        yield
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)


MIXED = {
    # activity and add_loss terms in float16 (the layers' compute dtype)
    "float16_added_terms": (models.mlp, [
        "add_loss:mlp/extra", "activity:mlp/hidden", "regularizer:mlp/hidden/kernel",
        "regularizer:mlp/out/bias"]),
    # every added term in float32 (an add_loss cast to float32, weight regularizers)
    "float32_added_terms": (models.float32_added_terms, [
        "add_loss:f32_terms/penalty", "regularizer:f32_terms/hidden/kernel",
        "regularizer:f32_terms/out/bias"]),
}
# Keras 3.15's TF compute_loss sums [float32 compiled loss, float16 terms] with
# ops.sum(list), which TensorFlow refuses (TypeError) -- without loss_inspect.
KERAS_FAILS_MIXED = {("tensorflow", "float16_added_terms")}


@pytest.mark.parametrize("name", sorted(MIXED))
def test_mixed_float16_with_loss_scale_optimizer(name, restore_dtype_policy):
    keras.mixed_precision.set_global_policy("mixed_float16")
    x, y = models.data()
    build, added = MIXED[name]
    if (BACKEND, name) in KERAS_FAILS_MIXED:
        plain = outcome(lambda: build().fit(x, y, **FIT).history)
        model = build()
        with li.attach(model) as rec:
            recorded = outcome(lambda: model.fit(x, y, **FIT).history)
        assert plain[0] is TypeError and "float16" in plain[1]
        assert recorded == plain
        assert len(rec.history) == 0
        return
    # Tolerances stay 1e-6 relative (fit_recorded): float16 terms are exact in
    # float64, and the total is their float32 sum with the float32 compiled
    # loss, so only float32 rounding (~6e-8 per addition) separates the
    # recorded terms' sum from it. The loss scale never reaches the values
    # (the optimizer scales the loss after compute_loss).
    model, logs, h = fit_recorded(build, x, y)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.get_layer("hidden").compute_dtype == "float16"
    assert h.keys() == ["compiled", *added]
    assert np.all(np.isfinite(h.values())) and np.all(h["total"] > 0)
    assert np.all(np.asarray(logs["loss"]) < 1e3)  # unscaled (the scale starts at 32768)


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64:UserWarning")
def test_floatx_float64(restore_dtype_policy):
    keras.config.set_floatx("float64")
    # set_floatx alone leaves the global dtype policy at float32 once any layer
    # exists in the process (test modules build some at import): set both.
    keras.config.set_dtype_policy("float64")
    x, y = models.data()
    model, _, h = fit_recorded(models.mlp, x, y)  # epoch means to 1e-6: see below
    assert model.get_layer("hidden").kernel.dtype == "float64"
    assert len(h.keys()) == 5
    parts = np.zeros(len(h))
    for key in h.keys():
        parts += np.where(h.present(key), h[key], 0.0)
    # Real float64 arithmetic (TF, torch): the terms sum to the total to float64
    # rounding. JAX without jax_enable_x64 silently computes in float32 (it
    # warns), so there the float32 bound of fit_recorded is the right one.
    real64 = ops.convert_to_numpy(ops.ones(())).dtype == np.float64
    assert real64 == (BACKEND != "jax")
    np.testing.assert_allclose(parts, h["total"], rtol=1e-12 if real64 else 1e-6)
    # Epoch means stay at 1e-6: Keras's torch trainer hands history.history
    # float32-rounded values even under float64.


# ------------------------------------------ 10. initial_epoch
def test_initial_epoch_numbers_epochs_as_keras_does():
    x, y = models.data()
    _, logs, h = fit_recorded(models.mlp, x, y, initial_epoch=2, epochs=4,
                              validation_data=(x[:32], y[:32]))
    assert len(logs["loss"]) == len(logs["val_loss"]) == 2
    assert list(h.epochs) == [2] * 6 + [3] * 6  # Keras's 0-based epoch indices
    assert list(h.select(phase="train").steps) == list(range(1, 9))
    for phase, key in (("train", "loss"), ("eval", "val_loss")):
        epochs, means = h.epoch_means(phase=phase)
        assert list(epochs) == [2, 3]
        np.testing.assert_allclose(means, logs[key], rtol=1e-6)


# ------------------------------------------ 11. custom training loops
def _tf_function_loop(model, x, y):
    import tensorflow as tf

    optimizer = keras.optimizers.SGD(0.05)
    optimizer.build(model.trainable_variables)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)
            loss = ops.mean(ops.square(yb - pred)) + ops.sum(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return [float(step(x[i : i + 8], y[i : i + 8])) for i in range(0, 32, 8)], None


def _jax_jit_loop(model, x, y, return_losses):
    import jax

    optimizer = keras.optimizers.SGD(0.05)
    optimizer.build(model.trainable_variables)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    opt_vars = [v.value for v in optimizer.variables]

    def loss_fn(trainable, non_trainable, xb, yb):
        if return_losses:
            pred, non_trainable, losses = model.stateless_call(
                trainable, non_trainable, xb, training=True, return_losses=True)
            extra = sum(losses)
        else:  # Keras silently drops the add_loss terms (keras-losses.md #2)
            pred, non_trainable = model.stateless_call(trainable, non_trainable, xb, training=True)
            extra = 0.0
        return ops.mean(ops.square(yb - pred)) + extra, non_trainable

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    out = []
    for i in range(0, 32, 8):
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x[i : i + 8], y[i : i + 8])
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        out.append(float(loss))
    for variable, new in zip(model.trainable_variables, trainable):
        variable.assign(new)
    return out, None


def _torch_eager_loop(model, x, y):
    optimizer = keras.optimizers.SGD(0.05)
    optimizer.build(model.trainable_variables)
    out, by_hand = [], []
    for i in range(0, 32, 8):
        pred = model(x[i : i + 8], training=True)
        extra = sum(model.losses)
        by_hand.append(value(extra))
        loss = ops.mean(ops.square(ops.convert_to_tensor(y[i : i + 8]) - pred)) + extra
        model.zero_grad()
        loss.backward()
        optimizer.apply([v.value.grad for v in model.trainable_variables],
                        model.trainable_variables)
        out.append(float(loss.detach()))
    return out, by_hand


# The loops of this process's backend (the others do not apply to it).
CUSTOM_LOOPS = {
    "tensorflow": {"tf_function": _tf_function_loop},
    "jax": {"jax_jit_return_losses": lambda m, x, y: _jax_jit_loop(m, x, y, True),
            "jax_jit_without_return_losses": lambda m, x, y: _jax_jit_loop(m, x, y, False)},
    "torch": {"torch_eager": _torch_eager_loop},
}[BACKEND]


@pytest.mark.parametrize("loop", sorted(CUSTOM_LOOPS))
def test_custom_training_loop(loop):
    """Traced loops (tf.function, jax.jit) record nothing per step; eager
    loops record one "call" per forward pass, equal to sum(model.losses) by
    hand. Neither changes the loop's losses or adds a warning."""
    x, y = models.data(32)

    def run(attach):
        model = models.mlp()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rec = li.attach(model) if attach else None
            try:
                losses, by_hand = CUSTOM_LOOPS[loop](model, x, y)
                in_loop = rec.history.since(0) if attach else None
                model(x[:4], training=True)  # an eager forward pass after the loop
                after = [value(t) for t in model.losses]
                if attach:
                    assert_call_record_is_model_losses(rec.history, model)
            finally:
                if rec is not None:
                    rec.detach()
        seen = {(w.category, str(w.message)) for w in caught}
        return (losses, by_hand, after), seen, in_loop, rec

    plain, plain_seen, _, _ = run(attach=False)
    recorded, seen, in_loop, rec = run(attach=True)
    assert recorded == plain  # same loss at every step
    assert seen <= plain_seen, seen - plain_seen  # no new warning, from Keras or us
    _, by_hand, after = recorded
    h = rec.history
    assert_terms_sum_to_total(h)
    if by_hand is None:  # traced: nothing readable per step
        assert len(in_loop) == 0 and list(h.phases) == ["call"]
    else:
        assert list(h.phases) == ["call"] * 5
        np.testing.assert_allclose(in_loop["total"], by_hand, rtol=1e-6)
        assert in_loop.keys() == ["add_loss:mlp/extra", "activity:mlp/hidden",
                                  "regularizer:mlp/hidden/kernel", "regularizer:mlp/out/bias"]
    np.testing.assert_allclose(h["total"][-1], sum(after), rtol=1e-6)


def test_call_records_carry_updates_applied_in_a_custom_loop():
    x, y = models.data(16)
    model = models.mlp()
    with li.attach(model) as rec:
        model(x[:4])
        optimizer = model.optimizer
        optimizer.build(model.trainable_variables)
        for _ in range(2):  # two updates, as a custom loop makes them
            optimizer.apply([ops.zeros(v.shape, v.dtype) for v in model.trainable_variables],
                            model.trainable_variables)
        model(x[:4])
        model.train_on_batch(x, y)
    assert int(ops.convert_to_numpy(optimizer.iterations)) == 3
    assert list(rec.history.phases) == ["call", "call", "train"]
    assert list(rec.history.steps) == [0, 2, 3]
