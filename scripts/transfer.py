"""Does transfer learning pay off? Digits 0-4 -> digits 5-9 with a few labelled examples.

    python scripts/transfer.py [--seeds 5] [--per-class 5] [--epochs 10] [--out DIR]

1. Pretrain LeNet-5 on digits 0-4 (all their training images, with augmentation):
   experiment=digits04_pretrain.
2. For each seed, train on digits 5-9 with --per-class training images per class,
   three ways with the same data, epochs and optimizer: from scratch, fine-tuning the
   pretrained weights (model.init_from, a new output layer, pretrained layers at
   lr x 0.1) and feature extraction (model.freeze=backbone: only the new output layer
   trains). Each is a normal dlrun run dir under --out.
3. Print test accuracy per seed and mean ± std, and write transfer.md in --out.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from experiment_runs import run, table

ARMS = {
    "scratch": [],
    "fine-tune": ["model.pretrained_lr=0.1"],
    "feature extraction": ["model.freeze=backbone"],
}


def experiment(out: Path, seeds: int, per_class: int, epochs: int, pretrain_epochs: int) -> dict:
    common = ["trainer.num_threads=1", "trainer.progress=none"]
    source = out / "pretrain"
    run(["experiment=digits04_pretrain", f"trainer.epochs={pretrain_epochs}", *common], source)
    results: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for seed in range(seeds):
        base = ["experiment=transfer_digits", f"data.train_per_class={per_class}",
                f"trainer.epochs={epochs}", f"seed={seed}", *common]  # fmt: skip
        for arm, extra in ARMS.items():
            transfer = [] if arm == "scratch" else [f"model.init_from={source}"]
            metrics = run([*base, *transfer, *extra], out / f"{arm.replace(' ', '_')}_{seed}")
            results[arm].append(metrics["test"]["accuracy"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        results = experiment(out, args.seeds, args.per_class, args.epochs, args.pretrain_epochs)
        title = (
            f"Digits 5-9, {args.per_class} training images per class, {args.epochs} epochs, "
            f"LeNet-5; test accuracy over {args.seeds} seeds (pretrained on digits 0-4)"
        )
        text = table(title, results)
        if args.out:
            (out / "transfer.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
