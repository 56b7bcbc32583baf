"""Batched inference, and turning raw outputs into what metrics read.

Inference keeps what each task's metrics need and nothing more: whole raw outputs for
classification and regression (small: N x classes), but for language models only the
log-probability of each target token and the argmax token, because (N, T, V) logits of a
whole corpus would not fit in memory for a real vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dlrun.data.batches import iterate
from dlrun.data.spec import Split, Task
from dlrun.tasks import loss_fn, output_activation


@dataclass
class Predictions:
    """One predictor's raw output on the first ``len(targets)`` rows of a split (CPU).

    ``loss`` is the task loss over those rows in training units (standardised targets
    for regression) and without label smoothing, i.e. the plain negative log-likelihood
    or squared error the model was trained to reduce.
    """

    targets: torch.Tensor
    loss: float
    outputs: torch.Tensor | None = None  # raw logits / values, float64 (not LM)
    token_logprob: torch.Tensor | None = None  # LM: log p(target token), (N, T)
    token_pred: torch.Tensor | None = None  # LM: argmax token, (N, T)


@dataclass
class Scored:
    """A predictor's output in report units: the single input of every metric.

    The model and its baseline both become a ``Scored``, so one function computes both
    sets of metrics and the baseline's numbers can never be defined differently.
    """

    targets: torch.Tensor  # class ids (N,) | 0/1 (N,) or (N, L) | values (N, K) | tokens (N, T)
    preds: torch.Tensor  # hard predictions shaped like ``targets``
    loss: float
    scores: torch.Tensor | None = None  # probabilities: (N, C) | (N,) positive class | (N, L)
    rank_scores: torch.Tensor | None = None  # scores for ROC/PR when they differ from scores
    token_logprob: torch.Tensor | None = None  # LM only

    @property
    def ranking(self) -> torch.Tensor | None:
        """The scores ROC and PR curves rank samples by."""
        return self.scores if self.rank_scores is None else self.rank_scores


def predict(
    model: torch.nn.Module,
    split: Split,
    task: Task,
    *,
    batch_size: int,
    device: torch.device | str,
    limit_batches: int | None = None,
) -> Predictions:
    """Run ``model`` over ``split`` in eval mode without gradients; restore its mode after.

    The loss is accumulated as batch mean x batch elements, so it equals the loss of the
    whole split computed at once whatever the batch size.
    """
    loss_of = loss_fn(task)
    language_model = task is Task.LANGUAGE_MODEL
    outputs: list[torch.Tensor] = []
    logprobs: list[torch.Tensor] = []
    tokens: list[torch.Tensor] = []
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in iterate(split, batch_size, limit=limit_batches):
                batch = batch.to(device)
                out = model(batch.x) if batch.lengths is None else model(batch.x, batch.lengths)
                total += float(loss_of(out, batch.y)) * batch.y.numel()
                count += batch.y.numel()
                if language_model:
                    logp = out.float().log_softmax(dim=-1)
                    logprobs.append(logp.gather(-1, batch.y.unsqueeze(-1)).squeeze(-1).cpu())
                    tokens.append(out.argmax(dim=-1).cpu())
                else:
                    outputs.append(out.detach().to("cpu", torch.float64))
    finally:
        model.train(was_training)
    n = sum(len(t) for t in (logprobs if language_model else outputs))
    targets = split.y[:n].cpu()
    loss = total / count if count else float("nan")
    if language_model:
        return Predictions(targets, loss, token_logprob=_cat(logprobs), token_pred=_cat(tokens))
    return Predictions(targets, loss, outputs=_cat(outputs))


def score(task: Task, predictions: Predictions, threshold: float, scaler: dict | None) -> Scored:
    """Probabilities and hard predictions (classification) or values in original units.

    Binary and multilabel predictions are ``probability > threshold``, the same strict
    inequality torchmetrics uses, so a 0.5 threshold equals "logit > 0" in training.
    """
    targets = predictions.targets
    loss = predictions.loss
    if task is Task.LANGUAGE_MODEL:
        return Scored(
            targets, predictions.token_pred, loss, token_logprob=predictions.token_logprob
        )
    outputs = predictions.outputs
    if task in (Task.REGRESSION, Task.FORECAST):
        values = outputs.reshape(targets.shape)
        return Scored(unscale(targets, scaler), unscale(values, scaler), loss)
    probs = output_activation(task, outputs)
    if task is Task.MULTICLASS:
        return Scored(targets.long(), probs.argmax(dim=-1), loss, scores=probs)
    if task is Task.BINARY:
        probs = probs.reshape(-1)
        targets = targets.reshape(-1)
    return Scored(targets.long(), (probs > threshold).long(), loss, scores=probs)


def unscale(values: torch.Tensor, scaler: dict | None) -> torch.Tensor:
    """Undo the loader's target standardisation (``meta["target_scaler"]``), in float64.

    One mean/std per output column, or a single pair broadcast over all columns (a
    univariate series forecast several steps ahead).
    """
    values = values.to(torch.float64)
    if not scaler:
        return values
    mean = torch.tensor(scaler["mean"], dtype=torch.float64)
    std = torch.tensor(scaler["std"], dtype=torch.float64)
    return values * std + mean


def class_names(names: Sequence[str], task: Task, n_outputs: int) -> tuple[str, ...]:
    """The spec's class names, or readable defaults when a loader gives none."""
    if names:
        return tuple(names)
    if task is Task.BINARY:
        return ("negative", "positive")
    if task in (Task.MULTICLASS, Task.MULTILABEL):
        return tuple(str(i) for i in range(n_outputs))
    return ()


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.empty(0)
