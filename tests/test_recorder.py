"""The recorder's invariants, on real Keras models, on the backend of this process.

1. At every record the terms sum to the total.
2. The totals are Keras's own (epoch means == history.history["loss"/"val_loss"]).
3. Attaching changes nothing (bit-identical weights, same history.history: bit for
   bit, or to a few float32 ulp where XLA compiles the step).
4. Detaching leaves the model as it was.
5. Attach twice / two models / attach after a first fit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref

import keras
import numpy as np
import pytest

import loss_inspect as li
from loss_inspect.history import LossHistory
from loss_inspect._readback import RowReadback
import models

FIT = dict(batch_size=16, epochs=2, verbose=0, shuffle=False)
BACKEND = os.environ["KERAS_BACKEND"]  # one backend per pytest process (conftest)
# jit_compile=True means torch.compile on torch: tested on its own below.
JIT_MODES = ["auto", False] + ([True] if BACKEND != "torch" else [])


def assert_terms_sum_to_total(history):
    assert len(history) > 0
    parts = np.zeros(len(history))
    for key in history.keys():
        parts += np.where(history.present(key), history[key], 0.0)
    np.testing.assert_allclose(parts, history["total"], rtol=1e-6, atol=1e-7)


def assert_keras_totals(history, keras_history):
    _, train_means = history.epoch_means(phase="train")
    np.testing.assert_allclose(train_means, keras_history["loss"], rtol=1e-6)
    if "val_loss" in keras_history:
        _, eval_means = history.epoch_means(phase="eval")
        np.testing.assert_allclose(eval_means, keras_history["val_loss"], rtol=1e-6)


def fit_with_and_without(build, x, y, **fit_kwargs):
    """Fit a fresh model twice, plain and recorded; return both results."""
    kwargs = {**FIT, "validation_data": (x[:32], _head(y)), **fit_kwargs}
    plain_model = build()
    plain = plain_model.fit(x, y, **kwargs).history
    model = build()
    with li.attach(model) as rec:
        recorded = model.fit(x, y, **kwargs).history
    return dict(
        plain=plain,
        plain_weights=models.weights(plain_model),
        recorded=recorded,
        weights=models.weights(model),
        history=rec.history,
        model=model,
    )


def _head(y):
    if isinstance(y, dict):
        return {k: v[:32] for k, v in y.items()}
    if isinstance(y, list):
        return [v[:32] for v in y]
    return y[:32]


def assert_unchanged_in_fresh_processes(tmp_path, builder, compile_kwargs, n=64, **fit):
    """Invariant 3 where results depend on process history (un-jitted JAX)."""
    import json

    fit = {**FIT, "validation_samples": 32, **fit}
    outputs = {}
    for mode in ("plain", "attach"):
        out = tmp_path / f"{mode}.npz"
        subprocess.run(
            [sys.executable, os.path.join(os.path.dirname(__file__), "fresh_fit.py"), builder,
             json.dumps(compile_kwargs), json.dumps(fit), str(n), mode, str(out)],
            check=True, env=os.environ.copy(), timeout=300,
        )
        outputs[mode] = np.load(out)
    plain, recorded = outputs["plain"], outputs["attach"]
    assert json.loads(str(recorded["history"])) == json.loads(str(plain["history"]))
    for key in plain.files:
        if key != "history":
            np.testing.assert_array_equal(recorded[key], plain[key])


#: How far a value of ``history.history`` may move, in float32 units in the
#: last place, when XLA compiles the step (see `assert_same_keras_history`).
XLA_HISTORY_MAXULP = 4


def xla_fused(model) -> bool:
    """Does XLA compile ``model``'s train step as one fused program?"""
    return (BACKEND in ("jax", "tensorflow") and model.jit_compile is True
            and not model.run_eagerly)


def assert_same_keras_history(recorded, plain, *, fused):
    """``history.history`` with the recorder is the one without it.

    Bit for bit, except where XLA compiles the step (``fused``). There the
    recorder reads each term inside the step, which gives the term a second
    consumer, and XLA may then fuse the *forward* loss value, which only feeds
    Keras's loss trackers, differently: a reduction vectorised in another
    kernel, a multiply-add contracted or not. Seen on an Intel Xeon host (not
    on the AMD EPYC hosts before it): a two-output JAX model's epoch ``loss``
    and ``val_loss`` 1 ulp apart, everything else equal, weights bit-identical.
    The gradients never read the forward value, so the weights are still
    compared bit for bit (`assert_invariants`).
    """
    if not fused:
        assert recorded == plain
        return
    assert sorted(recorded) == sorted(plain)
    for key, values in plain.items():
        assert len(recorded[key]) == len(values), key
        np.testing.assert_array_max_ulp(
            np.float32(recorded[key]), np.float32(values), maxulp=XLA_HISTORY_MAXULP)


def assert_invariants(result):
    assert_terms_sum_to_total(result["history"])
    assert_keras_totals(result["history"], result["recorded"])
    assert_same_keras_history(result["recorded"], result["plain"],
                              fused=xla_fused(result["model"]))
    for a, b in zip(result["plain_weights"], result["weights"]):
        np.testing.assert_array_equal(a, b)


SINGLE_OUTPUT = {
    "functional": models.mlp,
    "sequential": models.sequential,
    "subclassed": models.subclassed,
    "nested_shared": models.nested_shared,
    "add_loss_only": models.add_loss_only,
    "no_added_terms": models.plain,
    "conditional_add_loss": models.conditional,
    "compute_loss_override": models.compute_loss_override,
    "override_without_training_arg": lambda: models.compute_loss_override(False),
}


def test_history_comparison_under_xla_allows_rounding_only():
    """The XLA allowance is a few ulp of float32: a real change still fails."""
    plain = {"loss": [1.6743154525756836, 1.4040776491165161], "a_loss": [0.5]}
    one_ulp = {**plain, "loss": [1.674315333366394, 1.4040776491165161]}
    assert_same_keras_history(one_ulp, plain, fused=True)
    with pytest.raises(AssertionError):
        assert_same_keras_history(one_ulp, plain, fused=False)
    with pytest.raises(AssertionError):  # 1e-5 relative: ~80 ulp
        assert_same_keras_history({**plain, "a_loss": [0.500005]}, plain, fused=True)
    with pytest.raises(AssertionError):  # a key the recorder added
        assert_same_keras_history({**plain, "extra": [0.0]}, plain, fused=True)
    with pytest.raises(AssertionError):  # a record missing
        assert_same_keras_history({**plain, "a_loss": []}, plain, fused=True)


@pytest.mark.parametrize("name", sorted(SINGLE_OUTPUT))
def test_invariants_single_output(name):
    x, y = models.data()
    assert_invariants(fit_with_and_without(SINGLE_OUTPUT[name], x, y))


