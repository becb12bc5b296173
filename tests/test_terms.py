"""Behaviour of `loss_inspect._terms`: registry, attribution and term naming."""

import gc
import weakref

import numpy as np
import pytest

from loss_inspect._terms import LossRegistry, Origin, attribute_added, name_terms
from loss_inspect.history import Term


class Tensor:
    """Stand-in for a backend tensor: compares by value, weak-referenceable."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tensor) and self.value == other.value

    def __hash__(self):
        return hash(self.value)


class Tracer:
    """Like a JAX tracer: comparing, hashing or truth-testing it raises."""

    def __eq__(self, other):
        raise TypeError("tracer comparison")

    def __hash__(self):
        raise TypeError("tracer hash")

    def __bool__(self):
        raise TypeError("tracer bool")


# ---------------------------------------------------------------- LossRegistry


def test_registry_finds_the_recorded_object():
    reg = LossRegistry()
    t = Tensor(1.0)
    reg.record(t, Origin("add_loss", "m/a"))
    assert reg.lookup(t) == Origin("add_loss", "m/a")


def test_registry_does_not_match_an_equal_valued_distinct_object():
    reg = LossRegistry()
    a, b = Tensor(1.0), Tensor(1.0)
    assert a == b and a is not b
    reg.record(a, Origin("add_loss", "m/a"))
    assert reg.lookup(b) is None
    assert reg.lookup(a) == Origin("add_loss", "m/a")


def test_registry_keeps_distinct_objects_apart():
    reg = LossRegistry()
    tensors = [Tensor(0.0) for _ in range(5)]  # held, so their ids are distinct
    for i, t in enumerate(tensors):
        reg.record(t, Origin("activity", f"layer{i}"))
    assert len(reg) == 5
    assert [reg.lookup(t).path for t in tensors] == [f"layer{i}" for i in range(5)]


def test_registry_entry_under_a_recycled_id_does_not_match_another_object():
    # An entry stored under id(b) but pointing at a different object (what a
    # recycled id would look like) must not be returned for b.
    reg = LossRegistry()
    a, b = Tensor(1.0), Tensor(1.0)
    reg._entries[id(b)] = (weakref.ref(a), Origin("add_loss", "stale"))
    assert reg.lookup(b) is None


def test_registry_does_not_keep_recorded_tensors_alive():
    """A torch loss tensor carries its autograd graph: the registry must not
    keep it (Keras's own ``layer.losses`` decides how long it lives)."""
    reg = LossRegistry()
    t = Tensor(2.0)
    ref = weakref.ref(t)
    reg.record(t, Origin("add_loss", "m/a"))
    assert reg.lookup(t) == Origin("add_loss", "m/a")
    del t
    gc.collect()
    assert ref() is None


def test_registry_holds_objects_without_weak_references_itself():
    reg = LossRegistry()
    value = 3.25  # a float cannot be weakly referenced
    reg.record(value, Origin("add_loss", "m/a"))
    assert reg.lookup(value) == Origin("add_loss", "m/a")


def test_registry_clear_forgets_and_releases_objects():
    reg = LossRegistry()
    t = Tensor(2.0)
    ref = weakref.ref(t)
    reg.record(t, Origin("add_loss", "m/a"))
    reg.clear()
    assert len(reg) == 0
    assert reg.lookup(t) is None
    del t
    gc.collect()
    assert ref() is None


def test_registry_never_compares_or_hashes_tensors():
    reg = LossRegistry()
    t1, t2 = Tracer(), Tracer()
    reg.record(t1, Origin("add_loss", "jit/a"))
    assert reg.lookup(t1) == Origin("add_loss", "jit/a")
    assert reg.lookup(t2) is None


def test_registry_recording_same_object_twice_keeps_latest_origin():
    reg = LossRegistry()
    t = Tensor(1.0)
    reg.record(t, Origin("add_loss", "first"))
    reg.record(t, Origin("activity", "second"))
    assert len(reg) == 1
    assert reg.lookup(t) == Origin("activity", "second")


# ---------------------------------------------------------------- attribute_added


def test_attribute_added_returns_registry_origins_in_order():
    reg = LossRegistry()
    a, b = Tensor(1.0), Tensor(1.0)
    reg.record(a, Origin("add_loss", "m/a"))
    reg.record(b, Origin("activity", "m/b"))
    assert attribute_added([b, a], reg, []) == [
        Origin("activity", "m/b"),
        Origin("add_loss", "m/a"),
    ]


def test_attribute_added_trailing_unattributed_become_regularizers():
    reg = LossRegistry()
    a, r1, r2 = Tensor(1.0), Tensor(1.0), Tensor(1.0)
    reg.record(a, Origin("add_loss", "m/a"))
    origins = attribute_added([a, r1, r2], reg, ["d1/kernel", "d2/kernel"])
    assert origins == [
        Origin("add_loss", "m/a"),
        Origin("regularizer", "d1/kernel"),
        Origin("regularizer", "d2/kernel"),
    ]


def test_attribute_added_extra_unattributed_become_add_loss_without_path():
    reg = LossRegistry()
    u1, u2, a, r = Tensor(0.0), Tensor(0.0), Tensor(0.0), Tensor(0.0)
    reg.record(a, Origin("add_loss", "m/a"))
    origins = attribute_added([u1, u2, a, r], reg, ["d/kernel"])
    assert origins == [
        Origin("add_loss", None),
        Origin("add_loss", None),
        Origin("add_loss", "m/a"),
        Origin("regularizer", "d/kernel"),
    ]


def test_attribute_added_takes_regularizer_paths_from_the_end():
    reg = LossRegistry()
    a, r = Tensor(0.0), Tensor(0.0)
    reg.record(a, Origin("add_loss", "m/a"))
    origins = attribute_added([a, r], reg, ["d1/kernel", "d2/kernel", "d3/kernel"])
    assert origins == [Origin("add_loss", "m/a"), Origin("regularizer", "d3/kernel")]


def test_attribute_added_without_registry_hits_all_regularizers():
    losses = [Tensor(0.0), Tensor(0.0)]
    origins = attribute_added(losses, LossRegistry(), iter(["a/kernel", "b/bias"]))
    assert origins == [Origin("regularizer", "a/kernel"), Origin("regularizer", "b/bias")]


def test_attribute_added_without_paths_makes_unattributed_add_loss():
    origins = attribute_added([Tensor(0.0)], LossRegistry(), [])
    assert origins == [Origin("add_loss", None)]


def test_attribute_added_equal_valued_copy_is_not_attributed():
    reg = LossRegistry()
    a, copy = Tensor(3.0), Tensor(3.0)
    reg.record(a, Origin("activity", "m/act"))
    assert attribute_added([copy], reg, []) == [Origin("add_loss", None)]


def test_attribute_added_of_no_losses_is_empty():
    assert attribute_added([], LossRegistry(), ["d/kernel"]) == []


# ---------------------------------------------------------------- name_terms


def test_single_compiled_term_is_keyed_compiled():
    terms = name_terms([Origin("compiled", output="out", weight=1.0)])
    assert terms == [Term("compiled", "compiled", None, "out", 1.0)]


def test_several_compiled_terms_are_keyed_by_output():
    terms = name_terms([
        Origin("compiled", output="out_a", weight=0.5),
        Origin("compiled", output="out_b", weight=2),
    ])
    assert [t.key for t in terms] == ["compiled:out_a", "compiled:out_b"]
    assert [t.output for t in terms] == ["out_a", "out_b"]
    assert [t.weight for t in terms] == [0.5, 2.0]


def test_compiled_weight_is_converted_to_python_float():
    (term,) = name_terms([Origin("compiled", weight=np.float32(0.25))])
    assert type(term.weight) is float
    assert term.weight == 0.25


def test_missing_weight_stays_none():
    (term,) = name_terms([Origin("add_loss", "m/a")])
    assert term.weight is None


def test_repeated_origins_get_numbered_suffixes():
    terms = name_terms([
        Origin("add_loss", "shared/dense"),
        Origin("add_loss", "shared/dense"),
        Origin("activity", "shared/dense"),
        Origin("add_loss", "shared/dense"),
    ])
    assert [t.key for t in terms] == [
        "add_loss:shared/dense",
        "add_loss:shared/dense#2",
        "activity:shared/dense",
        "add_loss:shared/dense#3",
    ]
    assert all(t.layer == "shared/dense" for t in terms)


def test_repeated_compiled_outputs_get_numbered_suffixes():
    terms = name_terms([
        Origin("compiled", output="out"),
        Origin("compiled", output="out"),
    ])
    assert [t.key for t in terms] == ["compiled:out", "compiled:out#2"]


def test_kind_and_path_form_the_key():
    terms = name_terms([
        Origin("activity", "enc/dense"),
        Origin("regularizer", "enc/dense/kernel"),
    ])
    assert terms == [
        Term("activity:enc/dense", "activity", "enc/dense"),
        Term("regularizer:enc/dense/kernel", "regularizer", "enc/dense/kernel"),
    ]


def test_residual_is_keyed_residual():
    terms = name_terms([Origin("compiled"), Origin("residual")])
    assert terms == [Term("compiled", "compiled"), Term("residual", "residual")]


def test_unattributed_path_is_named_unattributed():
    terms = name_terms([Origin("add_loss", None), Origin("add_loss", None)])
    assert [t.key for t in terms] == ["add_loss:unattributed", "add_loss:unattributed#2"]
    assert [t.layer for t in terms] == [None, None]


def test_name_terms_keys_are_unique_and_order_preserved():
    origins = [
        Origin("compiled", output="y1"),
        Origin("add_loss", "a"),
        Origin("compiled", output="y2"),
        Origin("add_loss", "a"),
        Origin("regularizer", "a/kernel"),
        Origin("residual"),
    ]
    terms = name_terms(origins)
    keys = [t.key for t in terms]
    assert keys == ["compiled:y1", "add_loss:a", "compiled:y2", "add_loss:a#2",
                    "regularizer:a/kernel", "residual"]
    assert [t.kind for t in terms] == [o.kind for o in origins]


def test_name_terms_of_nothing_is_empty():
    assert name_terms([]) == []


def test_name_terms_rejects_unknown_kind_via_term():
    with pytest.raises(ValueError, match="kind must be one of"):
        name_terms([Origin("bogus", "x")])
