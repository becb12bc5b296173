"""Command line: ``python -m loss_inspect demo`` trains a small model and prints its breakdown."""

from __future__ import annotations

import argparse
import os
import sys

DEMO_HELP = """\
Train the quickstart model of notebooks/01_quickstart (an MLP with an L2 weight
regularizer, an L1 activity regularizer and an add_loss term) with a loss_inspect
recorder attached, then
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
    demo.add_argument("--epochs", type=_positive_int, default=5, help="epochs (default 5)")
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


def run_demo(epochs: int = 5, csv_path: str | None = None, png_path: str | None = None,
             out=sys.stdout) -> int:
    """Train notebooks/01_quickstart's model and data with a recorder attached."""
    import numpy as np

    import keras
    from keras import layers, ops

    import loss_inspect as li

    class Smooth(layers.Layer):
        """Passes its input through and adds a small penalty on its size."""

        def __init__(self, rate=0.05, **kwargs):
            super().__init__(**kwargs)
            self.rate = rate

        def call(self, h):
            self.add_loss(self.rate * ops.mean(ops.square(h)))
            return h

    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]])
         + 0.1 * rng.normal(size=(256, 1))).astype("float32")
    inputs = keras.Input(shape=(4,))
    h = layers.Dense(16, activation="relu", name="hidden",
                     kernel_regularizer=keras.regularizers.L2(1e-2),
                     activity_regularizer=keras.regularizers.L1(1e-2))(inputs)
    h = Smooth(name="smooth")(h)
    outputs = layers.Dense(1, name="out")(h)
    model = keras.Model(inputs, outputs, name="demo")
    model.compile(optimizer=keras.optimizers.Adam(0.03), loss="mse")

    with li.attach(model) as recorder:
        logs = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0,
                         validation_split=0.2).history
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
        print(f"\nwrote {history.records} records to {csv_path}", file=out)
    if png_path:
        from .plotting import figure_to_png, plot_history

        figure = plot_history(history, phase="all", logy=True,
                              title="Loss breakdown of 'demo' (train, eval; log scale)")
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