@pytest.mark.parametrize(
    "container,loss_weights,none_output",
    [
        ("dict", {"a": 1.0, "b": 0.2}, False),
        ("dict", None, False),
        ("dict", None, True),
        ("list", [1.0, 0.5], False),
        ("list", None, False),
    ],
)
def test_invariants_multi_output(container, loss_weights, none_output):
    x, y = models.multi_output_data(container)
    if none_output:
        y = {"a": y["a"]}
    build = lambda: models.multi_output(container, loss_weights, none_output)  # noqa: E731
    result = fit_with_and_without(build, x, y)
    assert_invariants(result)
    h = result["history"]
    if none_output:
        assert [t.key for t in h.terms if t.kind == "compiled"] == ["compiled"]
        assert h.term("compiled").output == "a"
        return
    names = ("a", "b") if container == "dict" else ("head_a", "head_b")
    weights = (
        [None, None] if loss_weights is None
        else [loss_weights[n] for n in names] if container == "dict" else loss_weights
    )
    for name, weight in zip(names, weights):
        term = h.term(f"compiled:{name}")
        assert (term.kind, term.output, term.weight) == ("compiled", name, weight)
        # Keras logs each output's loss *unweighted*; ours is after loss_weights.
        _, means = h.epoch_means(f"compiled:{name}")
        expected = np.asarray(result["recorded"][f"{name}_loss"]) * (weight or 1.0)
        np.testing.assert_allclose(means, expected, rtol=1e-5)



def test_eager_steps_take_the_new_loss_weights_after_a_recompile():
    """Eager steps find their layout by what decides it (phase, outputs,
    origins); a recompile with other loss weights must not reuse the old
    layout or weights: the terms would then miss Keras's new total."""
    x, y = models.multi_output_data("dict")
    model = models.multi_output("dict", {"a": 1.0, "b": 0.2})
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss={"a": "mse", "b": "mae"},
                  loss_weights={"a": 1.0, "b": 0.2}, run_eagerly=True)
    with li.attach(model) as rec:
        first = model.fit(x, y, **FIT).history
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss={"a": "mse", "b": "mae"},
                      loss_weights={"a": 1.0, "b": 3.0}, run_eagerly=True)
        second = model.fit(x, y, **FIT).history
    h = rec.history
    assert_terms_sum_to_total(h)  # with the old weights, 'compiled:b' would miss the total
    train = h.select(phase="train")
    steps_per_fit = FIT["epochs"] * len(x) // FIT["batch_size"]
    assert len(train) == 2 * steps_per_fit
    by_epoch = lambda values: values.reshape(2 * FIT["epochs"], -1).mean(axis=1)  # noqa: E731
    np.testing.assert_allclose(by_epoch(train["total"]), first["loss"] + second["loss"],
                               rtol=1e-6)
    np.testing.assert_allclose(by_epoch(train["compiled:b"])[FIT["epochs"]:],
                               3.0 * np.asarray(second["b_loss"]), rtol=1e-5)
    np.testing.assert_allclose(by_epoch(train["compiled:b"])[:FIT["epochs"]],
                               0.2 * np.asarray(first["b_loss"]), rtol=1e-5)
    # the series goes on under its key; no one weight applies to all of it
    assert h.term("compiled:b").weight is None and h.term("compiled:a").weight == 1.0


def _fail_once(monkeypatch, owner, name):
    """Make ``owner.name`` raise once (an injected read failure); the list
    it returns gets an entry when it has."""
    real, failures = getattr(owner, name), []

    def failing_once(self, *args, **kwargs):
        if not failures:
            failures.append(1)
            raise RuntimeError("injected read failure")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, failing_once)
    return failures


