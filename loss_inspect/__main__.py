"""Command line: ``python -m loss_inspect demo`` trains a small model and prints its breakdown."""

from __future__ import annotations

import argparse
import os
import sys

DEMO_HELP = """\
Train a small Keras model (an MLP with an L2 weight regularizer, an L1 activity
regularizer and an add_loss term) with a loss_inspect recorder attached, then
print the per-term breakdown of the loss, check it against Keras's own `loss`
log, and write the figure of the terms over the steps to loss_breakdown.png.
Runs on the Keras backend named by --backend or KERAS_BACKEND (default jax).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loss_inspect",
        description="loss_inspect: see what a Keras 3 model's loss is made of.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small model and print its loss breakdown",
                          description=DEMO_HELP)
    demo.add_argument("--backend", choices=["jax", "tensorflow", "torch"],
                      help="Keras backend (default: $KERAS_BACKEND, else jax)")
    demo.add_argument("--epochs", type=_positive_int, default=3, help="epochs (default 3)")
    demo.add_argument("--csv", metavar="PATH", help="also write the history to this CSV file")
    demo.add_argument("--png", metavar="PATH", default="loss_breakdown.png",
                      help="where to write the figure (default loss_breakdown.png)")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def run_demo(epochs: int = 3, csv_path: str | None = None, png_path: str | None = None,
             out=sys.stdout) -> int:
    import numpy as np

    import keras
    from keras import layers, ops

    import loss_inspect as li

    class Smoothness(layers.Layer):
        """add_loss: penalise large activations (a stand-in for a KL term)."""

        def call(self, x):
            self.add_loss(0.2 * ops.mean(ops.square(x)))
            return x

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 16)).astype("float32")
    y = (x[:, :1] * 2.0 - x[:, 1:2] + 0.1 * rng.normal(size=(512, 1))).astype("float32")
    inputs = keras.Input((16,))
    h = layers.Dense(32, activation="relu", name="hidden",
                     kernel_regularizer=keras.regularizers.L2(5e-3),
                     activity_regularizer=keras.regularizers.L1(2e-3))(inputs)
    h = Smoothness(name="smooth")(h)
    outputs = layers.Dense(1, name="out")(h)
    model = keras.Model(inputs, outputs, name="demo")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")

    with li.attach(model) as recorder:
        logs = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0,
                         validation_split=0.25).history
    history = recorder.history
    print(f"loss_inspect {li.__version__} | Keras {keras.__version__} | "
          f"backend {keras.backend.backend()}", file=out)
    print(li.breakdown_table(history, phase="train"), file=out)
    _, ours = history.epoch_means(phase="train")
    print("\nper-epoch loss  (Keras)   (sum of the recorded terms)", file=out)
    for epoch, (theirs, mine) in enumerate(zip(logs["loss"], ours)):
        print(f"  epoch {epoch + 1}:      {theirs:.6f}  {mine:.6f}", file=out)
    if csv_path:
        history.to_csv(csv_path)
        print(f"\nwrote {len(history)} records to {csv_path}", file=out)
    if png_path:
        from .plotting import figure_to_png, plot_history

        figure = plot_history(history, phase="all", title="Loss breakdown of 'demo' (train, eval)")
        with open(png_path, "wb") as handle:
            handle.write(figure_to_png(figure))
        print(f"wrote the figure to {png_path}", file=out)
    return 0 if np.allclose(ours, logs["loss"], rtol=1e-6) else 1


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.backend:
        if "keras" in sys.modules:
            print("--backend must be chosen before Keras is imported", file=sys.stderr)
            return 2
        os.environ["KERAS_BACKEND"] = args.backend
    # Keras's own default is TensorFlow; the README installs only JAX.
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return run_demo(epochs=args.epochs, csv_path=args.csv, png_path=args.png)


if __name__ == "__main__":
    sys.exit(main())
