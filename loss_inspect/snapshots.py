"""`snapshot`: the attributed terms of ``model.losses`` right now.

``model.losses`` is only a reliable snapshot after an *eager* forward pass:
after ``fit()`` TensorFlow leaves graph tensors there and JAX keeps only the
weight regularizers. `snapshot` reads what can be read and says plainly what
cannot, and how to get it, instead of raising from inside Keras.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from . import _keras_internals as internals
from ._terms import LossRegistry, Origin, attribute_added, name_terms
from .history import Term

__all__ = ["Snapshot", "snapshot"]

_UNREADABLE_GRAPH = (
    "{n} of the {total} terms in model.losses are graph tensors left by a traced "
    "step (tf.function), so their values cannot be read. Run an eager forward "
    "pass first (model(x) or model(x, training=True)), or attach a recorder "
    "before training (li.attach(model)) to get the values of every step."
)
_LOST_IN_SCOPE = (
    "The add_loss / activity terms of the last traced step ({layers}) were "
    "collected inside JAX's stateless scope and are gone; model.losses now holds "
    "only weight-regularization terms. Run an eager forward pass (model(x)) to "
    "see them, or attach a recorder before training (li.attach(model)) to get "
    "the values of every step."
)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The terms of ``model.losses`` at one moment, with their values.

    Attributes:
        model_name: name of the model.
        terms: one `Term` per entry of ``model.losses``.
        values: float64 array aligned with ``terms``; NaN where unreadable.
        readable: False when some term could not be read (see ``message``).
        message: what could not be read and what to do, or None.
        backend: Keras backend name.
        keras_version: Keras version string.
    """

    model_name: str
    terms: tuple[Term, ...]
    values: np.ndarray
    readable: bool
    message: str | None
    backend: str
    keras_version: str

    @property
    def total(self) -> float:
        """Sum of the terms (what ``sum(model.losses)`` adds to the loss)."""
        if not self.readable:
            return math.nan
        return float(np.sum(self.values)) if len(self.values) else 0.0

    def keys(self) -> list[str]:
        return [t.key for t in self.terms]

    def __getitem__(self, key: str) -> float:
        if key == "total":
            return self.total
        for term, value in zip(self.terms, self.values):
            if term.key == key:
                return float(value)
        raise KeyError(f"No term {key!r} in this snapshot. Known keys: {self.keys()}.")

    def __len__(self) -> int:
        return len(self.terms)

    def to_dict(self) -> dict[str, float]:
        out = {t.key: float(v) for t, v in zip(self.terms, self.values)}
        out["total"] = self.total
        return out

    def __str__(self) -> str:
        from ._text import snapshot_table

        return snapshot_table(self)

    def __repr__(self) -> str:
        return (
            f"<loss_inspect.Snapshot model={self.model_name!r}: {len(self)} terms, "
            f"total={self.total:.6g}{'' if self.readable else ', incomplete'}>"
        )

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self) if cycle else str(self))

    def _repr_html_(self) -> str:
        from ._html import snapshot_html

        return snapshot_html(self)


def snapshot(model) -> Snapshot:
    """The attributed terms of ``model.losses`` from the last eager forward pass.

    Raises:
        TypeError: ``model`` is not a Keras 3 model.
    """
    problem = internals.describe_non_model(model)
    if problem is not None:
        raise TypeError(problem)
    from .recorder import recorder_for

    tree = internals.layer_tree(model)
    regularizer_paths = [p for _, p in internals.regularized_variables(model, tree)]
    registry = _registry_from_layers(tree)
    recorder = recorder_for(model)
    if recorder is not None:
        # What the recorder saw added is exact (activity vs add_loss); a pass
        # made before it attached is known from the layers only.
        registry.update(recorder._registry)

    losses = list(model.losses)
    origins = attribute_added(losses, registry, regularizer_paths)
    readable = [internals.is_concrete(t) for t in losses]
    values = np.array(
        [_value(t) if ok else math.nan for t, ok in zip(losses, readable)], dtype=np.float64
    )
    messages = []
    if not all(readable):
        messages.append(
            _UNREADABLE_GRAPH.format(n=readable.count(False), total=len(losses))
        )
    lost = [path for layer, path in tree if internals.had_stateless_losses(layer)]
    if lost:
        messages.append(_LOST_IN_SCOPE.format(layers=", ".join(lost)))
    import keras

    return Snapshot(
        model_name=model.name,
        terms=tuple(name_terms(origins)),
        values=values,
        readable=all(readable) and not lost,
        message=" ".join(messages) or None,
        backend=internals.backend(),
        keras_version=keras.__version__,
    )


def _registry_from_layers(tree) -> LossRegistry:
    """Origins from each layer's eager loss list (no recorder saw the pass).

    Without a recorder, an activity term cannot be told from an ``add_loss``
    term by Keras's data alone; terms of Keras's own layers that have an
    activity regularizer are labelled ``activity`` (they add nothing else).
    """
    registry = LossRegistry()
    for layer, path in tree:
        builtin = type(layer).__module__.startswith("keras.")
        kind = "activity" if builtin and getattr(layer, "activity_regularizer", None) else "add_loss"
        for tensor in internals.own_eager_losses(layer):
            registry.record(tensor, Origin(kind, path))
    return registry


def _value(tensor) -> float:
    from ._capture import to_numpy

    return float(np.sum(to_numpy(tensor).astype(np.float64)))