def test_a_failure_in_reading_rows_is_reported_and_training_goes_on(monkeypatch):
    """The read path runs inside Keras's loop (the step wrapper, the epoch
    callback); a bug there warns once and loses only the rows of that read."""
    x, y = models.data()
    model = models.mlp()
    failures = _fail_once(monkeypatch, LossHistory, "_append")
    with li.attach(model) as rec:
        with pytest.warns(RuntimeWarning, match="could not record a step.*injected read failure"):
            logs = model.fit(x, y, **FIT).history
    assert len(logs["loss"]) == FIT["epochs"] and failures
    train = rec.history.select(phase="train")
    assert list(train.epochs) == [1] * (len(x) // FIT["batch_size"])  # the first epoch's read failed
    assert_terms_sum_to_total(train)


def test_a_failure_in_reading_rows_as_fit_starts_is_reported_and_fit_runs(monkeypatch):
    """fit() first reads the rows of what ran before it; a bug in that read
    (outside Keras's loop) warns once, and fit() trains and records every step."""
    x, y = models.data()
    model = models.mlp()
    with li.attach(model) as rec:
        model(x[:4])  # an eager forward pass, recorded before fit()
        failures = _fail_once(monkeypatch, RowReadback, "_read_state")
        with pytest.warns(RuntimeWarning, match="could not record a step.*injected read failure"):
            logs = model.fit(x, y, **FIT).history
    assert len(logs["loss"]) == FIT["epochs"] and failures
    assert rec.history.select(phase="call").records == 1
    train = rec.history.select(phase="train")
    assert train.records == FIT["epochs"] * (len(x) // FIT["batch_size"])
    assert list(train.steps) == list(range(1, train.records + 1))
    assert_terms_sum_to_total(train)


# Un-jitted JAX is not bit-repeatable here: two *plain* jit_compile=False
# fits in one process give val_loss 1.22785 or 1.22494 depending on what the
# process compiled before (no recorder involved). Fresh processes do not help:
# the recorder's own eager ops change what the process compiled first, and a
# plain and a recorded run_eagerly fit, each in a fresh process, gave those
# two values (seen in a run of this suite). There, "attaching changes nothing" can only
# be checked to that run-to-run spread; invariants 1 and 2 stay exact.
EAGER_JAX = BACKEND == "jax"
EAGER_JAX_RTOL = 5e-3


def assert_unchanged_up_to_eager_jax_noise(result):
    assert sorted(result["recorded"]) == sorted(result["plain"])
    for key, values in result["plain"].items():
        np.testing.assert_allclose(result["recorded"][key], values, rtol=EAGER_JAX_RTOL)
    for a, b in zip(result["plain_weights"], result["weights"]):
        np.testing.assert_allclose(b, a, rtol=EAGER_JAX_RTOL, atol=1e-4)


@pytest.mark.parametrize("jit_compile", JIT_MODES)
def test_invariants_under_jit_modes(jit_compile):
    x, y = models.data()
    result = fit_with_and_without(lambda: models.mlp(jit_compile=jit_compile), x, y)
    if EAGER_JAX and jit_compile is False:
        assert_terms_sum_to_total(result["history"])
        assert_keras_totals(result["history"], result["recorded"])
        assert_unchanged_up_to_eager_jax_noise(result)
    else:
        assert_invariants(result)


def test_invariants_run_eagerly():
    x, y = models.data()
    result = fit_with_and_without(lambda: models.mlp(run_eagerly=True), x, y)
    if EAGER_JAX:
        assert_terms_sum_to_total(result["history"])
        assert_keras_totals(result["history"], result["recorded"])
        assert_unchanged_up_to_eager_jax_noise(result)
    else:
        assert_invariants(result)


if BACKEND == "torch":  # jit_compile=True only means torch.compile on torch

    @pytest.mark.slow
    def test_torch_compile_breakdown_is_exact():
        """torch.compile (jit_compile=True on torch): exact breakdown, Keras's totals.

        Bit-identical weights are not promised here: the hooks make Dynamo split
        the compiled graph, and a split graph may round differently.
        """
        x, y = models.data(32)
        model = models.mlp(jit_compile=True)
        with li.attach(model) as rec:
            logs = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
        assert_terms_sum_to_total(rec.history)
        assert_keras_totals(rec.history, logs)


def _spy_row_writes(monkeypatch):
    """The ``slice_update`` flag of every row write traced (the real write runs)."""
    from loss_inspect import _keras_internals

    seen = []
    real = _keras_internals.write_row_in_place

    def write_row_in_place(values, cursor, index, row, slice_update=False):
        seen.append(slice_update)
        return real(values, cursor, index, row, slice_update)

    monkeypatch.setattr(_keras_internals, "write_row_in_place", write_row_in_place)
    return seen


def test_row_write_follows_kerass_batch_end_dispatch(backend, monkeypatch):
    """JAX: where each step's logs are waited for (a fit with a batch-end
    callback such as TerminateOnNaN, or train_on_batch) train steps write their
    row with a slice update; a default fit (batch ends in Keras's thread pool)
    keeps the scatter. Either way the recorder's invariants hold."""
    x, y = models.data(64)
    seen = _spy_row_writes(monkeypatch)
    result = fit_with_and_without(models.mlp, x, y,
                                  callbacks=[keras.callbacks.TerminateOnNaN()])
    assert_invariants(result)
    waited_for = list(seen)

    del seen[:]
    with li.attach(models.mlp()) as rec:
        rec.model.fit(x, y, **FIT)
    default_fit = list(seen)

    del seen[:]
    model = models.mlp()
    with li.attach(model) as rec:
        logs = model.train_on_batch(x[:16], y[:16], return_dict=True)
    on_batch = list(seen)
    assert_terms_sum_to_total(rec.history)
    np.testing.assert_allclose(rec.history["total"][-1], logs["loss"], rtol=1e-6)

    if backend == "jax":
        assert True in waited_for and True in on_batch
        assert True not in default_fit and default_fit  # the scatter, traced
    elif backend == "tensorflow":
        assert True not in waited_for + default_fit + on_batch  # TF is never async
    else:
        assert not waited_for + default_fit + on_batch  # torch rows skip the buffer


def test_steps_per_execution_records_every_step(backend):
    x, y = models.data(96)
    if backend == "torch":
        with pytest.raises(ValueError, match="steps_per_execution"):
            models.mlp(steps_per_execution=3).fit(x, y, verbose=0)
        return
    result = fit_with_and_without(
        lambda: models.mlp(steps_per_execution=3), x, y, batch_size=16
    )
    assert_invariants(result)
    train = result["history"].select(phase="train")
    assert len(train) == 2 * 6  # one record per optimizer step, not per execution
    np.testing.assert_array_equal(train.steps, np.arange(1, 13))


def test_buffer_is_read_only_after_a_step_ran(monkeypatch):
    """Reading the history again, or fit() asking at its start and end, costs
    no host read of the device buffer unless a step function ran since."""
    from loss_inspect import _capture

    x, y = models.data(64)
    model = models.mlp()
    rec = li.attach(model)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert rec.history.records == 8
    reads = []
    real_to_numpy = _capture.to_numpy
    monkeypatch.setattr(_capture, "to_numpy", lambda v: reads.append(v) or real_to_numpy(v))
    rec.history, rec.history
    assert reads == []
    model.train_on_batch(x[:16], y[:16])  # one more step: the next read must see it
    assert rec.history.records == 9
    rec.detach()


def test_ragged_last_batch_weighted_like_keras(tmp_path):
    x, y = models.data(56)  # batches of 16, 16, 16, 8
    result = fit_with_and_without(models.mlp, x, y, validation_data=(x[:40], y[:40]))
    assert list(result["history"].select(phase="train").batch_sizes[:4]) == [16, 16, 16, 8]
    assert_terms_sum_to_total(result["history"])
    assert_keras_totals(result["history"], result["recorded"])
    if EAGER_JAX:  # a new batch shape compiles anew: process history matters
        assert_unchanged_in_fresh_processes(tmp_path, "mlp", {}, n=56, validation_samples=40)
    else:
        assert_invariants(result)


def test_expected_terms_of_each_model(backend):
    x, y = models.data()
    # Keras quirk, JAX only: inside fit's stateless_call each top-level layer
    # call opens its own call context, so a layer applied twice clears the
    # activity term of its first application. The breakdown shows what Keras
    # really optimised, which is one term there and two on TF and torch.
    shared_twice = [] if backend == "jax" else ["activity:vae/shared#2"]
    cases = {
        models.mlp: [
            "compiled", "add_loss:mlp/extra", "activity:mlp/hidden",
            "regularizer:mlp/hidden/kernel", "regularizer:mlp/out/bias",
        ],
        models.nested_shared: [
            "compiled", "add_loss:vae/encoder/kl", "activity:vae/encoder/code",
            "activity:vae/shared", *shared_twice,
            "regularizer:vae/shared/kernel",
        ],
        models.subclassed: [
            "compiled", "add_loss:subclassed", "add_loss:subclassed/twice",
            "add_loss:subclassed/twice#2",
        ],
        models.add_loss_only: ["add_loss:self_supervised/only"],
        models.plain: ["compiled"],
    }
    for build, expected in cases.items():
        model = build()
        with li.attach(model) as rec:
            model.fit(x, y, **FIT)
        assert sorted(rec.history.keys()) == sorted(expected), build.__name__
        assert rec.history.keys()[0] == expected[0]


@pytest.mark.parametrize("with_training_arg", [True, False])
def test_compute_loss_override_shows_its_extra_as_the_residual(with_training_arg):
    """The override adds a term Keras cannot attribute: it is the residual,
    with the value the override added, never folded into another term."""
    x, y = models.data()
    model = models.compute_loss_override(with_training_arg)
    with li.attach(model) as rec:
        model.fit(x, y, **FIT)
        y_pred = model.predict(x[:16], verbose=0)
    h = rec.history.select(phase="train")
    assert "residual" in h.keys() and h.term("residual").kind == "residual"
    other = [k for k in h.keys() if k != "residual"]
    np.testing.assert_allclose(h["residual"], h["total"] - sum(h[k] for k in other), rtol=1e-6)
    assert np.all(h["residual"] > 0)
    # The override's extra term is `factor * mean(|y_pred|)` (tests/models.py).
    with li.attach(model) as rec2:
        model.evaluate(x[:16], y[:16], batch_size=16, verbose=0)
    factor = 0.5 if with_training_arg else 0.25  # ExtraTermModel / ExtraTermNoTrainingArg
    np.testing.assert_allclose(rec2.history["residual"], [factor * np.mean(np.abs(y_pred))],
                               rtol=1e-5)


def test_phases_steps_and_epochs():
    x, y = models.data()
    model = models.mlp()
    with li.attach(model) as rec:
        model.fit(x, y, validation_data=(x[:32], y[:32]), **FIT)
        model.evaluate(x[:32], y[:32], batch_size=16, verbose=0)
        model.train_on_batch(x[:16], y[:16])
        model.test_on_batch(x[:16], y[:16])
        model.predict(x[:16], verbose=0)
        model(x[:4])
        model(x[:4], training=True)
    h = rec.history
    expected_phases = (
        ["train"] * 4 + ["eval"] * 2 + ["train"] * 4 + ["eval"] * 2  # fit
        + ["eval"] * 2 + ["train"] + ["eval"] + ["call"] * 2
    )
    assert list(h.phases) == expected_phases
    assert list(h.epochs) == [0] * 6 + [1] * 6 + [-1] * 6
    assert list(h.steps) == [1, 2, 3, 4, 4, 4, 5, 6, 7, 8, 8, 8, 8, 8, 9, 9, 9, 9]
    assert_terms_sum_to_total(h)


def test_call_records_equal_sum_of_model_losses():
    x, _ = models.data()
    model = models.mlp()
    with li.attach(model) as rec:
        model(x[:8], training=True)
        expected = [float(keras.ops.convert_to_numpy(t)) for t in model.losses]
    h = rec.history
    assert list(h.phases) == ["call"]
    assert np.isnan(h.batch_sizes[0])
    np.testing.assert_allclose(h["total"][0], sum(expected), rtol=1e-6)
    values = [h[k][0] for k in h.keys()]
    np.testing.assert_allclose(sorted(values), sorted(expected), rtol=1e-6)


def test_regularizer_value_is_the_one_used_in_the_step():
    """Read after the step, a regularizer is one update late; ours is not."""
    keras.utils.set_random_seed(models.SEED)
    inp = keras.Input((4,))
    dense = keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L2(0.5), name="d")
    model = keras.Model(inp, dense(inp), name="reg")
    model.compile(optimizer=keras.optimizers.SGD(0.3), loss="mse")
    x, y = models.data(16, in_dim=4)
    used = []
    with li.attach(model) as rec:
        for _ in range(4):
            kernel = keras.ops.convert_to_numpy(dense.kernel)
            used.append(0.5 * float(np.sum(kernel.astype(np.float64) ** 2)))
            model.train_on_batch(x, y)
    np.testing.assert_allclose(rec.history["regularizer:reg/d/kernel"], used, rtol=1e-5)
    assert len(set(np.round(used, 6))) == 4  # the weights really moved


EXECUTION_MODES = [dict(jit_compile=mode) for mode in JIT_MODES] + [dict(run_eagerly=True)]


@pytest.mark.parametrize("mode", EXECUTION_MODES, ids=str)
def test_detach_leaves_model_as_it_was(mode):
    x, y = models.data()
    model = models.mlp(**mode)
    model.fit(x, y, **FIT)
    before = {
        "model_dict": set(model.__dict__),
        "layer_dicts": [set(layer.__dict__) for layer in model._flatten_layers()],
        "metrics": list(model.metrics),
        "metrics_variables": len(model.metrics_variables),
        "train_function": model.train_function,
        "compute_loss": type(model).compute_loss,
        "flat_losses": list(model._compile_loss._flat_losses),
    }
    rec = li.attach(model)
    model.fit(x, y, **FIT)
    rec.detach()
    rec.detach()  # idempotent
    assert set(model.__dict__) == before["model_dict"]
    assert [set(layer.__dict__) for layer in model._flatten_layers()] == before["layer_dicts"]
    assert list(model.metrics) == before["metrics"]
    assert len(model.metrics_variables) == before["metrics_variables"]
    assert model.train_function is before["train_function"]
    assert model.compute_loss.__func__ is before["compute_loss"]
    assert list(model._compile_loss._flat_losses) == before["flat_losses"]
    logs = model.fit(x, y, validation_data=(x[:32], y[:32]), **FIT).history
    assert sorted(logs) == ["loss", "val_loss"]
    assert not rec.attached and len(rec.history) == 8


def test_history_keys_and_progress_bar_unchanged_while_attached(capsys):
    x, y = models.data(32)
    plain = models.mlp()
    plain.fit(x, y, batch_size=16, epochs=1, verbose=2)
    expected = capsys.readouterr().out
    model = models.mlp()
    with li.attach(model):
        model.fit(x, y, batch_size=16, epochs=1, verbose=2)
        shown = capsys.readouterr().out
        assert "loss_inspect" not in shown
        assert sorted(model.evaluate(x, y, verbose=0, return_dict=True)) == ["loss"]
    strip = lambda s: [line.split(" - ")[-1] for line in s.splitlines()]  # noqa: E731
    assert strip(shown)[-1] == strip(expected)[-1]


def test_attach_twice_returns_the_same_recorder_and_two_models_record():
    x, y = models.data()
    first, second = models.mlp(), models.plain()
    rec_a = li.attach(first)
    try:
        assert li.attach(first) is rec_a
        rec_b = li.attach(second)
        first.fit(x, y, **FIT)
        second.fit(x, y, **FIT)
        assert len(rec_a.history) == len(rec_b.history) == 8
        assert rec_b.history.keys() == ["compiled"]
        assert set(li.recorders()) == {rec_a, rec_b}
    finally:
        rec_a.detach()
        rec_b.detach()
    assert li.recorders() == []


def test_attach_after_a_first_fit_rebuilds_the_traced_step():
    x, y = models.data()
    model = models.mlp()
    model.fit(x, y, **FIT)
    with li.attach(model) as rec:
        logs = model.fit(x, y, validation_data=(x[:32], y[:32]), **FIT).history
    assert_keras_totals(rec.history, logs)
    assert rec.history.steps[0] == 9  # counted from the optimizer's iterations


def _patched_names(model):
    """Instance attributes loss_inspect may set, found on the model or its layers."""
    from loss_inspect._keras_internals import _INSTANCE_ATTRS

    found = set(model.__dict__) & set(_INSTANCE_ATTRS)
    for layer in model._flatten_layers():
        found |= {f"{layer.name}.add_loss"} if "add_loss" in layer.__dict__ else set()
    return found


def test_keyboard_interrupt_detaches_and_keeps_partial_history():
    x, y = models.data()
    model = models.mlp()

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with li.attach(model) as rec:
            model.fit(x, y, callbacks=[Interrupt()], **FIT)
    assert not rec.attached and _patched_names(model) == set()
    assert len(rec.history) == 3
    assert_terms_sum_to_total(rec.history)
    model.fit(x, y, **FIT)  # still trains


def _press_ctrl_c(after_s: float, done: threading.Event) -> threading.Thread:
    """A real SIGINT to this process, as a terminal or Jupyter's Stop sends it;
    pressed again every second while the interrupted call has not returned
    (Python drops one that lands inside a finalizer, and a user presses again)."""

    def press():
        time.sleep(after_s)
        while not done.is_set():
            os.kill(os.getpid(), signal.SIGINT)
            done.wait(1.0)

    thread = threading.Thread(target=press, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("trial", range(6))
def test_real_ctrl_c_anywhere_in_fit_keeps_every_completed_step(trial, python_sigint):
    """Ctrl-C lands at a random moment (train steps, validation, epoch ends):
    every step Keras completed is recorded and the model keeps whole weights.
    (Plain Keras 3.15 on JAX leaves deleted arrays in the model 3 times in 4.)"""
    rng = random.Random(trial)
    x, y = models.data(n=512)
    model = models.mlp()
    start_step, delay = rng.randrange(2, 120), rng.random() * 0.02
    done = threading.Event()

    class PressCtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == start_step:
                _press_ctrl_c(delay, done)

    with pytest.raises(KeyboardInterrupt):
        try:
            with li.attach(model) as rec:
                model.fit(x, y, batch_size=16, epochs=50, verbose=0,
                          validation_data=(x[:128], y[:128]), callbacks=[PressCtrlC()])
        finally:
            done.set()
    assert not rec.attached and _patched_names(model) == set()
    train = rec.history.select(phase="train")
    iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert list(train.steps) == list(range(1, iterations + 1)), (start_step, delay)
    assert_terms_sum_to_total(rec.history)
    assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)
    model.fit(x, y, verbose=0)  # the model still trains


class _ClearingLossesInterrupted(models.AddLoss):
    """An add_loss layer whose loss clearing raises KeyboardInterrupt once armed.

    That is where a real Ctrl-C lands about 1 time in 30 in the test above:
    Keras's ``Layer.__call__`` opens its call context, then clears every
    layer's last losses, and only then enters the ``try`` that closes it.
    """

    armed = False

    def _clear_losses(self):
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        super()._clear_losses()


def _mlp_through(layer, **hidden_kwargs):
    """Input(8) -> Dense(16, "hidden") -> ``layer`` -> Dense(1), compiled, named "mlp"."""
    keras.utils.set_random_seed(models.SEED)
    inp = keras.Input((8,))
    h = keras.layers.Dense(16, activation="relu", name="hidden", **hidden_kwargs)(inp)
    return models.compile_default(keras.Model(inp, keras.layers.Dense(1)(layer(h)), name="mlp"))


def _fitted_model_with_interrupted_loss_clearing(x, y):
    """A fitted model whose next new step function (evaluate's, here: traced
    anew on TF and JAX, run eagerly on torch) is interrupted in Keras's window."""
    gate = _ClearingLossesInterrupted(name="gate")
    model = _mlp_through(gate, activity_regularizer=keras.regularizers.L1(1e-3))
    model.fit(x, y, **FIT)
    gate.armed = True
    return model, gate


def test_ctrl_c_while_keras_clears_losses_leaves_a_model_that_trains():
    from loss_inspect import _keras_internals as internals

    x, y = models.data()
    # Plain Keras leaves the call context open: later calls would keep the
    # interrupted step's losses (torch: "backward through the graph a second time").
    model, _ = _fitted_model_with_interrupted_loss_clearing(x, y)
    with pytest.raises(KeyboardInterrupt):
        model.evaluate(x, y, verbose=0)
    assert internals.clear_stale_call_context()  # it was left open; closed for later tests

    model, gate = _fitted_model_with_interrupted_loss_clearing(x, y)
    with pytest.raises(KeyboardInterrupt):
        with li.attach(model):
            model.evaluate(x, y, verbose=0)
    assert not gate.armed and not internals.clear_stale_call_context()
    with li.attach(model) as rec:  # retraces on TF and JAX: under an open context it fails
        history = model.fit(x, y, **FIT).history
    assert_terms_sum_to_total(rec.history)
    assert_keras_totals(rec.history, history)
    assert {"activity:mlp/hidden", "add_loss:mlp/gate"} <= set(rec.history.keys())


class _FailsWhenArmed(keras.layers.Layer):
    """Passes x through; raises ValueError while armed (a bug in ``call()``)."""

    armed = False

    def call(self, x):
        if self.armed:
            raise ValueError("a bug in call()")
        return x


def test_an_error_in_a_step_leaves_the_recorded_model_trainable():
    """On JAX, plain Keras leaves the model without weights after an error in
    a step (its loop purged them); attached, the step's input state is put back."""
    x, y = models.data()
    bug = _FailsWhenArmed(name="bug")
    model = _mlp_through(bug, kernel_regularizer=keras.regularizers.L2(1e-2))
    with li.attach(model) as rec:
        model.fit(x, y, **FIT)
        weights = [keras.ops.convert_to_numpy(w) for w in model.weights]
        recorded = len(rec.history)
        bug.armed = True
        with pytest.raises(ValueError, match="a bug in call"):
            model.evaluate(x, y, verbose=0)  # a new step function: traced on TF and JAX
        bug.armed = False
    assert len(rec.history) == recorded
    for before, after in zip(weights, model.weights):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))
    with li.attach(model) as rec:
        history = model.fit(x, y, **FIT).history
    assert_terms_sum_to_total(rec.history)
    assert_keras_totals(rec.history, history)


