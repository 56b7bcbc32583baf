"""The peer for dlrun's default run: the same experiment written by hand with Lightning.

What a user who knows Lightning would write instead of ``dlrun``: LeNet-5 (dropout 0.1)
on scikit-learn's digits resized to 32x32 and standardised on the training split, a
stratified 70/15/15 split, AdamW (lr 2e-3, weight decay 0.01), label smoothing 0.1, a
linear warm-up (5%) then cosine schedule stepped per batch, batch 32, 20 epochs, a
validation pass each epoch, the best checkpoint by val_loss kept, then the test split
scored with that checkpoint. It prints the test accuracy and its wall time.

``make bench`` times it against ``dlrun`` as a whole process (imports included), since
that is what a user waits for. dlrun does more in the same run (a baseline, a bootstrap
interval, plots, a report, status and history files); the peer's extra work is only
Lightning's own (its logger and checkpoint).

    python scripts/lightning_peer.py [--epochs 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time

STARTED = time.perf_counter()

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402


def digits(seed: int, batch_size: int) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train/val/test loaders of the digits at 32x32, standardised on the training split."""
    raw = load_digits()
    index = np.arange(len(raw.target))
    rest, test = train_test_split(index, test_size=0.15, random_state=seed, stratify=raw.target)
    train, val = train_test_split(
        rest, test_size=0.15 / 0.85, random_state=seed + 1, stratify=raw.target[rest]
    )
    images = raw.images.astype(np.float32) / 16.0
    mean, std = images[train].mean(), images[train].std()
    x = torch.from_numpy((images - mean) / std).unsqueeze(1)
    x = nn.functional.interpolate(x, size=(32, 32), mode="bilinear")
    y = torch.from_numpy(raw.target.astype(np.int64))

    def loader(part: np.ndarray, shuffle: bool) -> DataLoader:
        return DataLoader(TensorDataset(x[part], y[part]), batch_size=batch_size, shuffle=shuffle)

    return loader(train, True), loader(val, False), loader(test, False)


class LeNet(L.LightningModule):
    """LeNet-5 with ReLU and dropout, trained as dlrun's default run trains it."""

    def __init__(self, total_steps: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.total_steps = total_steps
        self.net = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(dropout), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(120, 84), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(84, 10),
        )  # fmt: skip
        self.smoothed = nn.CrossEntropyLoss(label_smoothing=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = self.smoothed(self(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def _score(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{stage}_loss", nn.functional.cross_entropy(logits, y))
        self.log(f"{stage}_accuracy", (logits.argmax(1) == y).float().mean())

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        self._score(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        self._score(batch, "test")

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(self.parameters(), lr=2e-3, weight_decay=0.01)
        warm = round(0.05 * self.total_steps)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = min(1.0, (step - warm) / max(1, self.total_steps - warm))
            return 0.5 * (1 + math.cos(math.pi * progress))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="where Lightning writes (default: a temp dir)")
    args = parser.parse_args()
    L.seed_everything(args.seed, verbose=False)
    train, val, test = digits(args.seed, args.batch_size)
    model = LeNet(total_steps=args.epochs * len(train))
    out = args.out or tempfile.mkdtemp(prefix="lightning_peer_")
    best = L.pytorch.callbacks.ModelCheckpoint(monitor="val_loss", mode="min", save_last=True)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        default_root_dir=out,
        callbacks=[best],
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,
        log_every_n_steps=10,
        logger=L.pytorch.loggers.CSVLogger(out),
    )
    trainer.fit(model, train, val)
    (scores,) = trainer.test(model, test, ckpt_path="best", verbose=False)
    print(f"test_accuracy {scores['test_accuracy']:.4f} wall_s {time.perf_counter() - STARTED:.2f}")


if __name__ == "__main__":
    main()
