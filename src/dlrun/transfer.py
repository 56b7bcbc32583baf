"""Transfer learning: start from a trained run's weights and choose which of them train.

``model.init_from`` names a run dir (its ``checkpoints/best.pt``) or a ``.pt`` file.
Every tensor whose name and shape match the new model's is copied; the others keep
their fresh initialisation. The model's head (:func:`head_of`: the dense block on top
that ends in the output layer) is new when its labels mean something else: other class
names (digits 0-4 -> 5-9 has the same shapes and other classes), another task, or for
regression another dataset. The log and ``transfer.json`` name what was loaded and what
is new.

``model.freeze``, as the notes' feature extraction and fine-tuning:
- ``none``: every layer trains (fine-tuning);
- ``backbone``: the loaded layers are frozen, only the new ones train (feature
  extraction: the convolutional or recurrent base is reused, a new head learns);
- ``all_but_head``: only the head trains, also where base layers could not be loaded.
Frozen BatchNorm layers also keep their running statistics (inference mode, as Keras
does for ``trainable=False``). ``model.pretrained_lr`` multiplies the learning rate of
the loaded layers that still train (an optimizer parameter group), e.g. 0.1 to fine-
tune them gently while a new head learns at the full rate.

A resumed run reads ``transfer.json`` instead of loading the source again (its weights
come from ``last.pt``), so it rebuilds the same frozen set and parameter groups.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from dlrun.config import RunConfig
from dlrun.config import transfer_source as source_checkpoint
from dlrun.data.spec import DataSpec
from dlrun.errors import UserError
from dlrun.tasks import info

RECORD = "transfer.json"


def output_layer(model: nn.Module) -> str:
    """The name of the model's output layer: its last ``nn.Linear``."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise UserError("this model has no Linear output layer to start a new head from")
    return names[-1]


def head_of(model: nn.Module) -> str:
    """The model's head: the top-level block that holds the output layer (LeNet's dense
    ``head``, AlexNet's ``classifier``, ResNet's ``fc``, an RNN's ``head``), or the output
    layer alone when that block is the whole network (an MLP's ``net``).

    This is what the notes' feature extraction replaces: the convolutional (or
    recurrent) base is reused, the densely connected classifier on top is not.
    """
    output = output_layer(model)
    block = output.split(".")[0]
    total = sum(1 for _ in model.parameters())
    inside = sum(1 for name, _ in model.named_parameters() if _in_module(name, block))
    return output if inside == total else block


def prepare(cfg: RunConfig, model: nn.Module, spec: DataSpec, run_dir: Path, say: Any) -> Any:
    """Load, freeze and group ``model``'s parameters per ``cfg.model``; returns what
    the optimizer takes (``model.parameters()`` when nothing is transferred)."""
    settings = cfg.model or {}
    if not settings.get("init_from"):
        return model.parameters()
    head = head_of(model)
    if cfg.resume and (run_dir / RECORD).is_file():
        loaded = set(json.loads((run_dir / RECORD).read_text())["loaded"])
    else:
        loaded, lines = load_matching(model, spec, settings["init_from"], head)
        write_record(run_dir, settings, loaded, model, head)
        for line in lines:
            say(line)
    frozen = freeze(model, settings["freeze"], loaded, head)
    say(describe_freeze(model, settings, frozen))
    return param_groups(model, loaded, settings["pretrained_lr"], cfg.optimizer["lr"])


