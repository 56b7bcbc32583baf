"""How much does dlrun's trainer cost over a hand-written PyTorch loop?

Trains the same model on the same in-memory data, from the same initial weights, with
(a) dlrun's ``Trainer`` (history.csv and checkpoint callbacks on, progress off) and
(b) a minimal hand-written loop (shuffle, forward, loss, backward, step, one validation
pass per epoch), alternating a/b several times in one process so both see the same
machine state. Prints samples/s of each and the ratio of median epoch-loop times
(dlrun / hand-written; the target is <= 1.05) for the loop alone, and with the
per-epoch history.csv and checkpoint writes a real run does.

    python scripts/bench_overhead.py [--families mlp lenet] [--epochs 3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from dlrun import tasks
from dlrun.data.sklearn_sets import load_digits_flat, load_digits_images
from dlrun.data.spec import DataBundle
from dlrun.engine.callbacks import Checkpointer, HistoryCSV
from dlrun.engine.trainer import Trainer, TrainerSettings
from dlrun.models.lenet import LeNet5
from dlrun.models.mlp import MLP

FAMILIES = {
    "mlp": (load_digits_flat, lambda spec: MLP(spec, hidden=(256, 128))),
    "lenet": (load_digits_images, lambda spec: LeNet5(spec)),
}


def hand_written(model: torch.nn.Module, bundle: DataBundle, epochs: int, batch: int) -> float:
    """The loop a practitioner writes by hand; returns seconds."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    x, y = bundle.train.x, bundle.train.y
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            loss_fn(model(bundle.val.x), bundle.val.y).item()
    return time.perf_counter() - started


def with_dlrun(
    model: torch.nn.Module, bundle: DataBundle, epochs: int, batch: int, files: bool
) -> float:
    """The same work through dlrun's Trainer; ``files`` adds history.csv + checkpoints."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    settings = TrainerSettings(epochs=epochs, batch_size=batch, monitor="val_loss")
    with tempfile.TemporaryDirectory() as tmp:
        callbacks = (
            [HistoryCSV(Path(tmp) / "history.csv"), Checkpointer(Path(tmp))] if files else []
        )
        trainer = Trainer(
            model, bundle, opt, tasks.loss_fn(bundle.spec.task), settings, callbacks=callbacks
        )
        started = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    table = Table(title=f"dlrun vs hand-written loop (CPU, {torch.get_num_threads()} threads)")
    columns = ["family", "params", "hand samples/s", "dlrun samples/s", "loop ratio"]
    for col in [*columns, "ratio with files"]:
        table.add_column(col, justify="right")
    for name in args.families:
        load, make = FAMILIES[name]
        bundle = load(seed=0)
        torch.manual_seed(0)
        initial = make(bundle.spec)
        samples = len(bundle.train) * args.epochs
        hand_times, dlrun_times, file_times = [], [], []
        for _ in range(args.repeats + 1):  # the first round warms caches and is dropped
            hand_times.append(
                hand_written(copy.deepcopy(initial), bundle, args.epochs, args.batch_size)
            )
            dlrun_times.append(
                with_dlrun(copy.deepcopy(initial), bundle, args.epochs, args.batch_size, False)
            )
            file_times.append(
                with_dlrun(copy.deepcopy(initial), bundle, args.epochs, args.batch_size, True)
            )
        hand = statistics.median(hand_times[1:])
        ours = statistics.median(dlrun_times[1:])
        with_files = statistics.median(file_times[1:])
        params = sum(p.numel() for p in initial.parameters())
        table.add_row(
            name,
            f"{params:,}",
            f"{samples / hand:,.0f}",
            f"{samples / ours:,.0f}",
            f"{ours / hand:.3f}",
            f"{with_files / hand:.3f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
