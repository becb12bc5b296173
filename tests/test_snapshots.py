"""`li.snapshot`: what model.losses holds, read safely on every backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import loss_inspect as li
import models


def test_snapshot_after_eager_call_matches_model_losses():
    x, _ = models.data()
    model = models.mlp()
    model(x[:8], training=True)
    expected = [float(keras.ops.convert_to_numpy(t)) for t in model.losses]
    snap = li.snapshot(model)
    assert snap.readable and snap.message is None
    np.testing.assert_allclose(snap.values, expected, rtol=1e-6)
    np.testing.assert_allclose(snap.total, sum(expected), rtol=1e-6)
    assert snap.keys() == [
        "activity:mlp/hidden", "add_loss:mlp/extra",
        "regularizer:mlp/hidden/kernel", "regularizer:mlp/out/bias",
    ]
    assert snap["add_loss:mlp/extra"] == pytest.approx(expected[1], rel=1e-6)
    text = str(snap)
    assert "model.losses of 'mlp' (4 terms)" in text and "total" in text


def test_snapshot_while_attached_uses_exact_kinds():
    x, _ = models.data()
    model = models.subclassed()
    with li.attach(model):
        model(x[:8])
        snap = li.snapshot(model)
    assert sorted(snap.keys()) == [
        "add_loss:subclassed", "add_loss:subclassed/twice", "add_loss:subclassed/twice#2",
    ]
    assert snap["add_loss:subclassed/twice#2"] == pytest.approx(
        2 * snap["add_loss:subclassed/twice"], rel=1e-5
    )


def test_snapshot_after_fit_says_what_is_missing_instead_of_raising(backend):
    x, y = models.data()
    model = models.mlp()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    snap = li.snapshot(model)  # must not raise on any backend
    if backend == "torch":
        assert snap.readable  # torch keeps the last batch's (eager) values
        assert len(snap) == 4
        return
    assert not snap.readable
    assert "model(x)" in snap.message and "li.attach(model)" in snap.message
    if backend == "tensorflow":
        assert "graph tensors" in snap.message
        assert np.isnan(snap.values).sum() == 2  # add_loss + activity
    else:
        assert "stateless scope" in snap.message and "mlp/extra" in snap.message
        assert snap.keys() == ["regularizer:mlp/hidden/kernel", "regularizer:mlp/out/bias"]
    model(x[:8])  # the advice works
    assert li.snapshot(model).readable


def test_snapshot_of_model_without_terms_is_empty():
    model = models.plain()
    model(models.data()[0][:4])
    snap = li.snapshot(model)
    assert len(snap) == 0 and snap.total == 0.0 and snap.readable


@pytest.mark.parametrize("bad", [1, "model", keras.layers.Dense(1)])
def test_snapshot_rejects_non_models(bad):
    with pytest.raises(TypeError, match="Expected a Keras 3 model"):
        li.snapshot(bad)
