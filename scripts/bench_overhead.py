"""How much does dlrun's trainer cost over a hand-written PyTorch loop?

For each family (mlp, lenet, resnet, lstm, gpt) the same model, from the same initial
weights, on the same in-memory data, is trained by
(a) a minimal hand-written loop: shuffle, slice, forward, loss, backward, step, and one
    validation pass per epoch, and
(b) dlrun's ``Trainer`` with the loop alone (no callbacks), with the diagnostics
    recorders every run has by default (per-layer gradient norms every 25 steps, the
    activation check before and after training), and with the per-epoch history.csv
    and checkpoint writes a real run does,
alternating a/b/b'/b'' several times in one process so all see the same machine state.
Prints samples/s, the ratio of median times (dlrun / hand-written; target <= 1.05),
what the diagnostics add to the loop (target <= 3%), the time to the first optimizer
step and the peak memory.

    python scripts/bench_overhead.py [--families mlp lenet] [--epochs 5] [--repeats 5]
                                     [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from dlrun import tasks
from dlrun.config import DiagnosticsSettings
from dlrun.data.sklearn_sets import load_digits_flat, load_digits_images
from dlrun.data.spec import DataBundle, Task
from dlrun.diagnostics.recorders import diagnostics_callbacks
from dlrun.engine.callbacks import Callback, Checkpointer, HistoryCSV
from dlrun.engine.trainer import Trainer, TrainerSettings
from dlrun.models.gpt import GPT
from dlrun.models.lenet import LeNet5
from dlrun.models.mlp import MLP
from dlrun.models.resnet import ResNet
from dlrun.models.rnn import LSTM


def _series(seed: int) -> DataBundle:
    from dlrun.data.series import load_sine

    return load_sine(seed=seed)


def _text(seed: int) -> DataBundle:
    from dlrun.data.text import load_text

    return load_text(seed=seed)


# family -> (loader, model factory, batches per epoch (None = all))
FAMILIES: dict[str, tuple[Callable, Callable, int | None]] = {
    "mlp": (load_digits_flat, lambda s: MLP(s, hidden=(256, 128)), None),
    "lenet": (load_digits_images, lambda s: LeNet5(s), None),
    "resnet": (load_digits_images, lambda s: ResNet(s, depth=18, width=16), 10),
    "lstm": (_series, lambda s: LSTM(s, hidden_size=64), None),
    "gpt": (_text, lambda s: GPT(s, n_layer=4, n_head=4, n_embd=128, block_size=64), 10),
}


def hand_loss(task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """What a practitioner writes: cross entropy or MSE, reshaped by hand."""
    if task in (Task.MULTICLASS, Task.LANGUAGE_MODEL):
        ce = torch.nn.CrossEntropyLoss()
        return lambda out, y: ce(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    mse = torch.nn.MSELoss()
    return lambda out, y: mse(out.reshape(y.shape), y)


def hand_written(
    model: torch.nn.Module, bundle: DataBundle, epochs: int, batch: int, limit: int | None
) -> tuple[float, float]:
    """The loop written by hand; returns (seconds, seconds to the first step)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = hand_loss(bundle.spec.task)
    gen = torch.Generator().manual_seed(0)
    x, y = bundle.train.x, bundle.train.y
    vx, vy = bundle.val.x, bundle.val.y
    steps = -(-len(x) // batch) if limit is None else limit
    started = time.perf_counter()
    first = 0.0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen).to(x.device)
        for i in range(steps):
            idx = perm[i * batch : (i + 1) * batch]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not first:
                first = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            vbatch = batch * 4
            vsteps = -(-len(vx) // vbatch) if limit is None else limit
            for i in range(vsteps):
                loss_fn(
                    model(vx[i * vbatch : (i + 1) * vbatch]), vy[i * vbatch : (i + 1) * vbatch]
                ).item()
    _sync(x.device)
    return time.perf_counter() - started, first


class _Timed(Callback):
    """Runs ``inner``'s hooks and adds up the seconds they take: what the diagnostics
    recorders cost, measured inside the run instead of as a difference of two noisy
    end-to-end times (on CPU their work is synchronous, so the clock sees all of it)."""

    HOOKS = ("on_fit_start", "on_epoch_start", "on_batch_end", "on_before_optimizer_step",
             "on_epoch_end", "on_checkpoint", "on_fit_end")  # fmt: skip

    def __init__(self, inner: Callback, clock: list[float]) -> None:
        for hook in self.HOOKS:  # only the hooks it has: a no-op costs nothing to time
            if getattr(type(inner), hook) is not getattr(Callback, hook):
                setattr(self, hook, self._timed(getattr(inner, hook), clock))

    @staticmethod
    def _timed(method: Callable, clock: list[float]) -> Callable:
        def run(*args: object) -> object:
            started = time.perf_counter()
            try:
                return method(*args)
            finally:
                clock[0] += time.perf_counter() - started

        return run


class _FirstStep(Callback):
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first = 0.0

    def on_batch_end(self, trainer, state, batch, loss) -> None:  # type: ignore[override]
        if not self.first:
            self.first = time.perf_counter() - self.started


def with_dlrun(
    model: torch.nn.Module,
    bundle: DataBundle,
    epochs: int,
    batch: int,
    limit: int | None,
    files: bool,
    diagnostics: bool = False,
    clock: list[float] | None = None,
) -> tuple[float, float]:
    """The same work through dlrun's Trainer; ``files`` adds history.csv + checkpoints,
    ``diagnostics`` the default diagnostics recorders (``configs/diagnostics/default``),
    whose own seconds are added to ``clock[0]``."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    settings = TrainerSettings(
        epochs=epochs, batch_size=batch, limit_batches=limit, monitor="val_loss"
    )
    with tempfile.TemporaryDirectory() as tmp:
        probe = _FirstStep()
        callbacks: list[Callback] = [probe]
        if files:
            callbacks += [HistoryCSV(Path(tmp)), Checkpointer(Path(tmp))]
        if diagnostics:
            clock = clock if clock is not None else [0.0]
            callbacks += [_Timed(cb, clock) for cb in diagnostics_callbacks(DiagnosticsSettings())]
        trainer = Trainer(
            model, bundle, opt, tasks.loss_fn(bundle.spec.task), settings, callbacks=callbacks
        )
        probe.started = started = time.perf_counter()
        trainer.fit()
        _sync(bundle.train.x.device)
        return time.perf_counter() - started, probe.first


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    title = f"dlrun vs a hand-written loop ({device}, {torch.get_num_threads()} CPU threads)"
    table = Table(title=title)
    columns = ["family", "params", "hand samples/s", "dlrun samples/s", "loop ratio",
               "with diagnostics", "diagnostics' own time", "ratio with files",
               "first step hand/dlrun ms", "peak MB"]  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right")
    for name in args.families:
        load, make, limit = FAMILIES[name]
        bundle = load(seed=0).to(device)
        torch.manual_seed(0)
        initial = make(bundle.spec).to(device)
        per_epoch = (
            len(bundle.train) if limit is None else min(len(bundle.train), limit * args.batch_size)
        )
        samples = per_epoch * args.epochs
        runs: dict[str, list[tuple[float, float]]] = {
            "hand": [], "loop": [], "diagnostics": [], "files": []
        }  # fmt: skip
        own: list[float] = []  # the recorders' share of each run with diagnostics
        for _ in range(args.repeats + 1):  # the first round warms caches and is dropped
            common = (bundle, args.epochs, args.batch_size, limit)
            runs["hand"].append(hand_written(copy.deepcopy(initial), *common))
            runs["loop"].append(with_dlrun(copy.deepcopy(initial), *common, False))
            clock = [0.0]
            diag = with_dlrun(copy.deepcopy(initial), *common, False, True, clock)
            runs["diagnostics"].append(diag)
            own.append(clock[0] / diag[0])
            runs["files"].append(with_dlrun(copy.deepcopy(initial), *common, True))
        med = {k: statistics.median(t for t, _ in v[1:]) for k, v in runs.items()}
        first = {k: statistics.median(f for _, f in v[1:]) for k, v in runs.items()}
        params = sum(p.numel() for p in initial.parameters())
        table.add_row(
            name, f"{params:,}", f"{samples / med['hand']:,.0f}", f"{samples / med['loop']:,.0f}",
            f"{med['loop'] / med['hand']:.3f}", f"{med['diagnostics'] / med['hand']:.3f}",
            f"{statistics.median(own[1:]):.1%}", f"{med['files'] / med['hand']:.3f}",
            f"{first['hand'] * 1e3:.0f} / {first['loop'] * 1e3:.0f}",
            f"{_peak_memory_mb(device):,.0f}",
        )  # fmt: skip
    console = Console()
    if not console.is_terminal:  # logs and pipes: room for every column
        console = Console(width=180)
    console.print(table)


if __name__ == "__main__":
    main()
