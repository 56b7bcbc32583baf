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
from dlrun.monitor import metric_mode

if TYPE_CHECKING:
    import torch

# The per-batch training metric shown in epoch lines and history.csv (regression and
# forecasting errors in the data's own units). Its direction comes from dlrun.monitor,
# the one table of metric directions; the pair is kept for callers that unpack it.
_TRAIN_METRIC_NAME: dict[Task, str] = {
    Task.MULTICLASS: "accuracy",
    Task.BINARY: "accuracy",
    Task.MULTILABEL: "accuracy",
    Task.REGRESSION: "rmse",
    Task.FORECAST: "rmse",
    Task.LANGUAGE_MODEL: "accuracy",
}
TRAIN_METRIC: dict[Task, tuple[str, str]] = {
    task: (name, metric_mode(name)) for task, name in _TRAIN_METRIC_NAME.items()
}


LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]

# Tasks whose targets label smoothing can soften (class probabilities, not values).
SMOOTHABLE = frozenset({Task.MULTICLASS, Task.BINARY, Task.MULTILABEL, Task.LANGUAGE_MODEL})


def loss_fn(task: Task, label_smoothing: float = 0.0) -> TaskLoss:
    """The loss for ``task``, taking the model's raw outputs and the targets.

    Calling it gives the true loss, the one every epoch line, history.csv, early stopping,
    ``best.pt`` and metrics.json show; :meth:`TaskLoss.objective` gives what training
    minimises, which differs only with ``label_smoothing`` on a classification task.
    """
    if task in (Task.MULTICLASS, Task.LANGUAGE_MODEL):
        return _TokenCrossEntropy(label_smoothing)
    if task in (Task.BINARY, Task.MULTILABEL):
        return _FlatBCE(label_smoothing)
    return _FlatMSE()  # label smoothing has no meaning for values


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


def batch_metric(
    task: Task,
    outputs: torch.Tensor,
    targets: torch.Tensor,
    target_std: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum of the per-sample training metric over a batch (averaged by the caller).

    Returned as a 0-d tensor so the training loop never synchronises with the device
    per step; the epoch total is read once at the end of the epoch. ``target_std`` (one
    entry per output, or one for all) turns errors on standardised targets back into
    the data's units, so the epoch lines show the rmse that metrics.json reports.
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
    err = (outputs.reshape(targets.shape) - targets).reshape(targets.shape[0], -1)
    if target_std is not None:
        err = err * target_std
    return err.pow(2).mean(dim=1).sum()


def target_std(meta: dict, task: Task) -> list[float] | None:
    """The loader's target standard deviations (``meta["target_scaler"]``), if scaled."""
    scaler = meta.get("target_scaler")
    if task not in (Task.REGRESSION, Task.FORECAST) or not scaler:
        return None
    return [float(v) for v in scaler["std"]]


def finish_metric(task: Task, total: float, count: int) -> float:
    """Per-epoch value of the training metric from the batch sums."""
    mean = total / max(count, 1)
    return mean**0.5 if task in (Task.REGRESSION, Task.FORECAST) else mean


class TaskLoss:
    """A task's loss: ``loss(outputs, targets)`` is the true loss; ``objective`` trains."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        from torch.nn import functional  # here, not at import: tasks.py stays torch-free

        self.label_smoothing = label_smoothing
        self.F = functional

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def objective(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(what to minimise, the true loss); one tensor twice when nothing is smoothed."""
        if self.label_smoothing:
            return self._smoothed(outputs, targets, self.label_smoothing)
        loss = self(outputs, targets)
        return loss, loss

    def _smoothed(
        self, outputs: torch.Tensor, targets: torch.Tensor, e: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no label smoothing")


class _TokenCrossEntropy(TaskLoss):
    """Cross entropy over the last axis, for (N, C) or (N, T, V) logits.

    With smoothing ``e`` the target is ``(1-e)`` on the class plus ``e/C`` everywhere, as
    ``nn.CrossEntropyLoss(label_smoothing=e)``; written out from one log-softmax so the
    true loss comes with it at no extra cost: ``(1-e) * nll + e * mean(-log p)``.
    """

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))

    def _smoothed(
        self, outputs: torch.Tensor, targets: torch.Tensor, e: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logp = outputs.reshape(-1, outputs.shape[-1]).log_softmax(dim=-1)
        nll = self.F.nll_loss(logp, targets.reshape(-1))
        return (1 - e) * nll - e * logp.mean(dim=-1).mean(), nll


class _FlatBCE(TaskLoss):
    """Binary cross entropy with logits; binary targets (N,) meet (N, 1) logits.

    With smoothing ``e`` the targets become ``y * (1-e) + e/2`` (Keras'
    ``BinaryCrossentropy(label_smoothing=e)``): 0/1 labels turn into e/2 and 1-e/2.
    """

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.F.binary_cross_entropy_with_logits(outputs.reshape(targets.shape), targets)

    def _smoothed(
        self, outputs: torch.Tensor, targets: torch.Tensor, e: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        soft = targets * (1 - e) + e / 2
        return self(outputs, soft), self(outputs, targets)


class _FlatMSE(TaskLoss):
    """Mean squared error with outputs shaped like the targets (label smoothing n/a)."""

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.F.mse_loss(outputs.reshape(targets.shape), targets)
