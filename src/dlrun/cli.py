"""Command-line entry points; the only module that handles Hydra's DictConfig.

Start-up is kept light: this module imports Hydra and OmegaConf only. torch, the
models and the evaluator are imported after the config is composed and validated, so
``dlrun --help``, ``--cfg job`` and config errors answer in well under a second.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dlrun.config import register_schema, validate
from dlrun.errors import UserError
from dlrun.rundir import claim_unique_dir, remove_if_unused, write_json, write_status


def config_dir() -> str:
    """``configs/`` of a source checkout, or the copy packaged inside a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent.parent / "configs", here / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"dlrun's configs/ directory is missing (looked beside {here})")


def _register() -> None:
    register_schema()
    if not OmegaConf.has_resolver("dlrun_unique_dir"):
        OmegaConf.register_new_resolver("dlrun_unique_dir", claim_unique_dir)


def _fail(message: str, code: int = 2) -> None:
    print(f"dlrun: error: {message}", file=sys.stderr)
    sys.exit(code)


def _summary(cfg: DictConfig) -> str:
    """The run's choices in one line, for report.md and the terminal."""
    choices = HydraConfig.get().runtime.choices
    groups = ("model", "data", "activation", "optimizer", "scheduler", "regularization")
    parts = [f"{g}={choices.get(g)}" for g in groups]
    parts += [
        f"lr={cfg.optimizer.get('lr')}",
        f"epochs={cfg.trainer.epochs}",
        f"batch_size={cfg.trainer.batch_size}",
        f"seed={cfg.seed}",
    ]
    return " ".join(parts)


def run(cfg: DictConfig) -> float | None:
    """Validate, train, evaluate; returns the best monitored value (for sweepers)."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    container: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    container["model_name"] = hydra_cfg.runtime.choices.get("model")
    container["summary"] = _summary(cfg)
    try:
        validate(container)
    except UserError as exc:
        remove_if_unused(run_dir)
        if multirun:
            raise
        _fail(str(exc))

    from rich.console import Console

    from dlrun.runner import train_and_evaluate

    console = Console()
    write_status(run_dir, "running", epoch=0)
    try:
        metrics = train_and_evaluate(container, run_dir, console)
    except UserError as exc:
        write_status(run_dir, "failed", reason=str(exc))
        if multirun:
            raise
        _fail(str(exc), code=1)
    except KeyboardInterrupt:
        write_status(run_dir, "interrupted", reason="interrupted by the user (Ctrl-C)")
        print(f"dlrun: interrupted; partial results in {run_dir}", file=sys.stderr)
        sys.exit(130)
    except BaseException as exc:
        write_status(run_dir, "failed", reason=f"{type(exc).__name__}: {exc}")
        raise
    write_json(run_dir / "metrics.json", metrics)
    train = metrics["train"]
    write_status(run_dir, "completed", epoch=train["epochs"])
    console.print(f"run directory: {run_dir}", highlight=False)
    return train["best_value"]


_register()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    return run(cfg)


def main() -> None:
    """The ``dlrun`` console script."""
    _hydra_main()


if __name__ == "__main__":
    main()
