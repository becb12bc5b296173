"""Fit one model in this fresh process and save what invariant 3 compares.

Un-jitted JAX results depend on what the process compiled before (a plain
jit_compile=False fit gives different bits after a jitted one, without any
recorder), so for those modes the plain and the recorded fit each run here,
in a process of their own.

    python tests/fresh_fit.py BUILDER '{"jit_compile": false}' '{"epochs": 2}' N_SAMPLES attach|plain OUT.npz
"""

import json
import os
import sys

# The environment (backend, XLA flags, CPU affinity) is inherited from the
# pytest process that starts this script.
sys.path.insert(0, os.path.dirname(__file__))
import numpy as np  # noqa: E402

import models  # noqa: E402


def main(builder, compile_json, fit_json, n, mode, out):
    import loss_inspect as li

    x, y = models.data(int(n))
    model = getattr(models, builder)(**json.loads(compile_json))
    fit = json.loads(fit_json)
    if "validation_samples" in fit:
        k = fit.pop("validation_samples")
        fit["validation_data"] = (x[:k], y[:k])
    if mode == "attach":
        with li.attach(model):
            history = model.fit(x, y, **fit).history
    else:
        history = model.fit(x, y, **fit).history
    weights = {f"w{i}": w for i, w in enumerate(models.weights(model))}
    np.savez(out, history=json.dumps(history), **weights)


if __name__ == "__main__":
    main(*sys.argv[1:])
