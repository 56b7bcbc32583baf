"""Run the ready experiments at full size and print the README's quality table.

    python scripts/quality.py [experiment ...]     (default: the README's set)

Each experiment runs as a user would run it (``dlrun experiment=<name>``) into
``outputs/quality/``; the table shows the headline test metric next to the baseline's,
the training time and the run dir. A benchmark of quality, not a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HEADLINE = {
    "lenet_digits": "accuracy",
    "resnet_digits": "accuracy",
    "mlp_breast_cancer": "roc_auc",
    "mlp_diabetes": "rmse",
    "lstm_sine": "rmse",
    "gru_sunspots": "rmse",
    "gru_waveforms": "accuracy",
    "cnn1d_text_classes": "accuracy",
    "mlp_multilabel": "f1_macro",
    "gpt_text": "loss",
}


def run(name: str, root: Path) -> dict:
    run_dir = root / name
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dlrun.cli", f"experiment={name}", f"hydra.run.dir={run_dir}",
         "trainer.progress=none"],
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if result.returncode != 0:
        return {"name": name, "error": result.stderr.strip().splitlines()[-1], "wall": wall}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"name": name, "metrics": metrics, "wall": wall, "dir": run_dir}


def main() -> None:
    names = sys.argv[1:] or list(HEADLINE)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    root = Path("outputs") / "quality" / stamp
    print("| experiment | metric | test | baseline | epochs | train s | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        out = run(name, root)
        if "error" in out:
            print(f"| {name} | failed: {out['error']} | | | | | {out['wall']:.0f} |")
            continue
        m = out["metrics"]
        key = HEADLINE.get(name, "loss")
        base = m.get("baseline", {}).get(key)
        base_cell = "" if base is None else f"{base:.4f}"
        print(
            f"| {name} | {key} | {m['test'][key]:.4f} | {base_cell} | "
            f"{m['train']['epochs']} | {m['train']['seconds']:.0f} | {out['wall']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
