"""Command-line entry points; the only module that handles Hydra's DictConfig.

Importing this module costs only the standard library: Hydra is imported inside
:func:`main`, so a Ctrl-C even during start-up ends with one line, not a traceback.
torch, the models and the evaluator are imported after the config is composed and
validated, so ``dlrun --help``, ``--cfg job`` and config errors answer in well under a
second.

Exit codes: 0 done, 2 a usage or config error (nothing was written), 1 a run that
failed (its status.json says why), 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from dlrun import hydra_shortcuts, rundir, startup_gc, sweepdir
from dlrun.engine import interrupts
from dlrun.errors import UserError, os_error_line, write_error

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from dlrun.config import RunConfig, RunContext

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


def config_dir() -> str:
    """``configs/`` of a source checkout or a wheel (:func:`dlrun.config.config_dir`).

    Imported on call: this module's own import must cost only the standard library.
    """
    from dlrun.config import config_dir as find

    return find()


def _register() -> None:
    """The config schema and dlrun's resolvers, before Hydra composes anything."""
    from dlrun.config import register_schema
    from dlrun.hydra_callbacks import register_resolvers

    register_schema()
    register_resolvers()


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    print(f"dlrun: error: {message}", file=sys.stderr)
    sys.exit(code)


def _summary(cfg: DictConfig) -> str:
    """The run's choices in one line, for report.md and the terminal."""
    from hydra.core.hydra_config import HydraConfig

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


@dataclass
class _Job:
    """One run, or one job of a sweep, as the task function sees it."""

    run_dir: Path
    multirun: bool
    cfg: RunConfig  # the composed config, typed (dlrun.config.to_run_config)
    context: RunContext  # names and the status.json owner, for the run
    identity: dict[str, Any]  # pid, hostname, started_at of this attempt
    choices: dict[str, Any]  # the config group options Hydra picked (model=..., ...)