def test_real_ctrl_c_in_evaluate_keeps_the_batches_it_ran(python_sigint):
    x, y = models.data(n=512)
    model = models.mlp()
    model.fit(x, y, verbose=0)
    x_big, y_big = np.tile(x, (40, 1)), np.tile(y, (40, 1))
    done = threading.Event()

    class PressCtrlC(keras.callbacks.Callback):
        def on_test_batch_end(self, batch, logs=None):
            if batch == 20:
                _press_ctrl_c(0.005, done)

    with pytest.raises(KeyboardInterrupt):
        try:
            with li.attach(model) as rec:
                model.evaluate(x_big, y_big, batch_size=16, verbose=0, callbacks=[PressCtrlC()])
        finally:
            done.set()
    evals = rec.history.select(phase="eval")
    assert 21 <= len(evals) < len(x_big) // 16
    assert_terms_sum_to_total(evals)
    assert model.evaluate(x, y, verbose=0) > 0  # weights are whole


def test_exception_in_user_call_propagates_and_detaches():
    class Boom(keras.layers.Layer):
        armed = False

        def call(self, x):
            if Boom.armed:
                raise RuntimeError("user bug in call()")
            return x

    class Arm(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            Boom.armed = batch == 1

    keras.utils.set_random_seed(models.SEED)
    inp = keras.Input((8,))
    model = keras.Model(inp, keras.layers.Dense(1)(Boom()(inp)))
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    x, y = models.data()
    with pytest.raises(RuntimeError, match="user bug in call"):
        with li.attach(model) as rec:
            model.fit(x, y, callbacks=[Arm()], **FIT)
    assert not rec.attached and _patched_names(model) == set()
    assert len(rec.history) == 2


def test_non_finite_term_is_recorded_and_located():
    x, y = models.data()
    x = x * 0.01  # activations near 0: log(|h| - 0.5) is NaN from the first step
    model = models.nan_model()
    with li.attach(model) as rec:
        model.fit(x, y, callbacks=[keras.callbacks.TerminateOnNaN()], **FIT)
    h = rec.history
    assert len(h) >= 1 and np.isnan(h["add_loss:nan/bad"][0])
    where = h.first_nonfinite()
    assert (where.record, where.key, where.phase, where.step) == (0, "add_loss:nan/bad", "train", 1)


def test_values_are_numpy_floats_no_tensors_kept():
    x, y = models.data()
    model = models.mlp()
    with li.attach(model) as rec:
        model.fit(x, y, **FIT)
        model(x[:4], training=True)
        # While attached, the registry refers to the last pass's loss tensors
        # weakly: on torch they carry the autograd graph.
        refs = [ref for ref, _ in rec._registry._entries.values()]
        assert refs and all(isinstance(ref, weakref.ref) for ref in refs)
    h = rec.history
    for name, value in vars(h).items():
        assert value is None or isinstance(value, (np.ndarray, list, dict, int)), name
        if isinstance(value, np.ndarray):
            assert value.dtype in (np.float64, np.int64, np.int8, bool), name
    assert rec._eager_rows == [] and len(rec._registry) == 0


@pytest.mark.parametrize(
    "bad,type_name",
    [
        (3.0, "float"),
        ("model", "str"),
        (np.zeros(3), "ndarray"),
        (keras.layers.Dense(2), "Dense"),
        (None, "NoneType"),
        (type("Sequential", (), {"__module__": "tf_keras.src.engine.sequential"})(),
         "tf_keras.src.engine.sequential.Sequential"),
        (type("Functional", (), {"__module__": "keras.src.engine.functional"})(),
         "keras.src.engine.functional.Functional"),
    ],
    ids=["float", "str", "ndarray", "layer", "none", "tf_keras", "keras2"],
)
def test_attach_rejects_non_models(bad, type_name):
    """Not a Keras 3 model. tf_keras (Keras 2) is not installed here, so its
    models are stood in for by classes from its module paths, which is all
    the check looks at (``_keras_internals.describe_non_model``)."""
    with pytest.raises(TypeError) as info:
        li.attach(bad)
    message = str(info.value)
    assert "Expected a Keras 3 model" in message and type_name in message
    if type_name.startswith(("tf_keras", "keras.src.engine")):
        assert "This is a tf.keras / Keras 2 model" in message


def test_bad_capacity_is_a_clear_error():
    with pytest.raises(ValueError, match="capacity must be a positive int \\(number of terms\\); got 0"):
        li.attach(models.plain(), capacity=0)


def test_bypassed_compute_loss_warns_with_method_name():
    x, y = models.data()
    model = models.bypassing_train_step_any_backend()
    with pytest.warns(RuntimeWarning, match=r"BypassingJaxTrainStep\.train_step|BypassingTrainStep\.train_step"):
        with li.attach(model) as rec:
            model.fit(x, y, **FIT)
    assert len(rec.history.select(phase="train")) == 0
    # ... and the warning says what can still be seen
    with pytest.warns(RuntimeWarning, match=r"Still visible: eager forward passes model\(x\)"):
        with li.attach(models.bypassing_train_step_any_backend()) as rec_again:
            rec_again.model.fit(x, y, **FIT)
    with li.attach(model) as rec:  # eager calls are still seen
        model(x[:4])
    assert list(rec.history.phases) == ["call"]


def test_small_capacity_sums_overflow_into_residual_then_grows(backend):
    x, y = models.data()
    model = models.nested_shared()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with li.attach(model, capacity=2) as rec:
            model.fit(x, y, **FIT)
            model.fit(x, y, **FIT)
    h = rec.history
    assert_terms_sum_to_total(h)
    if backend == "torch":
        assert "residual" not in h.keys()  # eager steps have no capacity limit
        return
    assert any("capacity" in str(w.message) for w in caught)
    assert "residual" in h.keys()  # first fit: overflow summed into residual
    train = h.select(phase="train")
    assert train.present("activity:vae/shared")[-1]  # second fit: full breakdown
    assert not train.present("residual")[-1]


SAVE_AND_RELOAD = textwrap.dedent(
    """
    import sys, numpy as np, keras
    sys.path.insert(0, {tests!r})
    import models  # registers the custom layer
    model = keras.saving.load_model({path!r})
    assert "loss_inspect" not in sys.modules
    x, _ = models.data()
    np.save({out!r}, np.asarray(model.predict(x, verbose=0)))
    """
)


def _reload_in_fresh_process(path, tmp_path):
    import os

    out = str(tmp_path / "pred.npy")
    code = SAVE_AND_RELOAD.format(tests=os.path.dirname(__file__), path=str(path), out=out)
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy(), timeout=300)
    return np.load(out)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [{}, dict(run_eagerly=True)], ids=str)
