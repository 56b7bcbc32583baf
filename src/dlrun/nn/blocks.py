"""Pieces several model families share, so each model file reads as its architecture only.

Every block that feeds an activation sizes its layer with :func:`widen`, so maxout gets
its extra pieces wherever it is used and other activations are unaffected.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dlrun.data.spec import DataKind, DataSpec
from dlrun.errors import UserError
from dlrun.nn.activations import ActFactory, act_last, widen

Pool = Literal["last", "mean", "max"]


def dense(
    in_features: int,
    out_features: int,
    act: ActFactory,
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """Linear -> [BatchNorm] -> act -> Dropout on features in the last axis.

    ``batch_norm`` is for ``(N, F)`` inputs only (BatchNorm1d reads axis 1 as features).
    """
    wide = widen(act, out_features)
    layers: list[nn.Module] = [nn.Linear(in_features, wide)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(wide))
    layers += [act_last(act), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def conv_block(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    act: ActFactory,
    *,
    stride: int = 1,
    groups: int = 1,
    batch_norm: bool = True,
    dims: int = 2,
) -> nn.Sequential:
    """Conv -> [BatchNorm] -> act with "same" padding (``k // 2``), 1-D or 2-D.

    The conv has no bias when BatchNorm follows (BatchNorm's shift replaces it). With
    ``groups == in_channels`` it is depthwise; maxout then gives each channel ``k`` filters.
    """
    conv = nn.Conv2d if dims == 2 else nn.Conv1d
    wide = widen(act, out_channels)
    layers: list[nn.Module] = [
        conv(
            in_channels,
            wide,
            kernel_size,
            stride,
            kernel_size // 2,
            groups=groups,
            bias=not batch_norm,
        )
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(wide) if dims == 2 else nn.BatchNorm1d(wide))
    layers.append(act())
    return nn.Sequential(*layers)


@torch.no_grad()
def probe(module: nn.Module, input_shape: tuple[int, ...]) -> torch.Size:
    """Output shape of ``module`` for one sample, measured instead of derived by hand.

    Run in eval mode (BatchNorm would refuse a batch of one 1x1 map, and must not update
    its running statistics from zeros), then the module's mode is restored.
    """
    was_training = module.training
    module.eval()
    out = module(torch.zeros(1, *input_shape))
    module.train(was_training)
    return out.shape[1:]


def require_image_size(spec: DataSpec, min_px: int, model: str) -> None:
    """Refuse images smaller than a CNN's downsampling can handle, naming the fix."""
    height, width = spec.input_shape[1:]
    if min(height, width) < min_px:
        raise UserError(
            f"model={model} needs images of at least {min_px}x{min_px} px; {spec.name} has "
            f"{height}x{width} (data=digits takes a size option, e.g. data.size=32)"
        )


def require_choice(model: str, option: str, value: object, choices: tuple[object, ...]) -> None:
    """Refuse a family option outside its choices instead of silently using a default."""
    if value not in choices:
        listed = ", ".join(str(c) for c in choices)
        raise UserError(f"model={model} takes {option} {listed}; got {value}")


def require_vocab(spec: DataSpec, model: str) -> None:
    """Token data must say how many ids it uses, or no embedding can be sized."""
    if spec.kind == DataKind.TOKENS and spec.vocab_size < 1:
        raise UserError(f"model={model} needs a vocabulary size; {spec.name} declares none")


class SequenceInput(nn.Module):
    """``(N, T, F)`` float features from any sequence-like input.

    Token ids ``(N, T)`` go through an embedding; images ``(N, C, H, W)`` are read row by
    row (H steps of C*W features, the "sequential digits" setup); sequences pass as they are.
    """

    def __init__(self, spec: DataSpec, embed_dim: int) -> None:
        super().__init__()
        self.embed: nn.Embedding | None = None
        if spec.kind == DataKind.TOKENS:
            self.embed = nn.Embedding(spec.vocab_size, embed_dim)
            self.features = embed_dim
        elif spec.kind == DataKind.IMAGE:
            channels, _, width = spec.input_shape
            self.features = channels * width
        else:
            self.features = spec.input_shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            return self.embed(x)
        if x.dim() == 4:
            return x.permute(0, 2, 1, 3).flatten(2)
        return x


def valid_steps(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """``(N, T)`` bool mask, True where a step is inside its sequence's valid length."""
    return torch.arange(steps, device=lengths.device) < lengths.unsqueeze(1)


def pool_steps(x: torch.Tensor, lengths: torch.Tensor | None, how: Pool) -> torch.Tensor:
    """Reduce ``(N, T, F)`` to ``(N, F)`` over the valid steps only.

    ``last`` is the last valid step (right-padded batches), ``mean``/``max`` ignore the
    padding, so padded values never reach the output.
    """
    if lengths is None:
        if how == "last":
            return x[:, -1]
        return x.mean(dim=1) if how == "mean" else x.amax(dim=1)
    if how == "last":
        index = (lengths.to(x.device).long() - 1).clamp(min=0)
        return x[torch.arange(x.shape[0], device=x.device), index]
    mask = valid_steps(lengths.to(x.device), x.shape[1]).unsqueeze(-1)
    if how == "mean":
        return (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return x.masked_fill(~mask, float("-inf")).amax(dim=1)


class SoftmaxAsLogits(nn.Module):
    """``logit(softmax(z))``: logits whose per-label sigmoid is the softmax over labels.

    A multilabel task reads its outputs through a sigmoid per label (:mod:`dlrun.tasks`);
    ending a net with this layer makes those probabilities a softmax instead, which sum
    to 1 over the labels (Keras' ``Dense(L, activation="softmax")`` trained with binary
    cross-entropy). It exists to show why multilabel data needs a sigmoid per label: at
    most one label can pass a 0.5 threshold. Exact in float64: ``log p_i - log(1 - p_i)``
    with ``log(1 - p_i) = logsumexp_{j != i} z_j - logsumexp_j z_j``, no ``1 - p``
    subtraction that would round a confident label to infinity.
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[-1]
        eye = torch.eye(n, dtype=torch.bool, device=z.device)
        others = z.unsqueeze(-2).expand(*z.shape, n).masked_fill(eye, float("-inf"))
        return z - others.logsumexp(dim=-1)  # log p_i - log(1 - p_i); the lse cancels
