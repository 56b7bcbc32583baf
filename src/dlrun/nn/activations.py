"""Hidden-layer activations, resolved once and threaded into every block of a model.

An activation config is a zero-argument factory (Hydra ``_partial_: true``): a model calls
``act()`` wherever it needs a fresh activation module, so stateful ones (PReLU's learned
slope) get their own parameters per layer, as timm's ``act_layer`` does.

Most configs target ``torch.nn`` classes directly; this module holds only what torch lacks:

- :class:`BinaryStep`, the seeds' example of an activation that cannot learn;
- :class:`Maxout`, which needs the layer feeding it to be ``k`` times wider
  (:func:`widen` is the one-liner every model uses for that);
- :func:`refuse_softmax`, because softmax is an output activation chosen by the task.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dlrun.errors import UserError

ActFactory = Callable[[], nn.Module]


def resolve(act: ActFactory | None) -> ActFactory:
    """ReLU when no activation is given, so models can be built in a line in tests."""
    return act if act is not None else nn.ReLU


class _ZeroGradStep(torch.autograd.Function):
    """Heaviside step whose backward pass is exactly zero (its true derivative a.e.)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(grad)


class BinaryStep(nn.Module):
    """``1 if x > 0 else 0``: on or off, as in the seeds' "binary step function".

    Kept to show *why* it is not used: its derivative is zero everywhere it exists, so
    every layer before it receives an exactly-zero gradient and never learns. Only the
    layers after the last step (typically the output layer) are trained. The gradient is
    returned as zeros rather than cut from the graph, so optimizers and gradient checks
    see the same parameters with any activation.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ZeroGradStep.apply(x)


class Maxout(nn.Module):
    """Maxout (Goodfellow et al., 2013): each unit is the max over ``pieces`` linear pieces.

    The pieces are computed by the layer *before* the activation, so that layer must emit
    ``pieces`` times as many features: models size it with :func:`widen`, which is why
    maxout really costs ``pieces`` times the parameters (the seeds' "doubles parameters").
    Features are grouped as ``(unit, piece)``, i.e. unit ``c`` reduces features
    ``c*k .. c*k+k-1`` of axis ``dim`` (1 for ``(N, C, ...)`` conv maps and ``(N, F)``
    vectors; -1 for ``(N, T, F)`` token features, see :func:`act_last`).
    """

    def __init__(self, pieces: int = 2, dim: int = 1) -> None:
        super().__init__()
        if pieces < 1:
            raise UserError(f"activation=maxout needs pieces >= 1, got {pieces}")
        self.pieces = pieces
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self.dim % x.dim()
        size = x.shape[dim]
        if size % self.pieces:
            raise ValueError(
                f"maxout with {self.pieces} pieces got {size} features on axis {dim}; "
                "the layer feeding it must be sized with dlrun.nn.activations.widen"
            )
        grouped = x.unflatten(dim, (size // self.pieces, self.pieces))
        return grouped.amax(dim=dim + 1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}, dim={self.dim}"


def pieces(act: ActFactory) -> int:
    """How many pieces ``act`` reduces to one feature: ``k`` for maxout, 1 for the rest.

    Asked of a throwaway instance, so it works for any factory form (a class, a Hydra
    ``functools.partial``, a lambda) without knowing how the factory was written.
    """
    return int(getattr(act(), "pieces", 1))


def widen(act: ActFactory, features: int) -> int:
    """Out-features for a layer that feeds ``act``: ``features`` after the activation."""
    return features * pieces(act)


def act_last(act: ActFactory) -> nn.Module:
    """A fresh ``act()`` for tensors whose features are the last axis, e.g. ``(N, T, F)``.

    Element-wise activations do not care; maxout must reduce the feature axis, which is
    axis 1 for conv maps but the last axis for per-token features.
    """
    module = act()
    if isinstance(module, Maxout):
        module.dim = -1
    return module


def refuse_softmax(*_: object, **__: object) -> ActFactory:
    """The target of ``activation=softmax``: always refuses, with the reason.

    Softmax turns a layer's outputs into one probability distribution; between hidden
    layers it would couple every unit to every other. It belongs on the output layer of a
    classifier, and there the task decides it (``dlrun.tasks``), not the activation choice.
    """
    raise UserError(
        "activation=softmax is an output activation, chosen by the task (multiclass and "
        "language_model apply it to the logits); pick a hidden-layer activation such as "
        "relu, gelu or tanh"
    )
