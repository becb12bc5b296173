"""Small, seeded Keras models covering every way a term reaches the loss.

Every builder seeds Keras first, so building twice gives identical weights;
`train` runs the same fit with and without a recorder for the invariants.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

SEED = 1337


def data(n=64, in_dim=8, out_dim=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, in_dim)).astype("float32")
    y = rng.normal(size=(n, out_dim)).astype("float32")
    return x, y


@keras.saving.register_keras_serializable(package="loss_inspect_tests")
class AddLoss(layers.Layer):
    """Adds ``rate * mean(x**2)`` (``times`` separate calls) and passes x through."""

    def __init__(self, rate=0.01, times=1, only_training=False, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.times = times
        self.only_training = only_training

    def call(self, x, training=None):
        if not self.only_training or training:
            for i in range(self.times):
                self.add_loss((i + 1) * self.rate * ops.mean(ops.square(x)))
        return x

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "times": self.times,
            "only_training": self.only_training,
        }


def compile_default(model, **kwargs):
    kwargs.setdefault("optimizer", keras.optimizers.SGD(0.05))
    kwargs.setdefault("loss", "mse")
    model.compile(**kwargs)
    return model


def mlp(**compile_kwargs):
    """Functional MLP: L2 kernel, L1 activity regularizer and an add_loss layer."""
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8,))
    h = layers.Dense(
        16,
        activation="relu",
        kernel_regularizer=keras.regularizers.L2(1e-2),
        activity_regularizer=keras.regularizers.L1(1e-3),
        name="hidden",
    )(inp)
    h = AddLoss(name="extra")(h)
    out = layers.Dense(1, name="out", bias_regularizer=keras.regularizers.L2(1e-3))(h)
    return compile_default(keras.Model(inp, out, name="mlp"), **compile_kwargs)


def sequential(**compile_kwargs):
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            layers.Dense(8, activation="tanh", kernel_regularizer="l2", name="a"),
            layers.ActivityRegularization(l2=1e-3, name="act"),
            layers.Dense(1, name="b"),
        ],
        name="seq",
    )
    return compile_default(model, **compile_kwargs)


def multi_output(container="dict", loss_weights=None, none_output=False):
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8,))
    h = layers.Dense(8, activation="relu", kernel_regularizer="l2", name="trunk")(inp)
    a = layers.Dense(1, name="head_a")(h)
    b = layers.Dense(1, name="head_b")(h)
    if container == "dict":
        model = keras.Model(inp, {"a": a, "b": b}, name="two_heads")
        loss = {"a": "mse", "b": None if none_output else "mae"}
    else:
        model = keras.Model(inp, [a, b], name="two_heads")
        loss = ["mse", None if none_output else "mae"]
    return compile_default(model, loss=loss, loss_weights=loss_weights)


def multi_output_data(container="dict", n=64):
    x, ya = data(n)
    _, yb = data(n, seed=1)
    return x, ({"a": ya, "b": yb} if container == "dict" else [ya, yb])


class SubclassedWithAddLoss(keras.Model):
    """Model-level add_loss in call(), plus a layer that calls add_loss twice."""

    def __init__(self, **kwargs):
        super().__init__(name="subclassed", **kwargs)
        self.dense = layers.Dense(8, activation="relu", name="dense")
        self.twice = AddLoss(rate=0.02, times=2, name="twice")
        self.head = layers.Dense(1, name="head")

    def call(self, x):
        h = self.twice(self.dense(x))
        self.add_loss(1e-3 * ops.sum(ops.square(h)))
        return self.head(h)


def subclassed():
    keras.utils.set_random_seed(SEED)
    return compile_default(SubclassedWithAddLoss())


def nested_shared():
    """An encoder submodel used inside a bigger model, and a layer shared twice."""
    keras.utils.set_random_seed(SEED)
    enc_in = keras.Input((8,))
    enc_h = layers.Dense(
        4, activity_regularizer=keras.regularizers.L2(1e-2), name="code"
    )(enc_in)
    enc_h = AddLoss(rate=0.05, name="kl")(enc_h)
    encoder = keras.Model(enc_in, enc_h, name="encoder")
    shared = layers.Dense(
        4, activity_regularizer=keras.regularizers.L1(1e-2),
        kernel_regularizer="l2", name="shared",
    )
    inp = keras.Input((8,))
    z = encoder(inp)
    z = shared(shared(z))
    out = layers.Dense(1, name="out")(z)
    return compile_default(keras.Model(inp, out, name="vae"))


def add_loss_only():
    """Compiled with loss=None: the add_loss term is the whole loss."""
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8,))
    h = layers.Dense(4, name="dense")(inp)
    h = AddLoss(rate=1.0, name="only")(h)
    return compile_default(keras.Model(inp, h, name="self_supervised"), loss=None)


def plain(**compile_kwargs):
    """No add_loss, no regularizers: the compiled loss is everything."""
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8,))
    out = layers.Dense(1, name="out")(layers.Dense(4, name="h")(inp))
    return compile_default(keras.Model(inp, out, name="plain"), **compile_kwargs)


def conditional():
    """An add_loss present only when training: eval records lack that term."""
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8,))
    h = layers.Dense(4, kernel_regularizer="l2", name="h")(inp)
    h = AddLoss(rate=0.1, only_training=True, name="train_only")(h)
    return compile_default(keras.Model(inp, layers.Dense(1, name="out")(h), name="cond"))


class ExtraTermModel(keras.Model):
    """Overrides compute_loss and adds its own term, with the training argument."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        return loss + 0.5 * ops.mean(ops.abs(y_pred))