def run(cfg: DictConfig) -> float:
    """Validate, train, evaluate; returns the best monitored value (for sweepers).

    A single run reports a user error as one line and exits non-zero. Inside a sweep a
    failing job must not stop its siblings: it is recorded as ``failed`` in its
    ``status.json`` (the leaderboard shows the reason) and returns NaN, which sweepers
    treat as a failed trial. A job finished by an earlier run of the same sweep is not
    run again (:mod:`dlrun.sweepdir`).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    plan = sweepdir.plan_for(output_dir) if multirun else None
    if plan is not None and plan.kind == sweepdir.SKIP:
        return _skipped(plan)
    job = _job(cfg, plan.job_dir if plan else output_dir, multirun, hydra_cfg)
    if plan is not None and plan.kind == sweepdir.RESUME:
        job.cfg.resume = str(job.run_dir)
    if plan is not None and plan.kind == sweepdir.RETRY and plan.kept_in is not None:
        kept = plan.kept_in.relative_to(job.run_dir)
        print(f"{job.run_dir.name}: {plan.earlier} earlier, runs again ({kept}/ keeps that try)")
    try:
        return _run(job)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM outside the training loop
        status = rundir.read_status(job.run_dir) or {}
        when = f"after epoch {status.get('epoch')}" if _training_started(job) else "while starting"
        _interrupted(job, f"interrupted ({interrupts.cause(stop)}) {when}")


def _job(cfg: DictConfig, run_dir: Path, multirun: bool, hydra_cfg: Any) -> _Job:
    from dlrun.config import RunContext, to_run_config

    typed = to_run_config(cfg)
    choices = dict(hydra_cfg.runtime.choices)
    identity = rundir.process_identity()
    # The training process writes status.json "running" with the identity of this one
    # (see dlrun.engine.callbacks.StatusHeartbeat); that is also how a refusal is told
    # from a failure.
    context = RunContext(
        model_name=str(choices.get("model") or "model"),
        data_name=str(choices.get("data") or "data"),
        summary=_summary(cfg),
        status_dir=str(run_dir),
        identity=dict(identity),
    )
    _share_cores_between_parallel_jobs(typed, hydra_cfg)
    return _Job(run_dir, multirun, typed, context, identity, choices)


def _run(job: _Job) -> float:
    from dlrun.config import validate

    started = time.time()
    archive: Path | None = None
    try:
        validate(job.cfg, choices=job.choices)
        archive = _continue_completed(job)
        metrics = _train(job)
        from dlrun.evaluation.files import write_json

        write_json(job.run_dir / "metrics.json", metrics)  # now with the training summary
        train = metrics["train"]
        seconds = round(time.time() - started, 3)
        _status(job, "completed", epoch=train["epochs"], wall_seconds=seconds)
    except Exception as exc:
        return _failed(job, exc, archive)
    print(f"run directory: {job.run_dir}", flush=True)
    best = train["best_value"]
    return math.nan if best is None else float(best)


def _train(job: _Job) -> dict[str, Any]:
    from dlrun.display import make_console

    console = make_console()  # a pipe or CI log gets whole lines, not 80 columns
    if job.cfg.ensemble.bagging:  # N members, or member i of a swept bag
        from dlrun import ensembling

        member = job.cfg.ensemble.member is not None
        train = ensembling.train_member if member else ensembling.bag
        return train(job.cfg, job.run_dir, console, context=job.context)
    if job.cfg.eval.protocol == "holdout":
        from dlrun.runner import train_and_evaluate

        return train_and_evaluate(job.cfg, job.run_dir, console, context=job.context)
    from dlrun.crossval import cross_validate

    return cross_validate(job.cfg, job.run_dir, console, job.context)


def _continue_completed(job: _Job) -> Path | None:
    """Training a completed run further: keep its results in ``previous/epoch_<N>/``.

    ``resume_arguments`` already checked that more epochs were asked for.
    """
    status = rundir.read_status(job.run_dir) if job.cfg.resume else None
    if not status or status.get("status") != "completed":
        return None
    job.context.continuing = True
    archive = rundir.archive_results(job.run_dir, int(status.get("epoch") or 0))
    if archive is not None:
        kept = archive.relative_to(job.run_dir)
        print(f"continuing a completed run; its results so far are kept in {kept}/", flush=True)
    return archive


def _training_started(job: _Job) -> bool:
    """Whether this attempt got as far as training: its status.json carries our identity."""
    status = rundir.read_status(job.run_dir) or {}
    return all(status.get(key) == value for key, value in job.identity.items())


def _failed(job: _Job, exc: Exception, archive: Path | None) -> float:
    """Record and report a run that stopped with an exception (see :func:`run`).

    Before training started it is a *refusal*: a single run leaves nothing behind
    (exit 2 for a user error); after, the run dir keeps its files and says ``failed``
    (exit 1). A full disk or a read-only folder is a user error with its own wording;
    anything else is a bug and keeps its traceback.
    """
    from dlrun.engine.interrupts import RunInterrupted

    if isinstance(exc, RunInterrupted):
        _interrupted(job, str(exc))
    refused_write = write_error(exc)
    if not isinstance(exc, UserError) and refused_write is None:
        _status(job, "failed", f"{type(exc).__name__}: {exc}")
        if job.multirun:
            print(f"dlrun: job failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return math.nan
        raise exc  # a bug: keep the traceback
    reason = os_error_line(refused_write, job.run_dir) if refused_write else str(exc)
    started = _training_started(job)
    if not started and archive is not None:
        rundir.restore_results(archive, job.run_dir)
    if job.multirun:
        extra = {} if started else {"refused": True}
        status = getattr(exc, "status", "failed")
        _status(job, status, reason, **extra)
        # a pruned trial is a search doing its job, not a failure ("trial 3 pruned at ...")
        said = (
            reason if status == "pruned" else f"job {'failed' if started else 'refused'}: {reason}"
        )
        print(f"dlrun: {said}", file=sys.stderr)
        return math.nan
    if started:
        _status(job, getattr(exc, "status", "failed"), reason)
        _fail(reason, EXIT_FAILED)
    rundir.discard(job.run_dir)
    _fail(reason, EXIT_USAGE if refused_write is None else EXIT_FAILED)


def _interrupted(job: _Job, message: str) -> NoReturn:
    """status.json ``interrupted``, one line, exit 130; a second signal is ignored meanwhile."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _status(job, "interrupted", message)
    if (job.run_dir / "checkpoints" / "last.pt").is_file():
        if job.multirun:
            sweep = job.run_dir.parent
            tail = f"; run the same sweep with hydra.sweep.dir={sweep} to resume it"
        else:
            tail = f"; resume with: dlrun resume={job.run_dir}"
    else:
        tail = f"; nothing was trained yet ({job.run_dir})"
    print(f"dlrun: {message}{tail}", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


def _status(job: _Job, status: str, reason: str = "", **extra: Any) -> None:
    """Write status.json if the disk lets us (the one line printed says the rest)."""
    with contextlib.suppress(OSError):
        rundir.write_status(job.run_dir, status, reason=reason, **job.identity, **extra)


def _skipped(plan: sweepdir.JobPlan) -> float:
    """A job an earlier run of this sweep finished: report it from its saved metrics."""
    sweepdir.drop_scratch(plan)
    train = rundir.read_json_dict(plan.job_dir / "metrics.json").get("train", {})
    best, monitor = train.get("best_value"), train.get("monitor", "best")
    shown = "" if best is None else f" (best {monitor} {best:.4g})"
    print(f"{plan.job_dir.name}: {plan.earlier} earlier, skipped{shown}", flush=True)
    return math.nan if best is None else float(best)


def _share_cores_between_parallel_jobs(cfg: RunConfig, hydra_cfg: Any) -> None:
    """Give each of ``n_jobs`` parallel sweep jobs its share of the CPU cores.

    Without this every joblib worker starts torch with all cores and n_jobs x cores
    threads fight over the machine, which is slower than running the jobs one by one.
    """
    launcher = hydra_cfg.launcher
    n_jobs = launcher.get("n_jobs") if launcher is not None else None
    if cfg.trainer.num_threads is None and n_jobs and n_jobs != 1:
        cores = os.cpu_count() or 1
        jobs = cores if n_jobs < 0 else n_jobs
        cfg.trainer.num_threads = max(1, cores // jobs)


def _hydra_app() -> Callable[[], Any]:
    import hydra

    _register()
    return hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")(run)


def _data_paths_from(run_dir: Path, overrides: list[str]) -> list[str]:
    """Relative ``data.root=``/``data.path=``/... overrides made absolute against the
    folder the run was started from, so ``resume=`` works from any folder."""
    from dlrun.restore import DATA_PATH_KEYS, absolute_data_paths, launch_dir

    base, out = launch_dir(run_dir), []
    for override in overrides:
        key, _, value = override.partition("=")
        name = key.lstrip("+").removeprefix("data.")
        if key.lstrip("+") == f"data.{name}" and name in DATA_PATH_KEYS and "${" not in value:
            value = absolute_data_paths({name: value}, base)[name]
            override = f"{key}={value}"
        out.append(override)
    return out


def resume_arguments(argv: list[str]) -> list[str]:
    """Rewrite ``resume=<run_dir> [overrides]`` into the run's own saved overrides.

    The run is recomposed from ``<run_dir>/.hydra/overrides.yaml`` (so it is the same
    config), pointed back at its own directory, with any overrides given now (e.g. more
    ``trainer.epochs``) applied last. Refused, in one line: a run still alive, a run with
    no checkpoint yet, and a completed run not given more epochs than it trained.
    """
    given = [a for a in argv if a.startswith("resume=")]
    if not given:
        return argv
    run_dir = Path(given[-1].split("=", 1)[1]).expanduser()
    rest = [a for a in argv if not a.startswith("resume=")]
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        _fail(f"resume={run_dir}: not a dlrun run dir with checkpoints/last.pt to resume")
    _check_resumable(run_dir, rest)
    from dlrun.trust import check_replayed_overrides, read_saved_overrides

    replay = [
        o for o in read_saved_overrides(saved) if not o.startswith(("resume=", "hydra.run.dir="))
    ]
    check_replayed_overrides(replay, saved)  # a copied run dir is untrusted input
    replay = _data_paths_from(run_dir, replay)
    return [*replay, *rest, f"resume={run_dir}", f"hydra.run.dir={run_dir}"]


def _check_resumable(run_dir: Path, rest: list[str]) -> None:
    status = rundir.run_status(run_dir) or {}
    if status.get("status") == "running":  # alive: run_status says "interrupted" if not
        _fail(
            f"resume={run_dir}: that run is still running (pid {status.get('pid')} on "
            f"{status.get('hostname')}, last heartbeat {status.get('heartbeat')}); "
            "stop it first (Ctrl-C), then resume"
        )
    started = (
        (run_dir / "checkpoints" / "last.pt").is_file()
        or any(run_dir.glob("fold_*/"))
        or any(run_dir.glob("member_*/checkpoints/last.pt"))
    )
    if not started:  # a k-fold run resumes from its fold_<i>/ dirs, a bag from member_<i>/
        _fail(
            f"resume={run_dir}: no checkpoints/last.pt: the run stopped before its first "
            "epoch was saved; start it again instead"
        )
    if status.get("status") != "completed":
        return
    done = int(status.get("epoch") or 0)
    asked = [a.split("=", 1)[1] for a in rest if a.startswith("trainer.epochs=")]
    if asked and asked[-1].isdigit() and int(asked[-1]) > done:
        return  # train a completed run further, like Keras' initial_epoch
    train = rundir.read_json_dict(run_dir / "metrics.json").get("train")
    stop = train.get("stop_reason") if isinstance(train, dict) else None
    how = f"{stop}, after epoch {done}" if stop else f"{done} of {done} epochs trained"
    _fail(
        f"resume={run_dir}: that run already completed ({how}); to train it further, "
        f"give more epochs, e.g. trainer.epochs={2 * done or 1}"
    )


def _no_group(code: int | str | None) -> None:
    """What ends a process that never got as far as importing the launcher."""


def main() -> None:
    """The ``dlrun`` console script (also each process of ``torchrun ... -m dlrun.cli``).

    Ctrl-C or SIGTERM at any moment ends with one line and exit 130: inside a run,
    :func:`run` records the run as interrupted; before it (imports, config composition)
    nothing was trained, and a run dir already made says ``interrupted``.
    """
    code: int | str | None = 0
    finish: Callable[[int | str | None], None] = _no_group
    startup_gc.pause()  # until the run's model is built: see dlrun.startup_gc
    interrupts.sigterm_as_interrupt()
    try:
        from dlrun.engine.launch import finish_cli_process, worker_overrides
        from dlrun.overrides import check_command_line, one_line_errors

        finish = finish_cli_process
        with one_line_errors(task=run):
            sys.argv = [sys.argv[0], *resume_arguments(sys.argv[1:]), *worker_overrides()]
            check_command_line(sys.argv[1:])
            with hydra_shortcuts.applied(sys.argv[1:]):
                _hydra_app()()
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt as stop:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        what = f"interrupted ({interrupts.cause(stop)}) while starting"
        rundir.mark_unfinished_runs(what)
        print(f"dlrun: {what}; nothing was trained", file=sys.stderr)
        code = EXIT_INTERRUPTED
    finally:
        startup_gc.resume()  # a run that never built a model (a config error, --cfg)
    finish(code)
    sys.exit(code)


if __name__ == "__main__":
    from dlrun import process_exit

    process_exit.run(main)
