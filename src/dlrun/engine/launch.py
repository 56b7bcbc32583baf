"""Starting the processes of a multi-process run, and ending them cleanly.

Two ways in, one code path after:

* ``dlrun trainer.devices=N`` (one machine): the Hydra process claims the run dir as
  usual, then :func:`spawn_run` starts N workers with ``spawn``. Each worker gets the
  same environment variables ``torchrun`` would set and calls the function it was given
  (the runner passes its own ``train_and_evaluate``: this module never imports the
  runner); rank 0 writes the run dir, sends its metrics back, and the parent finishes
  the run (metrics.json, status.json) as for one process.
* ``torchrun --nnodes=2 --nproc_per_node=4 ... -m dlrun.cli ...`` (several machines):
  every process runs the whole CLI and joins the group torchrun describes;
  ``trainer.devices`` is ignored. Hydra would give every process its own run dir, so
  :func:`worker_overrides` points the run dir of every rank but 0 at a scratch
  directory that :func:`finish_cli_process` deletes at exit, and silences their stdout.

This module imports no torch at import time: the CLI uses it before a config is
validated, and ``dlrun --help`` must stay fast.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from dlrun.engine.interrupts import RunInterrupted, stop_signals_handled_by
from dlrun.errors import UserError

if TYPE_CHECKING:
    from dlrun.config import RunConfig

# Environment variables a launched worker finds set (torchrun's names).
_LAUNCH_VARS = ("RANK", "WORLD_SIZE")
_SCRATCH_PREFIX = "dlrun-rank"
_MAX_MESSAGE = 16_000  # characters of a worker's traceback sent to the parent
_scratch: list[str] = []  # this process's scratch run dir (torchrun ranks other than 0)


class WorkerCrashed(RuntimeError):
    """A training process failed with an unexpected exception (its traceback attached)."""


def launched() -> bool:
    """True inside a process started by torchrun or by :func:`spawn_run`."""
    return all(name in os.environ for name in _LAUNCH_VARS)


def launched_rank() -> int:
    return int(os.environ.get("RANK", "0")) if launched() else 0


# --------------------------------------------------------------------- torchrun + CLI
def worker_overrides() -> list[str]:
    """Hydra overrides that keep a torchrun rank other than 0 out of the run dirs.

    Rank 0 alone owns the run dir; another rank gets a private scratch dir for Hydra's
    own files (removed at exit) and a silent stdout, so N processes print one log and
    leave one directory. Errors still reach stderr from every rank.
    """
    if launched_rank() == 0:
        return []
    scratch = tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{launched_rank()}-")
    _scratch.append(scratch)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return [f"hydra.run.dir={scratch}", f"hydra.sweep.dir={scratch}"]


def finish_cli_process(code: int | str | None) -> None:
    """End a torchrun worker: leave the group, drop its scratch dir, ``os._exit``.

    Does nothing in a process that never joined a group (one process, or the parent of
    ``trainer.devices=N``), so the CLI calls it unconditionally.
    """
    if not launched():
        return
    for scratch in _scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    if "torch.distributed" not in sys.modules:
        return  # failed before training started: an ordinary exit is safe
    from dlrun.engine import distributed

    status = code if isinstance(code, int) else (0 if code is None else 1)
    if status != 0 and isinstance(code, str):
        print(code, file=sys.stderr)
    distributed.teardown(synchronise=status == 0)
    distributed.exit_now(status)


# ------------------------------------------------------------- trainer.devices = N
def spawn_run(
    target: Callable[..., dict[str, Any]], cfg: RunConfig, run_dir: Path, *rest: Any
) -> dict[str, Any]:
    """Train with ``trainer.devices`` processes on this machine; rank 0's metrics.

    Each worker calls ``target(cfg, run_dir, console, *rest)`` (a module-level function,
    so ``spawn`` can send it). ``rest`` (the runner's data bundles and run context) is
    sent to every worker; the typed config pickles as it is.

    Raises :class:`RunInterrupted` or :class:`UserError` with the first worker's own
    message, or :class:`WorkerCrashed` with its traceback, so the CLI records the run as
    interrupted or failed exactly as for one process.
    """
    import multiprocessing

    import torch.multiprocessing as mp

    from dlrun.engine.distributed import free_port

    world = cfg.trainer.devices
    _check_devices(cfg.trainer.device, world)
    if cfg.trainer.num_threads is None:  # N processes x all cores would thrash
        threads = max(1, (os.cpu_count() or 1) // world)
        cfg = replace(cfg, trainer=replace(cfg.trainer, num_threads=threads))
    queue = multiprocessing.get_context("spawn").SimpleQueue()
    messages: list[tuple[str, int, Any]] = []
    first_failed: int | None = None
    pids: list[int] = []
    with _forward_signals(pids) as forwarded:
        context = mp.start_processes(
            _worker,
            args=(world, free_port(), target, (cfg, str(run_dir), *rest), queue),
            nprocs=world,
            join=False,
            start_method="spawn",
        )
        pids += context.pids()
        try:
            while not context.join(timeout=0.2, grace_period=10):
                _drain(queue, messages)
        except (mp.ProcessExitedException, mp.ProcessRaisedException) as exc:
            first_failed = exc.error_index
    _drain(queue, messages)
    exit_codes = [process.exitcode for process in context.processes]
    return _outcome(messages, exit_codes, first_failed, forwarded)


def _check_devices(device: str, world: int) -> None:
    import torch

    if device.startswith("mps"):
        raise UserError("trainer.devices > 1 works on cpu and cuda, not mps")
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda and world > torch.cuda.device_count():
        raise UserError(
            f"trainer.devices={world} but this machine has {torch.cuda.device_count()} "
            "CUDA device(s); use fewer devices or trainer.device=cpu"
        )


def _drain(queue: Any, into: list[tuple[str, int, Any]]) -> None:
    """Read what workers sent; done while waiting so a full pipe never blocks one."""
    while not queue.empty():
        into.append(queue.get())


def _outcome(
    messages: list[tuple[str, int, Any]],
    exit_codes: list[int | None],
    first_failed: int | None,
    signals: list[str],
) -> dict[str, Any]:
    """Rank 0's metrics, or the one error that explains why there are none.

    Every rank sends one message before it exits. A rank that died without one (killed,
    out of memory) is the root cause even though its peers fail after it, with
    "connection reset by peer" errors that say nothing about why.
    """
    by_kind: dict[str, list[tuple[int, Any]]] = {}
    for kind, rank, payload in messages:
        by_kind.setdefault(kind, []).append((rank, payload))
    reported = {rank for _, rank, _ in messages}
    silent = [r for r, code in enumerate(exit_codes) if code != 0 and r not in reported]
    if first_failed in silent:  # join() saw it go first
        silent.remove(first_failed)
        silent.insert(0, first_failed)
    crashes = sorted(by_kind.get("crash", []), key=lambda c: _lost_peer(*c[1]))
    if "interrupted" in by_kind:
        raise RunInterrupted(by_kind["interrupted"][0][1])
    if silent and signals:
        raise RunInterrupted(
            f"stopped by {signals[-1]} (sent twice: the processes exited at once); "
            "checkpoints/last.pt holds the last complete epoch"
        )
    if silent and (silent[0] == first_failed or not crashes or _lost_peer(*crashes[0][1])):
        rank = silent[0]
        code = exit_codes[rank] or 0
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
        raise UserError(
            f"training process {rank} of {len(exit_codes)} {how} without an error message "
            "(out of memory, or killed from outside?); the others stopped with it"
        )
    if "user" in by_kind:
        message, status = by_kind["user"][0][1]
        error = UserError(message)
        error.status = status  # type: ignore[attr-defined] # status.json's word ("pruned")
        raise error
    if crashes:
        rank, (_, text) = crashes[0]
        print(f"--- traceback of training process {rank} ---\n{text}", file=sys.stderr)
        raise WorkerCrashed(f"training process {rank} failed: {text.strip().splitlines()[-1]}")
    if "ok" in by_kind:
        if any(exit_codes):
            print(
                f"dlrun: warning: training finished but a process then exited with {exit_codes}",
                file=sys.stderr,
            )
        return by_kind["ok"][0][1]
    if "peer" in by_kind:
        raise UserError(by_kind["peer"][0][1][0])
    raise UserError(f"multi-process training failed (exit codes {exit_codes})")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _lost_peer(module: str, text: str) -> bool:
    """Whether a worker's error only says that another worker went away."""
    return module.startswith("torch.distributed") or any(
        sign in text for sign in ("Connection reset by peer", "Connection closed by peer")
    )


@contextmanager
def _forward_signals(pids: list[int]) -> Iterator[list[str]]:
    """Pass SIGINT/SIGTERM on to the workers, which stop at the same step together.

    Workers run in their own process group, so Ctrl-C on a terminal reaches only this
    process and each worker gets every signal exactly once: the first makes them stop
    after the step, a second makes them exit at once (as for one process).
    """
    forwarded: list[str] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        forwarded.append(signal.Signals(signum).name)
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                continue

    with stop_signals_handled_by(forward):
        yield forwarded


def _worker(
    index: int,
    world: int,
    port: int,
    target: Callable[..., dict[str, Any]],
    args: tuple[Any, ...],
    queue: Any,
) -> None:
    """One spawned rank: become a torchrun-style worker, train, report, ``os._exit``."""
    if hasattr(os, "setpgrp"):
        os.setpgrp()  # signals come from the parent only (see _forward_signals)
    os.environ.update(
        RANK=str(index),
        LOCAL_RANK=str(index),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    from dlrun.engine.distributed import PeerStopped, exit_now, teardown

    code = 0
    try:
        from rich.console import Console

        cfg, run_dir, *rest = args
        metrics = target(cfg, Path(run_dir), Console(), *rest)
        queue.put(("ok", index, metrics) if index == 0 else ("done", index, None))
    except RunInterrupted as exc:
        code = 130
        queue.put(("interrupted", index, str(exc)))
    except KeyboardInterrupt:  # SIGINT outside the training loop (loading, evaluating)
        code = 130
        queue.put(("interrupted", index, "interrupted by the user (Ctrl-C)"))
    except UserError as exc:
        code = 1
        kind = "peer" if isinstance(exc, PeerStopped) else "user"
        queue.put((kind, index, (str(exc), getattr(exc, "status", "failed"))))
    except BaseException as exc:
        code = 1
        text = traceback.format_exc()[-_MAX_MESSAGE:]
        queue.put(("crash", index, (type(exc).__module__, text)))
    finally:
        try:
            teardown(synchronise=code == 0)
        finally:
            exit_now(code)