def test_model_saves_and_reloads_while_attached_and_after(tmp_path, mode):
    x, y = models.data()
    model = models.mlp(**mode)
    with li.attach(model):
        model.fit(x, y, **FIT)
        model.save(tmp_path / "attached.keras")
        expected = np.asarray(model.predict(x, verbose=0))
    model.save(tmp_path / "detached.keras")
    for name in ("attached.keras", "detached.keras"):
        reloaded = _reload_in_fresh_process(tmp_path / name, tmp_path)
        np.testing.assert_allclose(reloaded, expected, rtol=1e-6)
    reloaded_model = keras.saving.load_model(tmp_path / "attached.keras")
    assert [m.name for m in reloaded_model.metrics] == [m.name for m in model.metrics]


def test_every_keeps_one_train_step_in_n_and_all_eval_records():
    x, y = models.data()
    model = models.mlp()
    with li.attach(model, every=3) as rec:
        model.fit(x, y, validation_data=(x[:32], y[:32]), **FIT)
    h = rec.history
    assert list(h.select(phase="train").steps) == [3, 6]
    assert len(h.select(phase="eval")) == 4
    assert_terms_sum_to_total(h)


def test_nan_raise_stops_fit_naming_term_layer_and_step():
    x, y = models.data()
    model = models.nan_model()
    with pytest.raises(li.NonFiniteLossError) as info:
        with li.attach(model, nan="raise") as rec:
            model.fit(x * 0.01, y, **FIT)
    message = str(info.value)
    assert "'add_loss:nan/bad'" in message and "layer nan/bad" in message
    assert "step 1 (epoch 1, train)" in message  # epochs counted from 1, as Keras prints
    assert info.value.where.key == "add_loss:nan/bad" and info.value.layer == "nan/bad"
    assert info.value.where.epoch == 0
    assert len(rec.history.select(phase="train")) == 1 and not rec.attached
    # the model is intact: Keras wrote the step's state back before the raise
    # (reading a donated JAX array would raise "Array has been deleted")
    assert len(models.weights(model)) == 4
    model.fit(x * 0.01, y, **FIT)  # and still trains


