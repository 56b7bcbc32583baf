"""``dlrun-lrfind``: a learning-rate range test, the first thing to run on a new model.

    dlrun-lrfind [dlrun overrides ...] [start_lr=1e-7] [end_lr=10] [steps=100] [out=DIR]

Trains a copy of the run's model with the run's optimizer for ``steps`` batches while
the learning rate grows exponentially from ``start_lr`` to ``end_lr``, and records the
loss at each (smoothed, as in Smith 2017 and fastai). The loss first stays flat (lr too
low), then falls (the useful range), then blows up (too high); the test stops at the
blow-up. The suggestion is the lr where the smoothed loss falls fastest, a little below
the minimum, which is where fastai's ``lr_find`` points too. Writes ``lr_find.png`` and
``lr_find.json`` to ``out`` (default ``outputs/lrfind/<time>_<model>_<data>``) and prints
the suggested override. Exit codes: 0 done, 2 bad arguments, 130 interrupted.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.diagnostics.command import compose_run_config, reported, run_label, split_arguments
from dlrun.errors import UserError

if TYPE_CHECKING:
    from dlrun.config import RunConfig, RunContext
    from dlrun.runner import Setup

USAGE = (__doc__ or "").strip()
DEFAULTS: dict[str, Any] = {"start_lr": 1e-7, "end_lr": 10.0, "steps": 100, "out": ""}
SMOOTHING = 0.05  # exponential moving average weight of the newest loss (fastai: 0.02)
DIVERGED = 4.0  # stop once the smoothed loss is this many times its best


def lr_schedule(start: float, end: float, steps: int) -> list[float]:
    """``steps`` learning rates growing geometrically from ``start`` to ``end``."""
    if not 0 < start < end:
        raise UserError(f"start_lr={start} and end_lr={end}: need 0 < start_lr < end_lr")
    if steps < 5:
        raise UserError(f"steps={steps} is too few for a range test; use at least 5")
    ratio = (end / start) ** (1 / (steps - 1))
    return [start * ratio**i for i in range(steps)]


def range_test(exp: Setup, cfg: RunConfig, lrs: list[float]) -> dict[str, list]:
    """Train a copy of ``exp.model`` one batch per lr; the smoothed loss per lr tried."""
    import copy

    import torch

    from dlrun import tasks
    from dlrun.data.batches import iterate
    from dlrun.runner import instantiate

    model = copy.deepcopy(exp.model).train()
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    loss_fn = tasks.loss_fn(exp.bundle.spec.task)
    generator = torch.Generator().manual_seed(cfg.seed)
    batches = _endless(exp.bundle.train, cfg.trainer.batch_size, generator, iterate)
    tried, losses, raw, average = [], [], [], 0.0
    for i, lr in enumerate(lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = next(batches)
        out = model(batch.x) if batch.lengths is None else model(batch.x, batch.lengths)
        loss = loss_fn(out, batch.y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        average = SMOOTHING * value + (1 - SMOOTHING) * average
        smooth = average / (1 - (1 - SMOOTHING) ** (i + 1))  # bias-corrected, as Adam
        tried.append(lr)
        raw.append(value)
        losses.append(smooth)
        if not math.isfinite(smooth) or smooth > DIVERGED * min(losses):
            break
    return {"lr": tried, "loss": losses, "raw_loss": raw}


def _endless(split: Any, batch_size: int, generator: Any, iterate: Any) -> Any:
    """Shuffled batches, epoch after epoch, for as many steps as the test wants."""
    while True:
        yield from iterate(split, batch_size, shuffle=True, generator=generator, drop_last=True)


def suggest(lrs: list[float], losses: list[float]) -> float | None:
    """The lr where the smoothed loss falls fastest per log-lr step, searched only up to
    the loss's minimum (past it the loss rises: too high). None when it never falls."""
    finite = [(lr, v) for lr, v in zip(lrs, losses, strict=True) if math.isfinite(v)]
    if len(finite) < 3:
        return None
    best = min(range(len(finite)), key=lambda i: finite[i][1])
    if best < 2 or finite[best][1] >= finite[0][1]:
        return None
    slopes = [(finite[i + 1][1] - finite[i - 1][1], i) for i in range(1, best)]
    return finite[min(slopes)[1]][0]


def plot(path: Path, result: dict[str, Any]) -> None:
    """Loss against lr on a log axis, the suggestion marked."""
    from dlrun.evaluation.plots import new_figure

    fig = new_figure(7, 4.5, left=0.9, bottom=0.8)
    ax = fig.subplots()
    ax.plot(result["lr"], result["raw_loss"], color="lightgrey", lw=0.8, label="loss per batch")
    ax.plot(result["lr"], result["loss"], color="C0", lw=1.8, label="smoothed loss")
    if result["suggested_lr"] is not None:
        ax.axvline(result["suggested_lr"], color="C3", ls="--",
                   label=f"suggested optimizer.lr={result['suggested_lr']:.2g}")  # fmt: skip
    top = max(result["loss"][0] * 1.5, min(result["loss"]) * 2)
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss",
           ylim=(min(0.0, min(result["loss"])), top), title="Learning-rate range test")  # fmt: skip
    ax.legend(fontsize=8)
    fig.savefig(path)


def output_dir(out: str, cfg: RunConfig, names: RunContext) -> Path:
    """``out`` if given (must not hold files already), else a new timestamped folder."""
    if out:
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise UserError(f"out={out} already holds files; name a new or empty folder")
        return path
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    base = Path(cfg.paths.outputs) / "lrfind" / f"{stamp}_{run_label(names)}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}_{n}")
    return path


def find_lr(cfg: RunConfig, names: RunContext, args: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """Run the test for ``cfg``; the result (also written as JSON) and the folder."""
    from dlrun.evaluation.files import write_json
    from dlrun.runner import build

    lrs = lr_schedule(args["start_lr"], args["end_lr"], args["steps"])
    out = output_dir(args["out"], cfg, names)
    exp = build(cfg, model_name=names.model_name)
    result: dict[str, Any] = range_test(exp, cfg, lrs)
    result["suggested_lr"] = suggest(result["lr"], result["loss"])
    result["optimizer"] = (cfg.optimizer or {}).get("_target_")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "lr_find.json", result)
    plot(out / "lr_find.png", result)
    return result, out


def main() -> None:
    prog = "dlrun-lrfind"
    args, overrides = split_arguments(sys.argv[1:], DEFAULTS, USAGE, prog)
    with reported(prog):
        cfg, names = compose_run_config(overrides)
        result, out = find_lr(cfg, names, args)
        lr = result["suggested_lr"]
        tried = f"{len(result['lr'])} steps, lr {result['lr'][0]:.1e} to {result['lr'][-1]:.1e}"
        if lr is None:
            print(f"no lr made the loss fall ({tried}); try a wider range (end_lr=)")
        else:
            print(f"suggested: optimizer.lr={lr:.2g}   ({tried})")
        print(f"plot: {out / 'lr_find.png'}")


if __name__ == "__main__":
    main()
