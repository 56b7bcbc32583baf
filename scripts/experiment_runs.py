"""Shared by the experiment scripts: dlrun runs in-process, and a mean ± std table."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def run(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """One dlrun run in-process, composed as the CLI composes it, into ``run_dir`` (a
    run dir like the CLI's: ``.hydra/config.yaml`` is saved). Bagging runs bag."""
    from omegaconf import OmegaConf
    from rich.console import Console

    from dlrun.config import RunContext, to_run_config, validate
    from dlrun.overrides import compose_here
    from dlrun.runner import train_and_evaluate

    composed = compose_here(overrides)
    choices = dict(composed.hydra.runtime.choices)
    plain = OmegaConf.to_container(composed, resolve=False)
    plain.pop("hydra")
    saved = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(plain), resolve=True))
    cfg = to_run_config(saved)
    validate(cfg)
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(saved, run_dir / ".hydra" / "config.yaml")
    context = RunContext(model_name=str(choices.get("model") or "model"))
    console = Console(quiet=True)
    if cfg.ensemble.bagging:
        from dlrun.ensembling import bag

        return bag(cfg, run_dir, console, context)
    return train_and_evaluate(cfg, run_dir, console, context=context)


def table(title: str, results: dict[str, list[float]]) -> str:
    """Markdown: one row per arm, one column per seed, then mean ± std."""
    seeds = len(next(iter(results.values())))
    lines = [
        title,
        "",
        "| arm | " + " | ".join(f"seed {s}" for s in range(seeds)) + " | mean ± std |",
        "| --- |" + " --- |" * (seeds + 1),
    ]
    for arm, values in results.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        cells = " | ".join(f"{v:.4f}" for v in values)
        lines.append(f"| {arm} | {cells} | {statistics.mean(values):.4f} ± {spread:.4f} |")
    return "\n".join(lines)
