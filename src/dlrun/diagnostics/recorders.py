"""What a run records about its own health while it trains, at almost no cost.

- :class:`GradientNorms`: the gradient norm of every weight layer, every ``every_n_steps``
  optimizer steps (and the first), read in the trainer's ``on_before_optimizer_step``
  hook. The norms are computed and kept on the device; the host reads them once per
  epoch, so the hot loop never waits for the device.
- :class:`ActivationHealth`: forward hooks on the activation modules, run over (part of)
  the validation split once before training and once after, never during training
  steps: the share of dead ReLU units (never active on any validation sample) and of
  saturated sigmoid/tanh units (in the flat part of the curve on nearly every sample).

Both are plain callbacks; the verdicts on what they recorded are pure functions in
:mod:`dlrun.diagnostics.verdicts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dlrun.data.batches import iterate
from dlrun.engine.trainer import Callback, batches_per_epoch
from dlrun.nn.activations import BinaryStep

if TYPE_CHECKING:
    from dlrun.config import DiagnosticsSettings
    from dlrun.data.spec import Split
    from dlrun.engine.trainer import FitState, Trainer

MAX_SAMPLES = 2000  # gradient samples kept; beyond that every other one is dropped

# Activation modules by what "unhealthy" means for them.
RECTIFIERS = (nn.ReLU, nn.ReLU6, BinaryStep)  # zero output and zero gradient below 0: can die
LEAKY = (nn.LeakyReLU, nn.PReLU, nn.ELU, nn.CELU, nn.SELU, nn.SiLU, nn.GELU, nn.Mish)
SATURATING = (nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softsign)
SATURATED_ON = 0.99  # a unit is saturated if in the flat zone on this share of samples
# The flat zone: the derivative is below 5% of its maximum (sigmoid 0.25, tanh 1).
FLAT_SIGMOID = 0.0128  # s(1 - s) < 0.0125  <=>  s < 0.0128 or s > 0.9872
FLAT_TANH = 0.9747  # 1 - t^2 < 0.05  <=>  |t| > 0.9747


def weight_layers(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """Modules that own a weight matrix or kernel, with their own parameters, in
    registration order (which is forward order for every dlrun family).

    Norm layers and PReLU slopes are left out: the question is how much gradient reaches
    the layers that transform the signal. A tensor shared by two modules (tied
    embeddings) counts once, for the first.
    """
    seen: set[int] = set()
    layers = []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        own = [p for p in own if id(p) not in seen]
        if any(p.dim() > 1 for p in own):
            seen.update(id(p) for p in own)
            layers.append((name or type(module).__name__, own))
    return layers


class GradientNorms(Callback):
    """Per-layer gradient norms every ``every_n_steps`` optimizer steps.

    One sample is a few fused device operations (``_foreach_norm`` over the gradients,
    one scatter-add into per-layer sums); samples stay on the device until the end of the
    epoch. The norms are those before gradient clipping, so an explosion shows even when
    ``trainer.grad_clip`` contains it.
    """

    def __init__(self, every_n_steps: int = 25) -> None:
        self.every = max(1, int(every_n_steps))
        self.layers: list[str] = []
        self.steps: list[int] = []
        self.norms: list[list[float]] = []  # one row per sample, one column per layer
        self._params: list[nn.Parameter] = []
        self._owner = torch.empty(0, dtype=torch.long)
        self._pending: list[tuple[int, torch.Tensor]] = []

    def on_fit_start(self, trainer: Trainer, state: FitState) -> None:
        layers = weight_layers(trainer.base_model)
        self.layers = [name for name, _ in layers]
        self._params = [p for _, params in layers for p in params]
        device = self._params[0].device if self._params else torch.device("cpu")
        owner = [i for i, (_, params) in enumerate(layers) for _ in params]
        self._owner = torch.tensor(owner, dtype=torch.long, device=device)

    def on_before_optimizer_step(self, trainer: Trainer, state: FitState) -> None:
        if state.step % self.every or not self._params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
        squares = torch.stack(torch._foreach_norm(grads)).float().square_()
        per_layer = torch.zeros(len(self.layers), device=squares.device)
        self._pending.append((state.step, per_layer.index_add_(0, self._owner, squares).sqrt_()))

    def on_epoch_end(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        self._flush()

    def on_fit_end(self, trainer: Trainer, state: FitState) -> None:
        self._flush()

    def _flush(self) -> None:
        """Read the epoch's samples from the device in one transfer."""
        if not self._pending:
            return
        rows = torch.stack([norms for _, norms in self._pending]).cpu().tolist()
        self.steps += [step for step, _ in self._pending]
        self.norms += rows
        self._pending = []
        while len(self.steps) > MAX_SAMPLES:  # long runs: keep every other sample
            self.steps, self.norms = self.steps[::2], self.norms[::2]

    def result(self) -> dict[str, Any]:
        """What was recorded, for :func:`dlrun.diagnostics.verdicts.gradient_verdict`."""
        self._flush()
        return {
            "every_n_steps": self.every,
            "layers": list(self.layers),
            "steps": list(self.steps),
            "norms": [list(r) for r in self.norms],
        }

    def state_dict(self) -> dict[str, Any]:
        self._flush()
        return {"layers": self.layers, "steps": self.steps, "norms": self.norms}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("layers") == self.layers or not self.layers:
            self.steps = list(state.get("steps", []))
            self.norms = [list(r) for r in state.get("norms", [])]


