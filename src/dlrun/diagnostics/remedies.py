"""The study notes' remedies, written as overrides a user can paste.

Each diagnosis in :mod:`dlrun.diagnostics.verdicts` names remedies in the notes' words
and order; this module turns them into ``key=value`` overrides that fit the run at hand
(the model's own capacity key, the current learning rate divided by 10, ...) and into a
whole command line built from the run's own overrides. Pure: no torch, no files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Model keys that set capacity, in the order they are tried.
CAPACITY_KEYS = ("hidden", "hidden_size", "channels", "width", "n_embd", "fc")
# Activation choices whose gradients vanish or vanish outright.
SATURATING = ("sigmoid", "tanh")
# Families whose data a ResNet can take (image CNNs without skip connections).
PLAIN_CNNS = ("lenet", "alexnet", "googlenet", "separable")


@dataclass(frozen=True)
class Facts:
    """What a remedy needs to know about the run (from its config and choices)."""

    model: str = "model"
    activation: str = ""
    regularization: str = ""
    lr: float | None = None
    epochs: int = 1
    batch_size: int = 32
    grad_clip: float | None = None
    dropout: float = 0.0
    early_stopping: bool = False
    model_cfg: dict[str, Any] = field(default_factory=dict)
    overrides: tuple[str, ...] | None = None  # the run's own; None: unknown

    @classmethod
    def from_config(
        cls, cfg: dict[str, Any], choices: dict[str, str], overrides: list[str] | None
    ) -> Facts:
        """From a resolved run config, the group choices and the run's overrides."""
        reg = cfg.get("regularization") or {}
        trainer = cfg.get("trainer") or {}
        return cls(
            model=choices.get("model") or str(cfg.get("model_name") or "model"),
            activation=choices.get("activation", ""),
            regularization=choices.get("regularization", ""),
            lr=(cfg.get("optimizer") or {}).get("lr"),
            epochs=int(trainer.get("epochs") or 1),
            batch_size=int(trainer.get("batch_size") or 32),
            grad_clip=trainer.get("grad_clip"),
            dropout=float(reg.get("dropout") or 0.0),
            early_stopping=bool((reg.get("early_stopping") or {}).get("enabled")),
            model_cfg={k: v for k, v in (cfg.get("model") or {}).items() if k != "_target_"},
            overrides=None if overrides is None else tuple(overrides),
        )


def remedy(facts: Facts, why: str, *overrides: str) -> dict[str, Any]:
    """``{"why", "overrides", "command"}``; ``overrides`` empty for advice without one."""
    changes = " ".join(overrides)
    return {"why": why, "overrides": changes or None, "command": command(facts, overrides)}


def command(facts: Facts, changes: tuple[str, ...] | list[str]) -> str | None:
    """``dlrun <the run's overrides, with these changes>``; None without changes."""
    if not changes:
        return None
    if facts.overrides is None:
        return "dlrun " + " ".join(changes)
    return "dlrun " + " ".join(merge_overrides(list(facts.overrides), list(changes)))


def merge_overrides(original: list[str], changes: list[str]) -> list[str]:
    """``original`` with each key in ``changes`` replaced (or appended), in order.

    Hydra's own (``hydra.*``) and ``resume=`` are dropped: a remedy starts a new run.
    """
    changed = {c.split("=", 1)[0].lstrip("+~") for c in changes}
    kept = [
        o
        for o in original
        if o.split("=", 1)[0].lstrip("+~") not in changed
        and not o.lstrip("+~").startswith(("hydra.", "hydra/", "resume="))
    ]
    return kept + list(changes)


def scaled_lr(facts: Facts, factor: float) -> str | None:
    """``optimizer.lr=<lr x factor>`` rounded to two significant digits."""
    if not isinstance(facts.lr, int | float):
        return None
    return f"optimizer.lr={float(f'{facts.lr * factor:.2g}'):g}"


def capacity(facts: Facts, factor: float) -> str | None:
    """The model's capacity key scaled by ``factor`` (widths, hidden sizes), or None."""
    for key in CAPACITY_KEYS:
        value = facts.model_cfg.get(key)
        scaled = _scale(value, factor)
        if scaled is not None and scaled != value:
            return f"model.{key}={_format(scaled)}"
    return None


def _scale(value: Any, factor: float) -> Any:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return max(1, round(value * factor))
    if isinstance(value, float):
        return round(value * factor, 4)
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [max(1, round(v * factor)) for v in value]
    return None


