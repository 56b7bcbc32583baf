"""Import what the evaluation needs while the model trains.

The evaluation imports torchmetrics (which pulls matplotlib; SciPy's signal module,
which its ``__init__`` would import too, stays deferred: :mod:`dlrun.deferred_imports`)
and matplotlib for the pictures: about half a second on 2 CPU cores, all of it after
training, while the user waits for the results. Training spends its time in torch's C++
kernels, which release the GIL, so a background thread can do those imports meanwhile
at little cost to the loop. Nothing is imported that the evaluation would not import
itself, nothing runs but the imports (and the font lookup every picture does first), and
a failure here is ignored: the evaluation then imports the module itself and reports
the error there.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence

from dlrun import deferred_imports

# The evaluation's heavy imports, in the order it first needs them.
MODULES = (
    "torchmetrics.functional.classification",
    "torchmetrics.functional.regression",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "matplotlib.ticker",
    "rich.table",
    "dlrun.evaluation.evaluate",
)


def start(modules: Sequence[str] = MODULES) -> threading.Thread:
    """Start importing ``modules`` in a daemon thread; ``join()`` it before evaluating."""
    thread = threading.Thread(target=load, args=(tuple(modules),), name="dlrun-prefetch")
    thread.daemon = True  # an interrupted run must not wait for it
    thread.start()
    return thread


def load(modules: Sequence[str] = MODULES) -> None:
    """Import ``modules`` as the evaluation will (failures ignored), and find the font."""
    for name in modules:
        try:
            deferred_imports.import_module(name)
        except Exception:  # the evaluation imports it again and says what is wrong
            continue
    with contextlib.suppress(Exception):
        from matplotlib import font_manager

        font_manager.findfont(font_manager.FontProperties())  # first text of every picture
