"""The console scripts: each command's ``main``, ended by :func:`dlrun.process_exit.run`.

Each command's module is imported when its script starts, not before, so ``dlrun
--help`` imports nothing of the others. ``dlrun-serve`` keeps the normal exit: a server
shuts down on its own terms.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from dlrun.process_exit import run


def _script(module: str) -> Callable[[], None]:
    def start() -> None:
        run(importlib.import_module(module).main)

    start.__doc__ = f"``{module}.main`` as a console script."
    return start


dlrun = _script("dlrun.cli")
dlrun_eval = _script("dlrun.eval_cli")
dlrun_generate = _script("dlrun.generate_cli")
dlrun_leaderboard = _script("dlrun.leaderboard")
dlrun_gradcheck = _script("dlrun.diagnostics.gradcheck")
dlrun_lrfind = _script("dlrun.diagnostics.lrfind")
dlrun_inspect = _script("dlrun.diagnostics.inspection")
dlrun_predict = _script("dlrun.predict_cli")
dlrun_export = _script("dlrun.export_cli")
dlrun_ensemble = _script("dlrun.ensemble_cli")
dlrun_compare = _script("dlrun.compare")
