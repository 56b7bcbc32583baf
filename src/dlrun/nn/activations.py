"""Hidden-layer activations, resolved once and threaded into every block of a model.

An activation config is a zero-argument factory (Hydra ``_partial_: true``): a model calls
``act()`` wherever it needs a fresh activation module, so stateful ones (PReLU's learned
slope) get their own parameters per layer, as timm's ``act_layer`` does.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ActFactory = Callable[[], nn.Module]


def resolve(act: ActFactory | None) -> ActFactory:
    """ReLU when no activation is given, so models can be built in a line in tests."""
    return act if act is not None else nn.ReLU
