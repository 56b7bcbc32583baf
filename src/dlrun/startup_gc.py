"""No cyclic garbage collection while ``dlrun`` starts, and none of its imports scanned again.

Python's cycle collector makes a full (generation-2) pass whenever enough objects have
survived the younger passes. Importing torch, Hydra, torchmetrics and matplotlib makes
about 250,000 objects that live until exit, so a run's start-up triggered four full
passes (18-93 ms each, each slower than the last, as it scans everything imported so
far) and the evaluation a fifth (0.13 s): about 0.35 s of a 2.5 s one-batch run, and
none of it found garbage worth the time (modules, classes, functions, the config).

So the ``dlrun`` command starts with the collector off (:func:`pause`); once the run's
imports are done and its model is built, before the first step, :func:`settle` moves
everything alive into the permanent generation (``gc.freeze``: the pattern Python's
documentation gives for processes that fork, which a run's drawing children are) and
turns the collector back on. The training loop is collected as usual, and a full pass
only scans what was made since. The evaluation's imports, done in a thread while the
model trains (:mod:`dlrun.evaluation.prefetch`), are frozen the same way when that
thread is joined (:func:`freeze_once`), or a full pass during the evaluation would scan
their 60,000 objects (0.03 s). Frozen objects are still freed by reference counting,
but a frozen cycle stays until exit: the start-up's own cyclic garbage (about 12,000
objects, 1.3 MB, for a default run: collecting it would cost the full pass this
avoids), and a cycle alive at a freeze that dies later. Each freeze happens once per
process, so in a sweep that is the first job's config tree, not every job's.
"""

from __future__ import annotations

import gc

_paused = False  # pause() turned the collector off (it was on)
_command = False  # pause() ran: this process is a dlrun command, whose heap we may freeze
_frozen: set[str] = set()  # the stages whose objects were frozen (each once per process)


def pause() -> None:
    """Turn the collector off for start-up (if it is on: a caller's choice is kept)."""
    global _paused, _command
    _command = True
    if gc.isenabled():
        gc.disable()
        _paused = True


def settle() -> None:
    """Start-up is over: freeze what it made (the first time) and collect as usual."""
    freeze_once("start-up")
    resume()


def freeze_once(stage: str) -> None:
    """Move every live object to the permanent generation, the first time ``stage`` ends.

    Only in a ``dlrun`` command (:func:`pause` ran): a program that calls the runner as a
    library keeps its heap as it was.
    """
    if _command and stage not in _frozen:
        gc.freeze()
        _frozen.add(stage)


def resume() -> None:
    """Turn the collector back on if :func:`pause` turned it off (idempotent)."""
    global _paused
    if _paused:
        gc.enable()
        _paused = False