def _format(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _keep(items: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    return [item for item in items if item is not None]


def _maybe(facts: Facts, why: str, change: str | None) -> dict[str, Any] | None:
    return remedy(facts, why, change) if change else None


def for_underfitting(facts: Facts) -> list[dict[str, Any]]:
    """Poor on training and validation data: more capacity, less regularization."""
    return _keep([
        _maybe(facts, "a bigger model (more capacity)", capacity(facts, 2)),
        remedy(facts, "remove regularization", "regularization=none")
        if facts.regularization not in ("none", "") or facts.dropout
        else None,
        remedy(facts, "train for more epochs", f"trainer.epochs={2 * facts.epochs}"),
        _maybe(facts, "a higher learning rate, if the loss barely moved", scaled_lr(facts, 3)),
        remedy(facts, "an activation whose gradient does not vanish", "activation=relu")
        if facts.activation in (*SATURATING, "step", "identity")
        else None,
    ])  # fmt: skip


def for_overfitting(facts: Facts) -> list[dict[str, Any]]:
    """Good on training data, not on new data: the notes' remedies in their order."""
    return _keep([
        remedy(facts, "more training data (the first remedy; no override can do it)"),
        remedy(facts, "weight regularization (L2)", "regularization=l2")
        if facts.regularization not in ("l2", "strong")
        else None,
        _maybe(facts, "a smaller model, which must focus on the prominent patterns",
               capacity(facts, 0.5)),
        remedy(facts, "dropout", "regularization=dropout", "regularization.dropout=0.3")
        if facts.dropout < 0.3
        else None,
        remedy(facts, "early stopping", "regularization=early_stopping")
        if not facts.early_stopping
        else None,
    ])  # fmt: skip


def for_not_converged(facts: Facts) -> list[dict[str, Any]]:
    """Still improving when training stopped."""
    return _keep([
        remedy(facts, "train for more epochs", f"trainer.epochs={2 * facts.epochs}"),
        _maybe(facts, "a higher learning rate (too small takes too long)", scaled_lr(facts, 3)),
    ])  # fmt: skip


def for_unstable(facts: Facts) -> list[dict[str, Any]]:
    """Loss oscillating or spiking: the learning rate overshoots."""
    return _keep([
        _maybe(facts, "a lower learning rate (too high overshoots and oscillates)",
               scaled_lr(facts, 0.1)),
        remedy(facts, "gradient clipping", "trainer.grad_clip=1.0")
        if facts.grad_clip is None
        else None,
        remedy(facts, "larger batches (less noisy gradients)",
               f"trainer.batch_size={2 * facts.batch_size}"),
    ])  # fmt: skip


def for_vanishing(facts: Facts) -> list[dict[str, Any]]:
    """Early layers get almost no gradient: the notes' fixes for vanishing gradients."""
    return _keep([
        remedy(facts, "ReLU, whose slope is 1 where it is active", "activation=relu")
        if facts.activation in (*SATURATING, "step")
        else None,
        remedy(facts, "residual (skip) connections", "model=resnet")
        if facts.model in PLAIN_CNNS
        else None,
        remedy(facts, "residual (skip) connections", "model.skip=true")
        if facts.model_cfg.get("skip") is False
        else None,
        remedy(facts, "an LSTM or GRU instead of a plain RNN", "model=gru")
        if facts.model == "rnn"
        else None,
        _normalisation(facts),
    ])  # fmt: skip


def for_exploding(facts: Facts) -> list[dict[str, Any]]:
    """Gradient norms spike or grow: clip, lower the learning rate, normalise."""
    return _keep([
        remedy(facts, "gradient clipping", "trainer.grad_clip=1.0")
        if facts.grad_clip is None
        else None,
        _maybe(facts, "a lower learning rate", scaled_lr(facts, 0.1)),
        _normalisation(facts),
        remedy(facts, "an LSTM or GRU instead of a plain RNN", "model=lstm")
        if facts.model == "rnn"
        else None,
    ])  # fmt: skip


def for_dying_relu(facts: Facts) -> list[dict[str, Any]]:
    """ReLU units that never activate: a negative slope keeps them alive."""
    return _keep([
        remedy(facts, "leaky ReLU (a small slope below 0)", "activation=leaky_relu"),
        remedy(facts, "PReLU (the slope below 0 is learned)", "activation=prelu"),
        _maybe(facts, "a lower learning rate (large steps push units below 0)",
               scaled_lr(facts, 0.1)),
        _normalisation(facts),
    ])  # fmt: skip


def for_saturation(facts: Facts) -> list[dict[str, Any]]:
    """Sigmoid/tanh units stuck in their flat tails."""
    return _keep([
        remedy(facts, "ReLU, which does not saturate for positive inputs", "activation=relu"),
        remedy(facts, "tanh rather than sigmoid (zero-centred)", "activation=tanh")
        if facts.activation == "sigmoid"
        else None,
        _normalisation(facts),
    ])  # fmt: skip


def _normalisation(facts: Facts) -> dict[str, Any] | None:
    if facts.model_cfg.get("batch_norm") is False:
        return remedy(facts, "normalisation (batch norm)", "model.batch_norm=true")
    return None
