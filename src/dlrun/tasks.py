"""Task kind -> loss, output activation and the metric the trainer monitors.

This is the seeds' "last-layer activation and loss" table as code: the hidden-layer
activation is the user's choice, the output activation is decided by the task.

| task            | output activation | loss                          |
| --------------- | ----------------- | ----------------------------- |
| multiclass      | softmax           | cross entropy                 |
| binary          | sigmoid           | binary cross entropy          |
| multilabel      | sigmoid (each)    | binary cross entropy (each)   |
| regression      | identity          | mean squared error            |
| forecast        | identity          | mean squared error            |
| language_model  | softmax per token | cross entropy per token       |

Models emit raw logits / values; losses take logits (numerically stable fused forms).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dlrun.data.spec import Task

if TYPE_CHECKING:
    import torch

# The per-batch training metric shown in epoch lines and history.csv, and whether a
# larger value is better. Classification watches accuracy; everything else its loss-like
# error, so "higher is better" is never guessed.
TRAIN_METRIC: dict[Task, tuple[str, str]] = {
    Task.MULTICLASS: ("accuracy", "max"),
    Task.BINARY: ("accuracy", "max"),
    Task.MULTILABEL: ("accuracy", "max"),
    Task.REGRESSION: ("rmse", "min"),
    Task.FORECAST: ("rmse", "min"),
    Task.LANGUAGE_MODEL: ("accuracy", "max"),
}


LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def loss_fn(task: Task, label_smoothing: float = 0.0) -> LossFn:
    """The loss for ``task``, taking the model's raw outputs and the targets."""
    if task in (Task.MULTICLASS, Task.LANGUAGE_MODEL):
        return _TokenCrossEntropy(label_smoothing)
    if task in (Task.BINARY, Task.MULTILABEL):
        return _FlatBCE()
    return _FlatMSE()


def output_activation_name(task: Task) -> str:
    """The output activation of ``task`` by name (for contracts read by other programs)."""
    if task in (Task.MULTICLASS, Task.LANGUAGE_MODEL):
        return "softmax"
    return "sigmoid" if task in (Task.BINARY, Task.MULTILABEL) else "identity"


def output_activation(task: Task, outputs: torch.Tensor) -> torch.Tensor:
    """Turn raw model outputs into probabilities (classification) or values."""
    if task in (Task.MULTICLASS, Task.LANGUAGE_MODEL):
        return outputs.softmax(dim=-1)
    if task in (Task.BINARY, Task.MULTILABEL):
        return outputs.sigmoid()
    return outputs


def batch_metric(task: Task, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of the per-sample training metric over a batch (averaged by the caller).

    Returned as a 0-d tensor so the training loop never synchronises with the device
    per step; the epoch total is read once at the end of the epoch.
    """
    if task is Task.MULTICLASS:
        return (outputs.argmax(dim=-1) == targets).sum()
    if task is Task.LANGUAGE_MODEL:
        return (outputs.argmax(dim=-1) == targets).float().mean(dim=-1).sum()
    if task is Task.BINARY:
        return ((outputs.reshape(-1) > 0).float() == targets.reshape(-1)).float().sum()
    if task is Task.MULTILABEL:
        return ((outputs > 0).float() == targets).float().mean(dim=-1).sum()
    # regression/forecast: the sum of per-sample squared errors (rmse taken per epoch)
    err = (outputs.reshape(targets.shape) - targets) ** 2
    return err.reshape(err.shape[0], -1).mean(dim=1).sum()


def finish_metric(task: Task, total: float, count: int) -> float:
    """Per-epoch value of the training metric from the batch sums."""
    mean = total / max(count, 1)
    return mean**0.5 if task in (Task.REGRESSION, Task.FORECAST) else mean


class _TokenCrossEntropy:
    """Cross entropy over the last axis, for (N, C) or (N, T, V) logits."""

    def __init__(self, label_smoothing: float) -> None:
        from torch import nn

        self.inner = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.inner(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))


class _FlatBCE:
    """Binary cross entropy with logits; binary targets (N,) meet (N, 1) logits."""

    def __init__(self) -> None:
        from torch import nn

        self.inner = nn.BCEWithLogitsLoss()

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.inner(outputs.reshape(targets.shape), targets)


class _FlatMSE:
    """Mean squared error with outputs shaped like the targets."""

    def __init__(self) -> None:
        from torch import nn

        self.inner = nn.MSELoss()

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.inner(outputs.reshape(targets.shape), targets)