@dataclass
class _Tally:
    """Per-unit counts one activation module collects over the validation batches."""

    name: str
    kind: str  # the module's class name
    axis: int
    active: torch.Tensor | None = None  # rectifiers: ever > 0, per unit
    flat: torch.Tensor | None = None  # saturating: samples in the flat zone, per unit
    positions: int = 0  # samples (times positions) seen per unit

    def add(self, module: nn.Module, out: torch.Tensor) -> None:
        """Reduce over every axis but the units' one in place: moving the unit axis last
        copied every conv feature map, which cost half as much as the forward pass."""
        out = out.detach()
        if out.dim() < 2:  # one value per sample: a single unit
            out = out.reshape(-1, 1)
        axis = self.axis % out.dim()
        others = tuple(d for d in range(out.dim()) if d != axis)
        self.positions += out.numel() // max(out.shape[axis], 1)
        if isinstance(module, SATURATING):
            zone = _flat_zone(module, out).sum(dim=others)
            self.flat = zone if self.flat is None else self.flat + zone
        else:
            on = (out > 0).any(dim=others)
            self.active = on if self.active is None else self.active | on

    def summary(self) -> dict[str, Any]:
        row: dict[str, Any] = {"layer": self.name, "kind": self.kind, "units": 0}
        if self.active is not None:
            row["units"] = int(self.active.numel())
            row["never_active"] = float((~self.active).float().mean())
        if self.flat is not None and self.positions:
            row["units"] = int(self.flat.numel())
            share = self.flat.float() / (self.positions)
            row["saturated"] = float((share >= SATURATED_ON).float().mean())
            row["flat_share"] = float(share.mean())
        return row


def _flat_zone(module: nn.Module, values: torch.Tensor) -> torch.Tensor:
    """Where an S-shaped activation's derivative is under 5% of its maximum."""
    if isinstance(module, nn.Sigmoid):
        return (values < FLAT_SIGMOID) | (values > 1 - FLAT_SIGMOID)
    if isinstance(module, nn.Tanh):
        return values.abs() > FLAT_TANH
    if isinstance(module, nn.Hardtanh):
        return (values <= module.min_val) | (values >= module.max_val)
    return values.abs() > 0.95  # softsign: x / (1 + |x|), derivative (1 - |y|)^2 < 0.0025


