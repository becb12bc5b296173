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


# ---------------------------------------------------------------------------
# Unusual inputs (tests/test_recorder_inputs.py, docs/fault-matrix.md)


def no_loss():
    """Compiled with loss=None and nothing added: there is no loss at all."""
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8,))
    out = layers.Dense(1, name="out")(inp)
    return compile_default(keras.Model(inp, out, name="no_loss"), loss=None)


class AddLossVariant(layers.Layer):
    """Calls add_loss with something other than one float scalar tensor.

    ``list``: ``add_loss([t1, t2])``; ``nonscalar``: a (batch, units) tensor,
    which Keras sums; ``int``: an int32 tensor, which Keras casts to floatx.
    """

    def __init__(self, variant="list", **kwargs):
        super().__init__(**kwargs)
        self.variant = variant

    def call(self, x):
        if self.variant == "list":
            self.add_loss([0.1 * ops.mean(ops.square(x)), 0.2 * ops.mean(ops.abs(x))])
        elif self.variant == "nonscalar":
            self.add_loss(0.01 * ops.square(x))
        elif self.variant == "int":
            self.add_loss(ops.cast(ops.sum(ops.abs(x)), "int32"))
        else:
            raise ValueError(f"unknown variant {self.variant!r}")
        return x


def add_loss_variant(variant):
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8,))
    h = layers.Dense(4, name="dense")(inp)
    h = AddLossVariant(variant, name="variant")(h)
    return compile_default(keras.Model(inp, layers.Dense(1, name="out")(h), name="variants"))


class AddsANumber(keras.Model):
    """Subclassed (no symbolic build), so add_loss(number) is reached at run time."""

    def __init__(self, number, **kwargs):
        super().__init__(name="adds_a_number", **kwargs)
        self.number = number
        self.dense = layers.Dense(1, name="dense")

    def call(self, x):
        self.add_loss(self.number)
        return self.dense(x)


def adds_a_number(number):
    keras.utils.set_random_seed(SEED)
    return compile_default(AddsANumber(number))


def nested_used_twice():
    """A submodel (activity, kernel regularizer, add_loss) applied twice in one pass."""
    keras.utils.set_random_seed(SEED)
    enc_in = keras.Input((8,))
    h = layers.Dense(
        8, activity_regularizer=keras.regularizers.L2(1e-2), kernel_regularizer="l2",
        name="code",
    )(enc_in)
    encoder = keras.Model(enc_in, AddLoss(rate=0.05, name="kl")(h), name="enc")
    inp = keras.Input((8,))
    z = encoder(encoder(inp))
    return compile_default(keras.Model(inp, layers.Dense(1, name="out")(z), name="outer"))


class SameLayerTwoAttributes(keras.Model):
    """One Dense layer reachable as ``self.first`` and ``self.second``, applied twice."""

    def __init__(self, **kwargs):
        super().__init__(name="two_attrs", **kwargs)
        shared = layers.Dense(
            8, activity_regularizer=keras.regularizers.L1(1e-2), kernel_regularizer="l2",
            name="shared",
        )
        self.first = shared
        self.second = shared
        self.penalty = AddLoss(rate=0.1, name="penalty")
        self.head = layers.Dense(1, name="head")

    def call(self, x):
        return self.head(self.penalty(self.second(self.first(x))))


def same_layer_two_attributes(built=True):
    keras.utils.set_random_seed(SEED)
    model = compile_default(SameLayerTwoAttributes())
    if built:
        model(np.zeros((1, 8), "float32"))
    return model


class ShapedAddLoss(AddLoss):
    """AddLoss with a compute_output_shape, as TimeDistributed needs one."""

    def compute_output_shape(self, input_shape):
        return input_shape


def time_distributed_twice(jit_compile="auto"):
    """TimeDistributed(add_loss layer) applied to two (batch, 3, 8) inputs."""
    keras.utils.set_random_seed(SEED)
    a, b = keras.Input((3, 8), name="a"), keras.Input((3, 8), name="b")
    td = layers.TimeDistributed(ShapedAddLoss(rate=0.1, name="inner"), name="td")
    h = layers.Concatenate(name="cat")([td(a), td(b)])
    out = layers.Dense(1, name="out")(layers.Flatten(name="flat")(h))
    return compile_default(keras.Model([a, b], out, name="tdm"), jit_compile=jit_compile)


