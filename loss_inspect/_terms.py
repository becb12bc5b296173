"""Attribute loss tensors to layers and give each term a stable key.

``model.losses`` is a flat list: each layer's own ``add_loss`` / activity terms,
then one weight-regularization term per regularized variable. Positions change
when a layer adds a term conditionally, so terms are identified by
(kind, layer path, occurrence) instead, and named ``kind:path`` with a ``#n``
suffix for the n-th occurrence in one pass (a shared layer called twice, or a
layer calling ``add_loss`` twice).
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

from .history import Term


class Origin(NamedTuple):
    """Where one term comes from, before it gets a key."""

    kind: str
    path: str | None = None
    output: str | None = None
    weight: float | None = None


class LossRegistry:
    """Origins of the loss tensors added during the current forward pass.

    Keyed by ``id()`` (never by value: comparing JAX tracers raises). Each
    entry holds a weak reference to its tensor where the type allows one
    (torch tensors, JAX arrays: the recorder must not keep an autograd graph
    or a device buffer alive), the tensor itself otherwise (TF tensors,
    tracers); either way a recycled id can never be mistaken for it.
    """

    __slots__ = ("_entries",)

    def __init__(self):
        self._entries: dict[int, tuple[object, Origin]] = {}

    def record(self, tensor, origin: Origin) -> None:
        try:
            ref = weakref.ref(tensor)
        except TypeError:
            ref = _StrongRef(tensor)
        self._entries[id(tensor)] = (ref, origin)

    def lookup(self, tensor) -> Origin | None:
        entry = self._entries.get(id(tensor))
        if entry is not None and entry[0]() is tensor:
            return entry[1]
        return None

    def clear(self) -> None:
        self._entries.clear()

    def update(self, other: "LossRegistry") -> None:
        """Take ``other``'s entries, over any of this one's for the same tensors."""
        self._entries.update(other._entries)

    def __len__(self) -> int:
        return len(self._entries)


class _StrongRef:
    """``weakref.ref``'s interface for objects that cannot be weakly referenced."""

    __slots__ = ("_obj",)

    def __init__(self, obj):
        self._obj = obj

    def __call__(self):
        return self._obj


def attribute_added(losses, registry: LossRegistry, regularizer_paths) -> list[Origin]:
    """Origins of ``model.losses`` entries, in order.

    Tensors in the registry were added by ``add_loss`` (or an activity
    regularizer). The rest are weight-regularization terms, which Keras
    computes afresh on every read and appends last, one per regularized
    variable; they take the regularizer paths from the end.
    """
    origins: list[Origin | None] = [registry.lookup(t) for t in losses]
    loose = [i for i, origin in enumerate(origins) if origin is None]
    paths = list(regularizer_paths)
    matched = min(len(loose), len(paths))
    for i, path in zip(loose[len(loose) - matched:], paths[len(paths) - matched:]):
        origins[i] = Origin("regularizer", path)
    return [origin or Origin("add_loss", None) for origin in origins]


def name_terms(origins: list[Origin]) -> list[Term]:
    """Give each origin a unique key; repeated (kind, path) pairs get ``#2``, ``#3``.

    A single compiled loss is keyed ``compiled``; with several outputs each is
    ``compiled:<output name>``.
    """
    seen: dict[str, int] = {}
    terms = []
    single_compiled = sum(origin.kind == "compiled" for origin in origins) == 1
    for origin in origins:
        if origin.kind == "compiled":
            plain = single_compiled or origin.output is None
            base = "compiled" if plain else f"compiled:{origin.output}"
        elif origin.kind == "residual":
            base = "residual"
        else:
            base = f"{origin.kind}:{origin.path or 'unattributed'}"
        count = seen.get(base, 0) + 1
        seen[base] = count
        key = base if count == 1 else f"{base}#{count}"
        weight = None if origin.weight is None else float(origin.weight)
        terms.append(Term(key, origin.kind, origin.path, origin.output, weight))
    return terms