def unit_axes(model: nn.Module) -> dict[nn.Module, tuple[str, int]]:
    """Each activation module's name and the axis that indexes its units.

    Channels (axis 1) after a convolution, features (the last axis) after a linear,
    recurrent or embedding layer: ``(N, C, L)`` conv maps and ``(N, T, F)`` token
    features are both 3-D, so the layer before decides.
    """
    axes: dict[nn.Module, tuple[str, int]] = {}
    axis = -1
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            axis = 1
        elif isinstance(module, nn.Linear | nn.RNNBase | nn.Embedding):
            axis = -1
        elif isinstance(module, RECTIFIERS + LEAKY + SATURATING) and module not in axes:
            axes[module] = (name, axis)
    return axes


@torch.no_grad()
def activation_health(
    model: nn.Module, split: Split, max_samples: int = 512, batch_size: int = 256
) -> list[dict[str, Any]]:
    """Per activation module: units, and the share never active (rectifiers and the
    leaky family) or saturated (sigmoid, tanh), over the first ``max_samples`` rows of
    ``split``. The model runs in eval mode (no dropout) and its mode is restored.
    """
    axes = unit_axes(model)
    if not axes or len(split) == 0:
        return []
    tallies = {m: _Tally(name, type(m).__name__, axis) for m, (name, axis) in axes.items()}
    hooks = [m.register_forward_hook(_hook(tallies[m])) for m in axes]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        rows = min(max_samples, len(split))
        limit = -(-rows // batch_size)
        size = -(-rows // limit)  # equal batches that add up to ``rows`` (not whole batches)
        for batch in iterate(split, size, limit=limit):
            batch = batch.to(device)
            model(batch.x) if batch.lengths is None else model(batch.x, batch.lengths)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return [t.summary() for t in tallies.values() if t.positions or t.active is not None]


def _hook(tally: _Tally) -> Any:
    def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        tally.add(module, output)

    return record


# The activation check reads at most this share of the samples the run trains on (two
# eval-mode passes over 3% of them cost about 2% of training's forward and backward
# passes), and never fewer rows than CHECK_FLOOR: short runs get a short check.
CHECK_SHARE = 0.03
CHECK_FLOOR = 64


class ActivationHealth(Callback):
    """Dead and saturated units on the validation split, before and after training.

    Measured outside the training steps (two passes over at most ``max_samples``
    validation rows, fewer for a short run: :data:`CHECK_SHARE`), so it costs nothing
    per step. ``before`` is None for a resumed run (its start is not the initialisation).
    """

    def __init__(self, max_samples: int = 512) -> None:
        self.max_samples = max_samples
        self.before: list[dict[str, Any]] | None = None
        self.after: list[dict[str, Any]] | None = None

    def rows(self, trainer: Trainer) -> int:
        """Validation rows to read: ``max_samples``, or fewer if the run trains on few."""
        settings = trainer.settings
        try:
            n_train = len(trainer.bundle.train)
        except TypeError:  # a stream of unknown length: the configured number
            return self.max_samples
        per_epoch = batches_per_epoch(n_train, settings) * settings.batch_size
        planned = min(n_train, per_epoch) * settings.epochs
        return min(self.max_samples, max(CHECK_FLOOR, int(CHECK_SHARE * planned)))

    def _measure(self, trainer: Trainer) -> list[dict[str, Any]]:
        batch = max(64, trainer.settings.batch_size * 4)
        split = trainer.bundle.val
        return activation_health(trainer.base_model, split, self.rows(trainer), batch)

    def on_fit_start(self, trainer: Trainer, state: FitState) -> None:
        self.before = self._measure(trainer) if state.epoch == 0 else None

    def on_fit_end(self, trainer: Trainer, state: FitState) -> None:
        if state.outcome == "completed":
            self.after = self._measure(trainer)


def diagnostics_callbacks(settings: DiagnosticsSettings) -> list[Callback]:
    """The recorders a run gets from its ``diagnostics`` config (none when disabled)."""
    if not settings.enabled:
        return []
    callbacks: list[Callback] = []
    if settings.grad_every:
        callbacks.append(GradientNorms(settings.grad_every))
    if settings.activations:
        callbacks.append(ActivationHealth(settings.val_samples))
    return callbacks
