"""An ensemble of trained models as one model: same inputs, one output of the same kind.

Every dlrun model emits raw outputs (logits or values) and the task turns them into
probabilities (:mod:`dlrun.tasks`). The ensemble keeps that contract, so the evaluator,
``dlrun-predict``, the exporters and the server treat it as any other model:

- ``average``: the mean of the members' probabilities, returned as logits that give
  exactly that mean back (``log p`` under softmax, ``logit p`` under sigmoid, computed in
  log space with ``logsumexp`` so nothing underflows); regression: the mean value.
- ``vote``: each member's predicted class (or each label over 0.5) counts once; the
  probabilities are the vote shares, nudged by a thousandth of the average probability so
  ties go to the class the members are surer of and no class gets exactly zero (a finite
  log-loss). Regression: the median of the members' values.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from dlrun.data.spec import Task
from dlrun.tasks import info

METHODS = ("average", "vote")
TIE_BREAK = 1e-3  # share of the average probability mixed into the vote shares


class Ensemble(nn.Module):
    """``members`` (trained, same data) combined by ``method``."""

    def __init__(self, members: list[nn.Module], task: Task, method: str = "average") -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"ensemble method {method!r}: use {', '.join(METHODS)}")
        self.members = nn.ModuleList(members)
        self.task = task
        self.method = method

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        outs = torch.stack([m(x) if lengths is None else m(x, lengths) for m in self.members])
        if info(self.task).scaled:
            return outs.mean(0) if self.method == "average" else outs.median(0).values
        if info(self.task).output == "softmax":
            return self._softmax(outs)
        return self._sigmoid(outs)

    def _softmax(self, outs: torch.Tensor) -> torch.Tensor:
        log_mean = torch.logsumexp(outs.log_softmax(-1), dim=0) - math.log(len(self.members))
        if self.method == "average":
            return log_mean
        votes = (outs == outs.amax(-1, keepdim=True)).to(outs.dtype).mean(0)
        shares = (1 - TIE_BREAK) * votes + TIE_BREAK * log_mean.exp()
        return shares.clamp_min(1e-12).log()

    def _sigmoid(self, outs: torch.Tensor) -> torch.Tensor:
        n = math.log(len(self.members))
        log_p = torch.logsumexp(F.logsigmoid(outs), dim=0) - n
        log_q = torch.logsumexp(F.logsigmoid(-outs), dim=0) - n
        if self.method == "average":
            return log_p - log_q
        votes = (outs > 0).to(outs.dtype).mean(0)
        p = ((1 - TIE_BREAK) * votes + TIE_BREAK * log_p.exp()).clamp(1e-12, 1 - 1e-12)
        return p.log() - (1 - p).log()  # logit, in ops every exporter knows
