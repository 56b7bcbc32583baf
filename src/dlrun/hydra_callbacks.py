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
