"""Hydra callbacks: hooks Hydra calls around runs and sweeps (``hydra.callbacks``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


class RunDirGuard(Callback):
    """Refuse to start a run in a directory that already holds one.

    Hydra would otherwise overwrite ``.hydra/`` and the results of the earlier run when
    a user passes ``hydra.run.dir`` pointing at an existing run. This runs before Hydra
    writes anything.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("resume"):
            return  # resuming continues in the run's own directory on purpose
        raw = OmegaConf.to_container(config.hydra.run, resolve=False)
        if "dlrun_unique_dir" in str(raw):
            return  # the default dir is freshly claimed (see dlrun.rundir), never reused
        run_dir = Path(config.hydra.run.dir)
        markers = [run_dir / n for n in ("status.json", "metrics.json", ".hydra")]
        taken = [p.name for p in markers if p.exists()]
        if taken:
            print(
                f"dlrun: error: {run_dir} already holds a run ({', '.join(taken)}); "
                "choose another hydra.run.dir so nothing is overwritten",
                file=sys.stderr,
            )
            sys.exit(2)


def _bagging_ensemble(config: DictConfig, sweep_dir: Path) -> None:
    """A sweep over ``ensemble.member`` ends with its members evaluated together."""
    if not config.get("ensemble") or not config.ensemble.get("bagging"):
        return
    from dlrun import ensembling
    from dlrun.display import make_console
    from dlrun.errors import UserError

    try:
        out = ensembling.after_sweep(sweep_dir, config.ensemble.method, make_console())
    except UserError as exc:
        print(f"dlrun: error: the bagging ensemble was not built: {exc}", file=sys.stderr)
        sys.exit(1)
    if out is not None:
        print(f"ensemble: {out}")


class Leaderboard(Callback):
    """Before a sweep: refuse a config every job would reject. After it: write
    leaderboard.csv/.md, print it, and exit non-zero if a job failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from dlrun.config import validate
        from dlrun.errors import UserError
        from dlrun.overrides import check_sweep

        main = {k: v for k, v in config.items() if k != "hydra"}
        try:
            check_sweep(config)  # every swept value composes; plugins installed
            validate(OmegaConf.to_container(OmegaConf.create(main), resolve=True))
        except UserError as exc:
            print(f"dlrun: error: {exc} (the sweep was not started)", file=sys.stderr)
            sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from dlrun import leaderboard

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        try:
            jobs, csv_path, md_path = leaderboard.write(sweep_dir)
            leaderboard.print_tables(sweep_dir, jobs)
        except Exception as exc:  # Hydra would demote it to a warning and exit 0
            print(f"dlrun: error: could not write the leaderboard: {exc!r}", file=sys.stderr)
            sys.exit(1)
        print(f"leaderboard: {csv_path} {md_path}")
        _bagging_ensemble(config, sweep_dir)
        failed = [j for j in jobs if j.status == "failed"]
        if failed:
            print(f"dlrun: {len(failed)} of {len(jobs)} jobs failed", file=sys.stderr)
            sys.exit(1)
