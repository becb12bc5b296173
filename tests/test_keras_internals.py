"""The private Keras surface loss_inspect relies on exists in the installed Keras.

When a Keras release moves one of these, this file fails first and names it.
"""

from __future__ import annotations

import inspect

import keras
import pytest

from loss_inspect import _keras_internals as internals
import models


def test_installed_keras_is_supported():
    assert internals.keras_version()[:2] >= internals.MIN_KERAS
    assert internals.keras_version()[:2] in internals.TESTED_KERAS
    internals.check_version()  # no warning, no error (warnings are errors here)


def test_private_attributes_used_exist():
    model = models.mlp()
    x, y = models.data(16)
    model.fit(x, y, verbose=0)
    assert isinstance(model._layers, list) and isinstance(model._metrics, list)
    assert callable(model._aggregate_additional_loss)
    assert callable(model._compile_loss.call) and callable(model._compile_loss.build)
    entry = model._compile_loss._flat_losses[0]
    assert {"path", "loss", "loss_weights", "name"} <= set(entry._fields)
    layer = model.get_layer("hidden")
    assert isinstance(layer._trainable_variables, list)
    assert hasattr(layer, "_losses") and hasattr(layer, "_loss_ids")
    for name in ("train_function", "test_function", "predict_function"):
        assert hasattr(model, name)
    assert "training" in inspect.signature(keras.Model.compute_loss).parameters
    assert internals.raw_value(layer.kernel) is not None
    assert isinstance(keras.callbacks.CallbackList([])._async_train, bool)


def test_batch_end_dispatch_mode_and_who_waits_for_each_step(backend):
    """Keras hands batch ends to a thread pool on JAX and torch unless a
    callback with a batch-end hook is not async-safe (TerminateOnNaN here);
    only JAX's row write depends on it."""
    jax = backend == "jax"
    nan_stop = [keras.callbacks.TerminateOnNaN()]
    assert internals.batch_ends_async([keras.callbacks.History()]) == (backend != "tensorflow")
    assert not internals.batch_ends_async(nan_stop)
    assert internals.batch_ends_async(keras.callbacks.CallbackList([])) == (backend != "tensorflow")
    assert internals.waits_for_each_train_step("fit", nan_stop) == jax
    assert not internals.waits_for_each_train_step("fit", [])
    assert internals.waits_for_each_train_step("train_on_batch") == jax
    assert not internals.waits_for_each_train_step("evaluate", nan_stop)


def test_jax_restore_state_writes_a_step_input_back():
    """Only JAX's trainer donates state (and only there is a Ctrl-C held)."""
    model = models.mlp()
    if keras.backend.backend() != "jax":
        import loss_inspect as li

        with li.attach(model) as rec:
            assert rec._interrupts is None  # no SIGINT handling off JAX
        return
    import jax.numpy as jnp

    x, y = models.data(16)
    model.fit(x, y, verbose=0)
    assert callable(model.jax_state_sync) and hasattr(model, "_jax_state_synced")
    state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                 optimizer_variables=True, metrics_variables=True,
                                 purge_model_variables=True)
    assert internals.raw_value(model.trainable_variables[0]) is None  # purged, as in fit()
    state = ([jnp.zeros_like(v) for v in state[0]], *state[1:])
    assert internals.jax_restore_state(model, "train", (state, iter(())))
    assert all(float(jnp.abs(v.value).sum()) == 0 for v in model.trainable_variables)
    assert internals.jax_restore_state(model, "train", ("not a state",)) is False


def test_activity_terms_are_added_from_layer_call():
    seen = []
    layer = keras.layers.Dense(2, activity_regularizer="l1")
    original = layer.add_loss

    def spy(loss):
        seen.append(internals.called_from_layer_call())
        return original(loss)

    internals.set_instance_attr(layer, "add_loss", spy)
    layer(keras.ops.ones((3, 4)))
    internals.del_instance_attr(layer, "add_loss")
    assert seen == [True]
    assert "add_loss" not in layer.__dict__


def test_layer_tree_paths_are_qualified_and_shared_layers_named_once():
    model = models.nested_shared()
    paths = [path for _, path in internals.layer_tree(model)]
    assert paths[0] == "vae"
    assert "vae/encoder/kl" in paths and "vae/encoder/code" in paths
    assert paths.count("vae/shared") == 1


def test_regularized_variables_follow_model_losses_order():
    model = models.mlp()
    tree = internals.layer_tree(model)
    got = [p for _, p in internals.regularized_variables(model, tree)]
    assert got == ["mlp/hidden/kernel", "mlp/out/bias"]
    assert len(got) == len(model._get_regularization_losses())


@pytest.mark.parametrize(
    "name,expected", [("compute_loss", True), ("train_step", False), ("call", False)]
)
def test_is_overridden(name, expected):
    model = models.compute_loss_override()
    assert internals.is_overridden(model, name) is expected


def test_no_other_module_touches_keras_internals_or_names_a_backend():
    """The code-shape rule: per-backend quirks and private Keras attributes
    live in `_keras_internals` only (the CLI's --backend choice excepted)."""
    import pathlib
    import re

    package = pathlib.Path(internals.__file__).parent
    rules = {
        "imports a backend": re.compile(r"^\s*(import|from)\s+(tensorflow|jax|jaxlib|torch)\b", re.M),
        "compares the backend's name": re.compile(r"backend\(\)\s*[!=]="),
        "reads a private Keras attribute": re.compile(
            r"\b(model|layer|optimizer|compile_loss|variable|trainer)\._[a-z]\w*"),
        "imports keras.src": re.compile(r"keras\.src\b"),
    }
    found = []
    for path in sorted(package.glob("*.py")):
        if path.name == "_keras_internals.py":
            continue
        text = path.read_text(encoding="utf-8")
        for what, pattern in rules.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.name}:{line} {what}: {match.group(0)!r}")
    assert found == []
