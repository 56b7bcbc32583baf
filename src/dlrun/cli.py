"""Command-line entry points; the only module that handles Hydra's DictConfig.

Start-up is kept light: this module imports Hydra and OmegaConf only. torch, the
models and the evaluator are imported after the config is composed and validated, so
``dlrun --help``, ``--cfg job`` and config errors answer in well under a second.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dlrun.config import config_dir, register_schema, validate
from dlrun.errors import UserError
from dlrun.rundir import claim_unique_dir, remove_if_unused, write_status
from dlrun.trust import check_replayed_overrides, read_saved_overrides


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


def run(cfg: DictConfig) -> float:
    """Validate, train, evaluate; returns the best monitored value (for sweepers).

    A single run reports a user error as one line and exits non-zero. Inside a sweep a
    failing job must not stop its siblings: it is recorded as ``failed`` in its
    ``status.json`` (the leaderboard shows the reason) and returns NaN, which sweepers
    treat as a failed trial.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    container: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    container["model_name"] = hydra_cfg.runtime.choices.get("model")
    container["summary"] = _summary(cfg)
    _share_cores_between_parallel_jobs(container, hydra_cfg)
    started = time.time()
    try:
        validate(container, choices=hydra_cfg.runtime.choices)
    except UserError as exc:
        if multirun:
            write_status(run_dir, "failed", reason=str(exc))
            print(f"dlrun: job failed: {exc}", file=sys.stderr)
            return math.nan
        remove_if_unused(run_dir)
        _fail(str(exc))

    from dlrun.display import make_console
    from dlrun.engine.interrupts import RunInterrupted
    from dlrun.evaluation.files import write_json
    from dlrun.runner import train_and_evaluate

    console = make_console()  # a pipe or CI log gets whole lines, not 80 columns
    write_status(run_dir, "running")
    try:
        if container["ensemble"]["bagging"]:  # N members, or member i of a swept bag
            from dlrun import ensembling

            member = container["ensemble"]["member"] is not None
            train = ensembling.train_member if member else ensembling.bag
            metrics = train(container, run_dir, console)
        elif container["eval"]["protocol"] == "holdout":
            metrics = train_and_evaluate(container, run_dir, console)
        else:
            from dlrun.validation import cross_validate

            metrics = cross_validate(container, run_dir, console)
    except RunInterrupted as exc:
        write_status(run_dir, "interrupted", reason=str(exc))
        print(f"dlrun: {exc}\nresume with: dlrun resume={run_dir}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (loading, evaluating)
        write_status(run_dir, "interrupted", reason="interrupted by the user (Ctrl-C)")
        print(f"dlrun: interrupted; partial results in {run_dir}", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        user_error = isinstance(exc, UserError)
        reason = str(exc) if user_error else f"{type(exc).__name__}: {exc}"
        write_status(run_dir, getattr(exc, "status", "failed"), reason=reason)
        if multirun:
            print(f"dlrun: job failed: {reason}", file=sys.stderr)
            return math.nan
        if not user_error:
            raise  # a bug: keep the traceback
        _fail(reason, code=1)
    write_json(run_dir / "metrics.json", metrics)  # now with the training summary
    train = metrics["train"]
    write_status(
        run_dir, "completed", epoch=train["epochs"], wall_seconds=round(time.time() - started, 3)
    )
    console.print(f"run directory: {run_dir}", highlight=False)
    best = train["best_value"]
    return math.nan if best is None else float(best)


def _share_cores_between_parallel_jobs(container: dict[str, Any], hydra_cfg: Any) -> None:
    """Give each of ``n_jobs`` parallel sweep jobs its share of the CPU cores.

    Without this every joblib worker starts torch with all cores and n_jobs x cores
    threads fight over the machine, which is slower than running the jobs one by one.
    """
    launcher = hydra_cfg.launcher
    n_jobs = launcher.get("n_jobs") if launcher is not None else None
    if container["trainer"]["num_threads"] is None and n_jobs and n_jobs != 1:
        cores = os.cpu_count() or 1
        jobs = cores if n_jobs < 0 else n_jobs
        container["trainer"]["num_threads"] = max(1, cores // jobs)


_register()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    return run(cfg)


def resume_arguments(argv: list[str]) -> list[str]:
    """Rewrite ``resume=<run_dir> [overrides]`` into the run's own saved overrides.

    The interrupted run is recomposed from ``<run_dir>/.hydra/overrides.yaml`` (so it is
    the same config), pointed back at its own directory, with any overrides given now
    (e.g. more ``trainer.epochs``) applied last.
    """
    given = [a for a in argv if a.startswith("resume=")]
    if not given:
        return argv
    run_dir = Path(given[-1].split("=", 1)[1]).expanduser()
    saved = run_dir / ".hydra" / "overrides.yaml"
    started = (run_dir / "checkpoints" / "last.pt").is_file() or any(run_dir.glob("fold_*/"))
    if not started or not saved.is_file():  # a k-fold run resumes from its fold_<i>/ dirs
        _fail(f"resume={run_dir}: not a dlrun run dir with checkpoints/last.pt to resume")
    status = (
        json.loads((run_dir / "status.json").read_text())
        if (run_dir / "status.json").is_file()
        else {}
    )
    if status.get("status") == "completed":
        _fail(f"resume={run_dir}: that run already completed; nothing to resume")
    replay = [
        o for o in read_saved_overrides(saved) if not o.startswith(("resume=", "hydra.run.dir="))
    ]
    check_replayed_overrides(replay, saved)  # a copied run dir is untrusted input
    rest = [a for a in argv if not a.startswith("resume=")]
    return [*map(str, replay), *rest, f"resume={run_dir}", f"hydra.run.dir={run_dir}"]


def main() -> None:
    """The ``dlrun`` console script (also each process of ``torchrun ... -m dlrun.cli``)."""
    from dlrun.engine.launch import finish_cli_process, worker_overrides
    from dlrun.overrides import check_command_line, one_line_errors

    try:
        with one_line_errors(task=run):
            sys.argv = [sys.argv[0], *resume_arguments(sys.argv[1:]), *worker_overrides()]
            check_command_line(sys.argv[1:])
            _hydra_main()
    except SystemExit as exc:
        finish_cli_process(exc.code)
        raise
    finish_cli_process(0)


if __name__ == "__main__":
    main()
