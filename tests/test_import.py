"""``import loss_inspect`` stays light: no Keras, backend, matplotlib or widgets."""

import subprocess
import sys

HEAVY = ["keras", "tensorflow", "jax", "torch", "matplotlib", "ipywidgets", "pandas"]


def test_import_loads_no_heavy_dependency():
    code = (
        "import sys, loss_inspect as li\n"
        "li.LossHistory(); li.Term('compiled', 'compiled'); li.recorders()\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_public_names_are_exported():
    import loss_inspect as li

    for name in li.__all__:
        assert getattr(li, name) is not None, name


def test_functions_are_not_shadowed_by_submodules():
    """Importing every submodule must leave li.snapshot / li.attach callable."""
    import importlib
    import pkgutil

    import loss_inspect as li

    for info in pkgutil.iter_modules(li.__path__):
        if info.name != "__main__":
            importlib.import_module(f"loss_inspect.{info.name}")
    for name in ("attach", "snapshot", "recorders", "breakdown_table"):
        assert callable(getattr(li, name)) and not isinstance(getattr(li, name), type(li)), name


def test_bare_import_does_not_even_load_numpy_and_dir_lists_lazy_names():
    code = (
        "import sys, loss_inspect as li\n"
        "print('numpy' in sys.modules, {'LossHistory', 'Recorder', 'Dashboard'} <= set(dir(li)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False True"