def test_nan_raise_with_validation_is_raised_by_fit_after_validation():
    x, y = models.data()
    model = models.nan_model()
    with pytest.raises(li.NonFiniteLossError):
        with li.attach(model, nan="raise") as rec:
            model.fit(x * 0.01, y, validation_data=(x[:32] * 0.01, y[:32]), **FIT)
    assert list(rec.history.phases) == ["train", "eval", "eval"]
    assert len(models.weights(model)) == 4


def test_nan_raise_outside_fit_keeps_the_model_usable():
    x, y = models.data()
    model = models.nan_model()
    with li.attach(model, nan="raise") as rec:
        with pytest.raises(li.NonFiniteLossError, match="step 1 \\(train\\)"):
            model.train_on_batch(x[:16] * 0.01, y[:16])
        models.weights(model)  # readable
        model.train_on_batch(x[:16] * 0.01, y[:16])  # reported once only
    assert len(rec.history) == 2


def test_nan_warn_warns_once_and_keeps_recording():
    x, y = models.data()
    model = models.nan_model()
    with pytest.warns(RuntimeWarning, match="add_loss:nan/bad") as caught:
        with li.attach(model, nan="warn") as rec:
            model.fit(x * 0.01, y, **FIT)
    assert sum("became" in str(w.message) for w in caught) == 1
    assert len(rec.history.select(phase="train")) == 8


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(every=0), "every must be a positive int"),
        (dict(every="2"), "every must be a positive int"),
        (dict(nan="stop"), "nan must be one of"),
    ],
)
def test_bad_options_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        li.attach(models.plain(), **kwargs)


