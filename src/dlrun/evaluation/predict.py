"""Batched inference, and turning raw outputs into what metrics read.

Inference keeps what each task's metrics need and nothing more: whole raw outputs for
classification and regression (small: N x classes), but for language models only the
log-probability of each target token and the argmax token, because (N, T, V) logits of a
whole corpus would not fit in memory for a real vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlrun.data.batches import iterate
from dlrun.data.spec import Split, Task
from dlrun.tasks import Targets, info


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


class Collector:
    """Keeps what the metrics of one split need from each batch of raw outputs.

    Shared by :func:`predict` (the evaluator) and the trainer's per-epoch validation
    metrics (:mod:`dlrun.evaluation.epoch`), so a monitored ``val_f1_macro`` is computed
    from exactly what the evaluator would compute it from.
    """

    def __init__(self, per_token: bool) -> None:
        self.per_token = per_token
        self.targets: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.logprobs: list[torch.Tensor] = []
        self.tokens: list[torch.Tensor] = []

    def add(self, out: torch.Tensor, targets: torch.Tensor) -> None:
        """One batch: raw outputs and their targets (moved to the CPU)."""
        self.targets.append(targets.detach().cpu())
        if self.per_token:
            logp = out.detach().float().log_softmax(dim=-1)
            self.logprobs.append(logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu())
            self.tokens.append(out.detach().argmax(dim=-1).cpu())
        else:
            self.outputs.append(out.detach().to("cpu", torch.float64))

    def extend(self, other: Collector) -> None:
        """Append another collector's batches (another process's share of the split)."""
        for mine, theirs in zip(self._parts(), other._parts(), strict=True):
            mine.extend(theirs)

    def predictions(self, loss: float) -> Predictions:
        """Everything collected, as one :class:`Predictions` with ``loss``."""
        targets = _cat(self.targets)
        if self.per_token:
            return Predictions(
                targets, loss, token_logprob=_cat(self.logprobs), token_pred=_cat(self.tokens)
            )
        return Predictions(targets, loss, outputs=_cat(self.outputs))

    def _parts(self) -> tuple[list[torch.Tensor], ...]:
        return self.targets, self.outputs, self.logprobs, self.tokens


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
    record = info(task)
    loss_of = record.loss_fn()
    collector = Collector(record.per_token)
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
                collector.add(out, batch.y)
    finally:
        model.train(was_training)
    return collector.predictions(total / count if count else float("nan"))


def score(task: Task, predictions: Predictions, threshold: float, scaler: dict | None) -> Scored:
    """Probabilities and hard predictions (classification) or values in original units.

    Binary and multilabel predictions are ``probability > threshold``, the same strict
    inequality torchmetrics uses, so a 0.5 threshold equals "logit > 0" in training.
    """
    record = info(task)
    targets = predictions.targets
    loss = predictions.loss
    if record.per_token:
        return Scored(
            targets, predictions.token_pred, loss, token_logprob=predictions.token_logprob
        )
    outputs = predictions.outputs
    if record.scaled:
        values = outputs.reshape(targets.shape)
        return Scored(unscale(targets, scaler), unscale(values, scaler), loss)
    probs = record.activate(outputs)
    if not record.thresholded:  # one class per sample: the most probable
        return Scored(targets.long(), probs.argmax(dim=-1), loss, scores=probs)
    if record.targets is Targets.BINARY:  # (N, 1) probabilities of the positive class
        probs, targets = probs.reshape(-1), targets.reshape(-1)
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


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.empty(0)