class ExtraTermNoTrainingArg(keras.Model):
    """The pre-Keras-3.3 signature: no ``training`` argument."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        loss = super().compute_loss(x, y, y_pred, sample_weight)
        return loss + 0.25 * ops.mean(ops.abs(y_pred))


def compute_loss_override(with_training_arg=True):
    keras.utils.set_random_seed(SEED)
    cls = ExtraTermModel if with_training_arg else ExtraTermNoTrainingArg
    inp = keras.Input((8,))
    h = layers.Dense(4, kernel_regularizer="l2", name="h")(inp)
    return compile_default(cls(inp, layers.Dense(1, name="out")(h), name="override"))


class BypassingTrainStep(keras.Model):
    """A custom train_step that computes its loss without compute_loss()."""

    def train_step(self, data):
        x, y = data
        if keras.backend.backend() == "torch":
            y_pred = self(x, training=True)
            loss = ops.mean(ops.square(y - y_pred))
            self.zero_grad()
            loss.backward()
            grads = [v.value.grad for v in self.trainable_weights]
            self.optimizer.apply(grads, self.trainable_weights)
            return {"loss": loss}
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = ops.mean(ops.square(y - y_pred))
            grads = tape.gradient(loss, self.trainable_weights)
            self.optimizer.apply(grads, self.trainable_weights)
            return {"loss": loss}
        raise NotImplementedError("JAX needs a stateless train_step; see the JAX test.")


def bypassing_train_step():
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8,))
    model = BypassingTrainStep(inp, layers.Dense(1, name="out")(inp), name="custom_step")
    return compile_default(model, run_eagerly=keras.backend.backend() == "torch")


class NaNTerm(layers.Layer):
    """Adds log(x - threshold): NaN once activations fall below threshold."""

    def call(self, x):
        self.add_loss(ops.mean(ops.log(ops.abs(x) - 0.5)))
        return x


def nan_model():
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8,))
    h = layers.Dense(4, name="h")(inp)
    h = NaNTerm(name="bad")(h)
    return compile_default(keras.Model(inp, layers.Dense(1, name="out")(h), name="nan"))


def weights(model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


class BypassingJaxTrainStep(keras.Model):
    """JAX flavour of a train_step that never calls compute_loss()."""

    def train_step(self, state, data):
        import jax
        import jax.numpy as jnp

        trainable, non_trainable, optimizer_vars, metrics_vars = state
        x, y = data

        def loss_fn(trainable):
            y_pred, new_non_trainable = self.stateless_call(
                trainable, non_trainable, x, training=True
            )
            return jnp.mean(jnp.square(y - y_pred)), new_non_trainable

        (loss, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        trainable, optimizer_vars = self.optimizer.stateless_apply(
            optimizer_vars, grads, trainable
        )
        return {"loss": loss}, (trainable, non_trainable, optimizer_vars, metrics_vars)


def bypassing_train_step_any_backend():
    if keras.backend.backend() != "jax":
        return bypassing_train_step()
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8,))
    model = BypassingJaxTrainStep(inp, layers.Dense(1, name="out")(inp), name="custom_step")
    return compile_default(model)
