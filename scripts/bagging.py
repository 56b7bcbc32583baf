"""Does bagging pay off? A single model against a bag of N trained on bootstrap resamples.

    python scripts/bagging.py [--seeds 5] [--members 10] [--experiment mlp_bagging]
                              [--out DIR] [overrides ...]

For each seed: one run of experiment=mlp_bagging with ensemble.bagging=0 (the single
model, trained on the whole training split) and one with ensemble.bagging=N (N members
on bootstrap resamples, probabilities averaged). Same data split, epochs and settings.
Prints test accuracy and log-loss per seed and mean ± std (writes bagging.md in --out).
Extra arguments are dlrun overrides (e.g. model.hidden=[256] trainer.epochs=40).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from experiment_runs import run, table


def experiment(out: Path, seeds: int, members: int, extra: list[str], name: str) -> dict:
    common = [f"experiment={name}", "trainer.num_threads=1", "trainer.progress=none"]
    arms = {"single model": 0, f"bagging ({members} members)": members}
    results: dict[str, dict[str, list[float]]] = {}
    for seed in range(seeds):
        for arm, n in arms.items():
            name = f"{'single' if n == 0 else 'bag'}_{seed}"
            metrics = run([*common, f"ensemble.bagging={n}", f"seed={seed}", *extra], out / name)
            for key in ("accuracy", "rmse", "loss"):
                if key in metrics["test"]:
                    results.setdefault(key, {}).setdefault(arm, []).append(metrics["test"][key])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--experiment", default="mlp_bagging")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        results = experiment(out, args.seeds, args.members, extra, args.experiment)
        text = "\n\n".join(
            table(f"experiment={args.experiment} {' '.join(extra)}: test {key}", values)
            for key, values in results.items()
        )
        if args.out:
            (out / "bagging.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