def test_listeners_see_each_execution_and_a_final_call():
    x, y = models.data()
    model = models.mlp()
    calls = []
    with li.attach(model) as rec:
        rec.add_listener(lambda r, final: calls.append((len(r.history), final)))
        model.fit(x, y, **FIT)
    assert calls[-1] == (8, True)
    assert [n for n, final in calls if not final] == list(range(1, 9))


def test_failing_listener_warns_once_is_removed_and_training_goes_on():
    x, y = models.data()
    model = models.mlp()

    def broken(recorder, final):
        raise ValueError("renderer exploded")

    with pytest.warns(RuntimeWarning, match="renderer exploded") as caught:
        with li.attach(model) as rec:
            rec.add_listener(broken)
            model.fit(x, y, **FIT)
    assert sum("renderer exploded" in str(w.message) for w in caught) == 1
    assert rec._listeners == [] and len(rec.history) == 8


def test_recording_adds_no_warnings_to_a_plain_fit():
    """The per-step read-back must not trip NumPy 2's __array__ deprecation."""
    x, y = models.data()

    def warnings_of(attach):
        model = models.mlp()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if attach:
                with li.attach(model):
                    model.fit(x, y, **FIT)
                    model(x[:4])
                    li.snapshot(model)
            else:
                model.fit(x, y, **FIT)
                model(x[:4])
        return {str(w.message) for w in caught}

    assert warnings_of(True) - warnings_of(False) == set()


# ------------------------------------------- lifetime: detach mid-fit, GC, sharing
class _DetachAt(keras.callbacks.Callback):
    def __init__(self, recorder, batch):
        super().__init__()
        self.recorder, self.batch = recorder, batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            self.recorder.detach()


@pytest.mark.parametrize("fitted_before", [False, True])
def test_detach_inside_fit_stops_recording_and_restores_the_model_when_fit_returns(
        fitted_before):
    """Keras fetches the step function on every batch: detach() from a callback
    must not pull it out from under the running loop (it used to crash fit()
    with 'NoneType' object is not callable on a model never fitted before)."""
    x, y = models.data()
    model = models.mlp()
    if fitted_before:
        model.fit(x, y, **FIT)
    steps_before = int(model.optimizer.iterations) if fitted_before else 0
    rec = li.attach(model)
    logs = model.fit(x, y, validation_data=(x[:32], y[:32]),
                     callbacks=[_DetachAt(rec, batch=2)], **FIT).history
    assert sorted(logs) == ["loss", "val_loss"] and len(logs["loss"]) == 2
    assert not rec.attached and li.recorders() == []
    assert _patched_names(model) == set()
    h = rec.history
    assert list(h.phases) == ["train"] * 3  # steps 1-3 of epoch 1, then nothing
    np.testing.assert_array_equal(h.steps, steps_before + np.arange(1, 4))
    assert_terms_sum_to_total(h)
    model.fit(x, y, **FIT)  # the restored model trains, evaluates and predicts
    model.evaluate(x, y, verbose=0)
    model.predict(x, verbose=0)
    assert len(rec.history) == 3 and _patched_names(model) == set()