class Toggle(layers.Layer):
    """One add_loss always; a second one while ``extra`` is True."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.extra = False

    def call(self, x):
        self.add_loss(0.01 * ops.mean(ops.square(x)))
        if self.extra:
            self.add_loss(0.1 * ops.mean(ops.abs(x)))
        return x


def toggled():
    """A model and its Toggle layer (flip ``layer.extra`` between fits)."""
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8,))
    toggle = Toggle(name="toggle")
    h = toggle(layers.Dense(4, name="dense")(inp))
    return compile_default(keras.Model(inp, layers.Dense(1, name="out")(h), name="toggled")), toggle


def aux_loss(y_true, y_pred):
    """A metric function whose name ends in _loss."""
    return ops.mean(ops.abs(y_true - y_pred))


def multi_output_loss_named_metrics():
    """Two weighted outputs with metrics named ``aux_loss``, ``something_loss``, ``b_loss``."""
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8,))
    h = layers.Dense(8, activation="relu", kernel_regularizer="l2", name="trunk")(inp)
    a, b = layers.Dense(1, name="head_a")(h), layers.Dense(1, name="head_b")(h)
    model = keras.Model(inp, {"a": a, "b": b}, name="named")
    return compile_default(
        model,
        loss={"a": "mse", "b": "mae"},
        loss_weights={"a": 1.0, "b": 0.3},
        metrics={
            "a": [aux_loss, keras.metrics.MeanAbsoluteError(name="something_loss")],
            "b": [keras.metrics.MeanSquaredError(name="b_loss")],
        },
    )


class Split(layers.Layer):
    """Two outputs, the first 4 and the last 4 features of its input, as they are."""

    def call(self, x):
        return x[:, :4], x[:, 4:]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 4), (input_shape[0], input_shape[1] - 4)


def multi_output_activity(rate=0.05):
    """An L2 activity regularizer on a layer with two outputs (``rate * sum(out**2) / batch``)."""
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8,))
    a, b = Split(activity_regularizer=keras.regularizers.L2(rate), name="split")(inp)
    h = layers.Concatenate(name="cat")([a, b])
    return compile_default(keras.Model(inp, layers.Dense(1, name="out")(h), name="split_act"))


def rnn(cell="LSTM"):
    """An RNN layer (SimpleRNN / LSTM / GRU) with an L1 activity and an L2 kernel
    regularizer, on 3 timesteps (unrolled: JAX compiles a scan far slower)."""
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((3, 8))
    h = getattr(layers, cell)(
        6, activity_regularizer=keras.regularizers.L1(1e-2), kernel_regularizer="l2",
        unroll=True, name="rnn",
    )(inp)
    return compile_default(keras.Model(inp, layers.Dense(1, name="out")(h), name="recurrent"))


def many_regularized(n):
    """``n`` stacked Dense(4) layers ``d000``, ``d001``, ... each with an L2 kernel regularizer."""
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((4,))
    h = inp
    for i in range(n):
        h = layers.Dense(4, kernel_regularizer=keras.regularizers.L2(1e-4), name=f"d{i:03d}")(h)
    return compile_default(keras.Model(inp, layers.Dense(1, name="out")(h), name="deep"))


class Float32Penalty(layers.Layer):
    """add_loss in float32 whatever the layer's compute dtype (mixed precision)."""

    def call(self, x):
        self.add_loss(0.01 * ops.mean(ops.square(ops.cast(x, "float32"))))
        return x


def float32_added_terms(**compile_kwargs):
    """Every added term in float32 under mixed_float16: an add_loss cast to
    float32 and weight regularizers (variables stay float32); no activity term."""
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8,))
    h = layers.Dense(16, activation="relu", kernel_regularizer="l2", name="hidden")(inp)
    h = Float32Penalty(name="penalty")(h)
    out = layers.Dense(1, name="out", bias_regularizer=keras.regularizers.L2(1e-3))(h)
    return compile_default(keras.Model(inp, out, name="f32_terms"), **compile_kwargs)
