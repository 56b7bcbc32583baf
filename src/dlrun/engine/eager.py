"""Optimizers that don't load torch's compiler stack while nothing is being compiled.

torch wraps ``Optimizer.add_param_group``, ``zero_grad``, ``state_dict`` and
``load_state_dict`` in ``torch._disable_dynamo``, and every built-in optimizer's ``step``
in ``_use_grad_for_differentiable``. Both wrappers ``import torch._dynamo`` on their
first call, only to tell the compiler not to trace the method or to put graph breaks
around it. That import loads TorchDynamo, FX, sympy and the export machinery: about a
second on 2 CPU cores, in every run, for an eager run that never compiles anything.

While ``torch._dynamo`` has not been imported nothing can be tracing, so those wrappers
have nothing to do. :func:`install` replaces each such method with one that calls
torch's wrapper when ``torch._dynamo`` is loaded (``trainer.compile=true``, or anything
else that imported it: torch's own behaviour, unchanged) and the undecorated method
otherwise, with the same grad mode ``_use_grad_for_differentiable`` sets. The wrappers
are recognised by their code objects, so a torch that changes them is left as it is
(and only loses the saving).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim import optimizer as optimizer_module

DYNAMO = "torch._dynamo"
_METHODS = ("add_param_group", "zero_grad", "state_dict", "load_state_dict", "step")


def _code_of(decorate: Callable[[Callable[..., Any]], Callable[..., Any]] | None) -> Any:
    """The code object of the wrapper ``decorate`` puts around a function (or None)."""
    if decorate is None:
        return None
    return getattr(decorate(lambda *args, **kwargs: None), "__code__", None)


_DISABLE_CODE = _code_of(getattr(torch, "_disable_dynamo", None))
_USE_GRAD_CODE = _code_of(getattr(optimizer_module, "_use_grad_for_differentiable", None))


def _without_dynamo(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """``torch._disable_dynamo(raw)`` that skips the import while dynamo is not loaded."""
    raw = wrapper.__wrapped__  # type: ignore[attr-defined]

    @functools.wraps(raw)
    def method(*args: Any, **kwargs: Any) -> Any:
        if DYNAMO in sys.modules:
            return wrapper(*args, **kwargs)
        return raw(*args, **kwargs)

    method.__dlrun_eager__ = True  # type: ignore[attr-defined]
    return method


def _step_without_dynamo(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """``_use_grad_for_differentiable(raw)`` without its graph breaks while nothing compiles."""
    raw = wrapper.__wrapped__  # type: ignore[attr-defined]

    @functools.wraps(raw)
    def step(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
        if DYNAMO in sys.modules:
            return wrapper(self, *args, **kwargs)
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return raw(self, *args, **kwargs)

    step.__dlrun_eager__ = True  # type: ignore[attr-defined]
    return step


def _classes(root: type) -> Iterator[type]:
    yield root
    for sub in root.__subclasses__():
        yield from _classes(sub)


def install() -> int:
    """Patch ``Optimizer`` and the optimizer classes defined so far; returns how many methods.

    Idempotent. A class that already built an optimizer has its ``step`` wrapped by torch's
    profiling hook; its ``step`` is left alone (that optimizer just imports dynamo).
    """
    patched = 0
    for cls in _classes(Optimizer):
        for name in _METHODS:
            method = cls.__dict__.get(name)
            code = getattr(method, "__code__", None)
            if code is None or not hasattr(method, "__wrapped__"):
                continue
            if code is _DISABLE_CODE:
                setattr(cls, name, _without_dynamo(method))
            elif code is _USE_GRAD_CODE:
                setattr(cls, name, _step_without_dynamo(method))
            else:
                continue
            patched += 1
    return patched