def test_detach_inside_evaluate_and_predict_waits_for_them():
    x, y = models.data()
    model = models.mlp()

    class DetachOnBatch(keras.callbacks.Callback):
        def on_test_batch_end(self, batch, logs=None):
            rec.detach()

        on_predict_batch_end = on_test_batch_end

    rec = li.attach(model)
    model.evaluate(x, y, batch_size=16, verbose=0, callbacks=[DetachOnBatch()])
    assert list(rec.history.phases) == ["eval"]
    rec = li.attach(model)
    model.predict(x, batch_size=16, verbose=0, callbacks=[DetachOnBatch()])
    assert _patched_names(model) == set() and li.recorders() == []
    model.fit(x, y, **FIT)


def test_an_attached_model_can_be_garbage_collected():
    """Neither the module's table of recorders nor a detached recorder keeps
    a model alive (li.last() keeps the last %%losses recorder for good)."""
    import gc
    import weakref

    x, y = models.data()
    model = models.mlp()
    li.attach(model)  # the recorder is not kept: the model's hooks hold it
    model.fit(x, y, **FIT)
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None and li.recorders() == []

    model = models.mlp()
    rec = li.attach(model)
    model.fit(x, y, **FIT)
    rec.detach()
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None
    assert rec.model is None and len(rec.history) == 8  # what was recorded stays
    rec.detach()  # still idempotent


def test_attaching_again_with_other_options_is_a_clear_error():
    model = models.mlp()
    with li.attach(model, every=2, nan="warn") as rec:
        assert li.attach(model, every=2, nan="warn") is rec
        with pytest.raises(ValueError) as info:
            li.attach(model)  # defaults: every=1, nan="ignore"
        message = str(info.value)
        assert "already has a recorder attached with every=2, nan='warn'" in message
        assert "not one with every=1, nan='ignore'" in message and "Detach it first" in message
        with pytest.raises(ValueError, match="every must be a positive int"):
            li.attach(model, every=0, nan="warn")  # bad values are still named first
        assert rec.attached


@pytest.mark.parametrize("inner_first", [False, True])
def test_two_recorders_on_models_that_share_layers(inner_first):
    """A submodel (an encoder, a GAN's generator) and the model around it, each
    with its own recorder: detaching one leaves the other's attribution whole."""
    x, y = models.data()
    outer = models.nested_shared()
    inner = outer.get_layer("encoder")
    if inner_first:
        rec_inner, rec_outer = li.attach(inner), li.attach(outer)
    else:
        rec_outer, rec_inner = li.attach(outer), li.attach(inner)
    outer.fit(x, y, **FIT)
    inner(x[:4], training=True)
    assert sorted(rec_inner.history.keys()) == ["activity:encoder/code", "add_loss:encoder/kl"]
    keys = rec_outer.history.keys()
    rec_inner.detach()
    outer.fit(x, y, **FIT)
    assert rec_outer.history.keys() == keys
    assert "add_loss:vae/encoder/kl" in keys and not any("unattributed" in k for k in keys)
    assert_terms_sum_to_total(rec_outer.history)
    rec_outer.detach()
    assert _patched_names(outer) == set()


# ------------------------------------------------------------------ distribution
DISTRIBUTED = {
    # Two logical CPUs must be configured before TensorFlow starts: a fresh process.
    "tensorflow": """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import loss_inspect as li, models
strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
with strategy.scope():
    model = models.mlp()
try:
    li.attach(model)
except NotImplementedError as error:
    print(json.dumps({"refused": str(error)}))
x, y = models.data()
logs = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history  # untouched
print(json.dumps({"trained": logs["loss"]}))
""",
    # Two host devices must be asked for before JAX starts: a fresh process.
    "jax": """
import jax, keras, numpy as np
import loss_inspect as li, models
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
x, y = models.data()
model = models.mlp()
with li.attach(model) as rec:
    logs = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                     validation_data=(x[:32], y[:32])).history
h = rec.history
print(json.dumps({"devices": len(jax.devices()), "keys": h.keys(),
                  "total": h["total"].tolist(),
                  "terms": sum(np.nan_to_num(h[k]) for k in h.keys()).tolist(),
                  "epochs": h.epochs.tolist(), "phases": h.phases.tolist(),
                  "batch": h.batch_sizes.tolist(), "logs": logs}))
""",
}

if BACKEND in DISTRIBUTED:

    def test_distributed_training(tmp_path):
        """TF MirroredStrategy (2 replicas) is refused with a clear error, the model
        left to train as usual; JAX DataParallel (2 devices) is recorded exactly."""
        import json

        # First: XLA stops parsing at a token without dashes (conftest's flags have one).
        flags = "--xla_force_host_platform_device_count=2 " + os.environ.get("XLA_FLAGS", "")
        env = dict(os.environ, XLA_FLAGS=flags.strip())
        code = "import json, os, sys\nsys.path.insert(0, %r)\n" % os.path.dirname(__file__)
        proc = subprocess.run([sys.executable, "-c", code + DISTRIBUTED[BACKEND]], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if BACKEND == "tensorflow":
            refused, trained = out
            assert "with 2 replicas; loss_inspect cannot record that yet" in refused["refused"]
            assert "keras.distribution.DataParallel" in refused["refused"]
            assert np.isfinite(trained["trained"][0])
            return
        (result,) = out
        assert result["devices"] == 2
        np.testing.assert_allclose(result["terms"], result["total"], rtol=1e-6)
        h = {k: np.asarray(result[k]) for k in ("total", "epochs", "phases", "batch")}
        for epoch in (0, 1):
            for phase, key in (("train", "loss"), ("eval", "val_loss")):
                rows = (h["epochs"] == epoch) & (h["phases"] == phase)
                mean = np.average(h["total"][rows], weights=h["batch"][rows])
                np.testing.assert_allclose(mean, result["logs"][key][epoch], rtol=1e-5)


def test_attaching_again_while_an_old_fit_frame_is_alive_retraces_with_the_new_hooks():
    """A stored traceback (IPython's sys.last_traceback after a failed cell)
    keeps an old fit()'s frames, and with them the old jitted step, alive.
    JAX must not hand the next recorder that trace: it wrote rows in the
    layout of a recorder that is gone (IndexError, or worse, wrong keys)."""
    x, y = models.data()
    model = models.mlp()
    kept = []
    with li.attach(model) as rec:
        rec.add_listener(lambda recorder, final: kept.append(sys._getframe()) if not kept else None)
        model.fit(x, y, **FIT)
    first = rec.history.keys()
    with li.attach(model) as rec:
        logs = model.fit(x, y, validation_data=(x[:32], y[:32]), **FIT).history
    assert kept and rec.history.keys() == first
    assert_terms_sum_to_total(rec.history)
    assert_keras_totals(rec.history, logs)
