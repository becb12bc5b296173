"""Per-layer ``add_loss`` hooks that tell the recorder who added which tensor.

A layer can belong to two recorded models at once (a generator inside a GAN,
each with its own recorder), so hooks stack: each recorder shadows the
layer's ``add_loss`` with an `AddLossHook` whose ``original`` is whatever was
there before (the class method or another recorder's hook). The outermost
hook decides once whether Keras's ``Layer.__call__`` made the call (an
activity regularizer) and notes the tensor in every hook of the chain.
Removing a hook restores the layer if it is on top, or splices it out of the
chain if another recorder stacked on it later, so detaching one recorder
never disturbs the other.
"""

from __future__ import annotations

from . import _keras_internals as internals
from ._capture import flat_tensors
from ._terms import LossRegistry, Origin

__all__ = ["AddLossHook", "install", "remove"]


class AddLossHook:
    """Stands in for ``layer.add_loss`` while a recorder is attached."""

    __slots__ = ("original", "previous", "registry", "activity", "added")

    def __init__(self, original, previous, registry: LossRegistry, path: str):
        self.original = original  # called to add the loss (class method or a hook)
        self.previous = previous  # the instance attribute to restore (None: none)
        self.registry = registry
        self.activity = Origin("activity", path)
        self.added = Origin("add_loss", path)

    def __call__(self, loss):
        from_layer_call = internals.called_from_layer_call()
        hooks = [self]
        while isinstance(hooks[-1].original, AddLossHook):
            hooks.append(hooks[-1].original)
        result = hooks[-1].original(loss)
        tensors = flat_tensors(loss)
        for hook in hooks:
            origin = hook.activity if from_layer_call else hook.added
            for tensor in tensors:
                hook.registry.record(tensor, origin)
        return result


def install(layer, registry: LossRegistry, path: str) -> AddLossHook:
    """Shadow ``layer.add_loss`` with a hook noting into ``registry``."""
    hook = AddLossHook(layer.add_loss, internals.instance_attr(layer, "add_loss"),
                       registry, path)
    internals.set_instance_attr(layer, "add_loss", hook)
    return hook


def remove(layer, hook: AddLossHook) -> None:
    """Take ``hook`` off ``layer``, leaving any other recorder's hook in place."""
    current = internals.instance_attr(layer, "add_loss")
    if current is hook:
        if hook.previous is None:
            internals.del_instance_attr(layer, "add_loss")
        else:
            internals.set_instance_attr(layer, "add_loss", hook.previous)
        return
    node = current
    while isinstance(node, AddLossHook):
        if node.original is hook:  # another recorder stacked on this one
            node.original, node.previous = hook.original, hook.previous
            return
        node = node.original