def load_matching(
    model: nn.Module, spec: DataSpec, init_from: str, head: str
) -> tuple[set[str], list[str]]:
    """Copy the source tensors that fit; returns their names and the log lines."""
    from dlrun.engine.checkpoint import load_checkpoint

    path = source_checkpoint(init_from)
    source = load_checkpoint(path)["model"]
    reason = _new_head_reason(path, spec)
    own = model.state_dict()
    fits = {
        name: tensor
        for name, tensor in source.items()
        if name in own and own[name].shape == tensor.shape
        and not (reason and _in_module(name, head))
    }  # fmt: skip
    if not fits:
        raise UserError(
            f"model.init_from={init_from}: none of its tensors fit this model (another "
            "model config?); layers match by name and shape"
        )
    model.load_state_dict(fits, strict=False)
    new = [name for name in own if name not in fits]
    lines = [f"init_from {path}: loaded {len(fits)} of {len(own)} tensors"]
    if new:
        shown = ", ".join(new[:6]) + (f", ... ({len(new)} in all)" if len(new) > 6 else "")
        lines.append(f"new (not loaded): {shown}")
    if reason:
        lines.append(f"new head {head}: {reason}")
    return set(fits), lines


def _new_head_reason(path: Path, spec: DataSpec) -> str:
    """Why the head must not be loaded ('' when its labels mean the same)."""
    from dlrun.data.contract import load_contract

    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    try:
        source = load_contract(run_dir)
    except UserError:
        source = None
    if source is None:
        return ""  # unknown labels: shapes decide
    old = source.spec
    if old.task != spec.task:
        return f"task {old.task} -> {spec.task}"
    if info(spec.task).classification and old.class_names != spec.class_names:
        return f"classes {_names(old.class_names)} -> {_names(spec.class_names)}"
    if info(spec.task).scaled and old.name != spec.name:
        return f"targets of {old.name} -> {spec.name}"
    return ""


def _names(names: tuple[str, ...]) -> str:
    return ",".join(names) if len(names) <= 6 else f"{','.join(names[:5])},... ({len(names)})"


def _in_module(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def freeze(model: nn.Module, how: str, loaded: set[str], head: str) -> set[str]:
    """Stop gradients per ``how``; frozen BatchNorms keep their statistics. Returns the
    names of the frozen parameters."""
    frozen = set()
    for name, param in model.named_parameters():
        stop = (how == "backbone" and name in loaded) or (
            how == "all_but_head" and not _in_module(name, head)
        )
        if stop:
            param.requires_grad_(False)
            frozen.add(name)
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = [f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)]
            stats_frozen = how != "none" and f"{name}.running_mean" in loaded
            if (params and all(p in frozen for p in params)) or (not params and stats_frozen):
                module.register_forward_pre_hook(_inference_mode)
    return frozen


def _inference_mode(module: nn.Module, _: Any) -> None:
    """A frozen BatchNorm normalises with its stored statistics, even in training."""
    module.training = False


def param_groups(
    model: nn.Module, loaded: set[str], factor: float, lr: float
) -> list[dict[str, Any]]:
    """The trainable parameters: new ones at ``lr``, loaded ones at ``lr * factor``."""
    new, pretrained = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (pretrained if name in loaded else new).append(param)
    groups = [{"params": new}] if new else []
    if pretrained:
        groups.append({"params": pretrained, "lr": lr * factor})
    if not groups:
        raise UserError("model.freeze leaves no parameter to train")
    return groups


def describe_freeze(model: nn.Module, settings: dict[str, Any], frozen: set[str]) -> str:
    total = sum(p.numel() for p in model.parameters())
    stopped = sum(p.numel() for n, p in model.named_parameters() if n in frozen)
    line = f"freeze={settings['freeze']}: {stopped:,} of {total:,} parameters frozen"
    if settings["pretrained_lr"] != 1.0:
        line += f"; loaded layers train at lr x {settings['pretrained_lr']:g}"
    return line


def write_record(
    run_dir: Path, settings: dict[str, Any], loaded: set[str], model: nn.Module, head: str
) -> None:
    from dlrun.engine import distributed
    from dlrun.rundir import write_json

    if not run_dir.is_dir() or not distributed.is_main():
        return
    own = list(model.state_dict())
    write_json(
        run_dir / RECORD,
        {
            "init_from": str(settings["init_from"]),
            "freeze": settings["freeze"],
            "pretrained_lr": settings["pretrained_lr"],
            "head": head,
            "loaded": [n for n in own if n in loaded],
            "new": [n for n in own if n not in loaded],
        },
    )
