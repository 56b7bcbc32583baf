"""Import a third-party package without running the modules it imports but never uses.

torchmetrics' package ``__init__`` runs ``import scipy.signal`` whenever SciPy is
installed, only to alias ``scipy.signal.hamming`` (removed in SciPy 1.13) for an audio
dependency. dlrun never uses scipy.signal, and its import (which pulls scipy.stats,
scipy.interpolate and scipy.linalg) costs 0.6-0.8 s on 2 CPU cores: a fifth of a
one-batch run, on the path the user waits on.

So before such a package is first imported, :func:`import_module` puts the module it
does not need into ``sys.modules`` *deferred*: the real module object, made from the
installed package's own import spec, whose body runs on the first use of any name it
does not have yet. This is the standard library's ``importlib.util.LazyLoader``, with
one difference that makes it usable here: LazyLoader loads on *any* attribute access,
and torchmetrics' ``hasattr(scipy.signal, "hamming")`` would load it at once; here the
names the importer checks are set beforehand (``hamming``, forwarding to
``scipy.signal.windows.hamming`` as torchmetrics' alias does). Any later use of the
module in the process -- a user's callback, torchmetrics' audio metrics, ``from
scipy.signal import butter`` -- runs its body then and gets what a plain import gives.

Nothing is deferred when the module is already imported, when the package that imports
it already is, or when the module is not installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

_LOADING = threading.RLock()  # one thread runs a deferred body; the others wait for it
_LOADER = "__deferred_loader__"


def _hamming(*args: Any, **kwargs: Any) -> Any:
    """``scipy.signal.hamming`` as torchmetrics aliases it: the window function."""
    from scipy.signal import windows

    return windows.hamming(*args, **kwargs)


# package imported -> {module it imports but dlrun never uses: names set before its body}
DEFERRALS: dict[str, dict[str, dict[str, Callable[..., Any]]]] = {
    "torchmetrics": {"scipy.signal": {"hamming": _hamming}},
}


class DeferredModule(types.ModuleType):
    """A module whose body runs on the first lookup of a name it does not have."""

    def __getattr__(self, name: str) -> Any:
        with _LOADING:
            loader = self.__dict__.pop(_LOADER, None)
            if loader is not None:
                _run_body(self, loader)
        if type(self) is DeferredModule:  # a body that failed: as a failed import says
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return getattr(self, name)


def _run_body(module: types.ModuleType, loader: Any) -> None:
    """Run ``module``'s own code in it, as the import system would have done."""
    module.__class__ = types.ModuleType  # its own lookups (and module __getattr__) from now
    try:
        loader.exec_module(module)
    except BaseException:
        module.__class__ = DeferredModule
        sys.modules.pop(module.__name__, None)  # the next import tries again, as after
        parent, _, child = module.__name__.rpartition(".")  # any failed import
        if parent in sys.modules and getattr(sys.modules[parent], child, None) is module:
            delattr(sys.modules[parent], child)
        raise


def defer(name: str, preset: dict[str, Any] | None = None) -> bool:
    """Put module ``name`` into ``sys.modules`` with its body deferred; whether it was.

    Its parent packages are imported (they are cheap for the cases in :data:`DEFERRALS`);
    ``preset`` names are set on it before anyone can look.
    """
    if name in sys.modules:
        return False
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    if spec is None or spec.loader is None:
        return False
    module = importlib.util.module_from_spec(spec)
    module.__dict__.update(preset or {})
    module.__dict__[_LOADER] = spec.loader
    module.__class__ = DeferredModule
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return True


def import_module(name: str) -> types.ModuleType:
    """``importlib.import_module(name)``, with :data:`DEFERRALS` of its package applied."""
    package = name.partition(".")[0]
    if package not in sys.modules:
        with _LOADING:
            for module, preset in DEFERRALS.get(package, {}).items():
                defer(module, preset)
    return importlib.import_module(name)


def is_deferred(name: str) -> bool:
    """Whether ``name`` is imported but its body has not run yet."""
    return type(sys.modules.get(name)) is DeferredModule
