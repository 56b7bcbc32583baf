"""``dlrun-gradcheck``: numerical gradient checking of a model's backward pass.

    dlrun-gradcheck [dlrun overrides ...] [samples=4] [entries=8] [eps=1e-6] [seed=0]

The study notes' debugging technique: for a few entries of every parameter tensor,
compare the gradient backpropagation computes with the central difference
``(L(w + eps) - L(w - eps)) / 2 eps``, in float64 on a tiny batch, with dropout off
(eval mode) so the loss is a deterministic function of the weights. A wrong backward
(a custom op, a detached tensor, an in-place bug) shows up as a tensor whose relative
error is far above float64 round-off. Exit codes: 0 every tensor passes, 1 one fails,
2 bad arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dlrun.diagnostics.command import compose_run_config, reported, split_arguments

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dlrun.config import RunConfig

USAGE = (__doc__ or "").strip()
DEFAULTS: dict[str, Any] = {"samples": 4, "entries": 8, "eps": 1e-6, "seed": 0}
# Relative error: smooth float64 code reaches ~1e-8, a near-kink of a deep ReLU net ~1e-4
# (CS231n: "1e-4 is usually okay for objectives with kinks"), a wrong backward ~1e-1.
TOLERANCE = 1e-3
KINK = 1e-2  # one-sided slopes this far apart: the entry is on a kink and is skipped


@dataclass
class TensorCheck:
    """One parameter tensor: the worst relative error over the entries checked."""

    name: str
    shape: tuple[int, ...]
    checked: int
    kinks: int  # entries skipped: the loss bends there (a ReLU or max switching), see below
    max_error: float
    analytic: float  # the analytic and numerical gradient at the worst entry
    numerical: float

    @property
    def passed(self) -> bool:
        return self.max_error <= TOLERANCE


def relative_error(analytic: float, numerical: float) -> float:
    """``|a - n| / max(|a| + |n|, 1e-5)``: a gradient near zero is judged absolutely,
    since the round-off of a float64 difference (~1e-10) is then most of its value."""
    return abs(analytic - numerical) / max(abs(analytic) + abs(numerical), 1e-5)


def check_gradients(
    model: nn.Module,
    loss_of: Callable[[nn.Module], torch.Tensor],
    entries: int = 8,
    eps: float = 1e-6,
    seed: int = 0,
) -> list[TensorCheck]:
    """Compare backprop with central differences on ``entries`` random entries of each
    trainable tensor. ``loss_of(model)`` must be deterministic (call it in eval mode,
    float64). Parameters without a gradient path are checked too: their analytic
    gradient counts as zero, so a wrongly detached layer fails instead of hiding."""
    import torch

    model.zero_grad(set_to_none=True)
    base = loss_of(model)
    base.backward()
    at = float(base.detach())
    generator = torch.Generator().manual_seed(seed)
    results = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            grad = param.grad if param.grad is not None else torch.zeros_like(param)
            flat, flat_grad = param.view(-1), grad.reshape(-1)
            picks = torch.randperm(flat.numel(), generator=generator)[:entries].tolist()
            worst, kinks = (0.0, 0.0, 0.0), 0
            for i in picks:
                numerical, kink = _central_difference(model, loss_of, flat, i, eps, at)
                kinks += kink
                analytic = float(flat_grad[i])
                error = 0.0 if kink else relative_error(analytic, numerical)
                if error >= worst[0]:
                    worst = (error, analytic, numerical)
            results.append(TensorCheck(name, tuple(param.shape), len(picks), kinks, *worst))
    return results


def _central_difference(
    model: nn.Module, loss_of: Callable, flat: torch.Tensor, i: int, eps: float, at: float
) -> tuple[float, bool]:
    """The central difference at entry ``i``, and whether the entry sits on a kink: the
    one-sided slopes disagree (CS231n's "kinks in the objective"), so a ReLU or a max
    switched inside ``[w - eps, w + eps]`` and no difference there says anything."""
    original = float(flat[i])
    flat[i] = original + eps
    plus = float(loss_of(model))
    flat[i] = original - eps
    minus = float(loss_of(model))
    flat[i] = original
    kink = relative_error((plus - at) / eps, (at - minus) / eps) > KINK
    return (plus - minus) / (2 * eps), kink


def gradcheck_run(
    cfg: RunConfig, samples: int, entries: int, eps: float, seed: int, model_name: str = "model"
) -> list[TensorCheck]:
    """Build the run's model and data as ``dlrun`` would (CPU, float64) and check it."""
    from dataclasses import replace

    import torch

    from dlrun import tasks
    from dlrun.runner import build

    cfg = replace(cfg, trainer=replace(cfg.trainer, device="cpu"))
    exp = build(cfg, model_name=model_name)
    model = exp.model.double().eval()
    batch = exp.bundle.train.subset(torch.arange(min(samples, len(exp.bundle.train))))
    x = batch.x.double() if batch.x.is_floating_point() else batch.x
    y = batch.y.double() if batch.y.is_floating_point() else batch.y
    loss_fn = tasks.loss_fn(exp.bundle.spec.task)

    def loss_of(m: nn.Module) -> torch.Tensor:
        out = m(x) if batch.lengths is None else m(x, batch.lengths)
        return loss_fn(out, y)

    return check_gradients(model, loss_of, entries, eps, seed)


def format_results(results: list[TensorCheck]) -> str:
    """One line per tensor and a verdict line, as the terminal shows them."""
    width = max(len(r.name) for r in results)
    lines = [f"{'parameter':<{width}}  {'shape':<18} {'rel. error':>10}  result"]
    for r in results:
        shape = "x".join(map(str, r.shape)) or "scalar"
        mark = (
            "ok" if r.passed else f"FAIL (backprop {r.analytic:.6g}, numerical {r.numerical:.6g})"
        )
        lines.append(f"{r.name:<{width}}  {shape:<18} {r.max_error:>10.1e}  {mark}")
    kinks = sum(r.kinks for r in results)
    if kinks:
        lines.append(
            f"({kinks} entries on a kink of ReLU/max skipped: no difference is exact there)"
        )
    failed = [r.name for r in results if not r.passed]
    if failed:
        lines.append(f"FAILED: {len(failed)} of {len(results)} tensors ({', '.join(failed[:5])})")
    else:
        lines.append(f"PASSED: {len(results)} tensors, every relative error <= {TOLERANCE:.0e}")
    return "\n".join(lines)


def main() -> None:
    prog = "dlrun-gradcheck"
    args, overrides = split_arguments(sys.argv[1:], DEFAULTS, USAGE, prog)
    with reported(prog):
        cfg, names = compose_run_config(overrides)
        results = gradcheck_run(cfg, args["samples"], args["entries"], args["eps"], args["seed"],
                                names.model_name)  # fmt: skip
        print(format_results(results))
    sys.exit(0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    main()
