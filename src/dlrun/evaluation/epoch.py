"""Registry metrics on the validation split once per epoch, for ``trainer.monitor``.

``trainer.monitor=val_f1_macro`` (or any ``val_<metric>`` the evaluator reports for the
task) makes the trainer collect the validation outputs it already computes, and hand
them here at the end of the epoch: they are scored exactly as the evaluator scores a
split (:func:`dlrun.evaluation.predict.score`) and the metric is the registry's own
function, so history.csv's ``val_f1_macro`` at the best epoch is metrics.json's
``val.f1_macro``. Only the monitored metrics are computed, and never per training step.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

from dlrun.data.spec import DataBundle
from dlrun.errors import UserError
from dlrun.evaluation.predict import Collector, score
from dlrun.metric_registry import Inputs, Metric, get
from dlrun.tasks import info


class EpochMetrics:
    """Computes ``val_<name>`` for ``names`` from one epoch's validation outputs."""

    def __init__(self, bundle: DataBundle, names: Sequence[str], threshold: float) -> None:
        spec = bundle.spec
        self.record = info(spec.task)
        self.class_names = self.record.class_names(spec.class_names, spec.n_outputs)
        self.scaler = bundle.meta.get("target_scaler")
        self.threshold = threshold
        self.metrics: list[Metric] = [m for m in map(get, names) if m is not None]
        for metric in self.metrics:
            if not metric.applies(len(self.class_names)):
                raise UserError(
                    f"val_{metric.name} cannot be monitored on {spec.name}: the metric is not "
                    f"defined for its {len(self.class_names)} classes"
                )

    def collector(self) -> Collector:
        """An empty collector for one pass over (this process's share of) the split."""
        return Collector(self.record.per_token)

    def __call__(self, parts: Sequence[Collector], loss: float) -> dict[str, float]:
        """``{"val_<name>": value}`` from every process's collector of the epoch."""
        merged = self.collector()
        for part in parts:
            merged.extend(part)
        scored = score(self.record.task, merged.predictions(loss), self.threshold, self.scaler)
        inputs = Inputs(scored, self.class_names, self.record.targets)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="torchmetrics")
            return {f"val_{m.name}": float(m.compute(inputs)) for m in self.metrics}


def epoch_metrics(
    bundle: DataBundle, threshold: float, monitored: Iterable[str | None]
) -> EpochMetrics | None:
    """What the trainer must compute per epoch for ``monitored`` (None: nothing extra).

    ``loss`` and the training metric are in every epoch row already; any other
    ``val_<metric>`` among the monitors is computed here.
    """
    recorded = {"loss", info(bundle.spec.task).train_metric}
    names: list[str] = []
    for name in monitored:
        base = (name or "").removeprefix("val_")
        if name and name != base and base not in recorded and base not in names:
            names.append(base)
    return EpochMetrics(bundle, names, threshold) if names else None
