"""Opening (or resuming) the study a sweep drives: storage, direction, sampler.

A study lives in persistent storage (sqlite by default) so a sweep that was interrupted
can be re-run and continue: ``n_trials`` is the study's target, not this session's count.
Several sweepers may drive one study at once (one storage URL, e.g. PostgreSQL, shared
by processes on several machines): each claims the trials it asks for (:func:`claim`),
so together they run ``n_trials`` trials, none twice, and a sweeper only takes over the
running trials of one that is gone (:func:`orphaned`).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from dlrun.errors import UserError
from dlrun.monitor import optuna_direction
from dlrun.rundir import now_iso, process_alive, process_identity
from dlrun.sweep.protocol import (
    HEARTBEAT_ATTR,
    INTERRUPTED_ATTR,
    NOT_RUN_ATTR,
    OWNER_ATTR,
    PRUNER_ATTR,
    RETRY_OF_ATTR,
    build_pruner,
    open_storage,
    shown_storage,
    storage_problem,
)
from dlrun.sweep.space import SearchSpace

log = logging.getLogger(__name__)

SPACE_ATTR = "dlrun_search_space"
SAMPLERS = ("tpe", "random", "grid")


def resolve_direction(direction: str, monitor: str) -> str:
    """``minimize``/``maximize`` for the study from the sweep config and trainer.monitor.

    The objective a dlrun job returns is the best value of ``trainer.monitor``. With
    ``direction=auto`` the monitored metric's name decides (``val_loss`` is minimised,
    ``val_accuracy`` maximised); ``trainer.monitor=auto`` is ``val_loss`` for every task.
    """
    if direction in ("minimize", "maximize"):
        return direction
    if direction != "auto":
        raise UserError(f"hydra.sweeper.direction={direction}: use auto, minimize or maximize")
    return optuna_direction(monitor)


def _sqlite_file(url: str) -> Path | None:
    """The absolute path of a sqlite storage file, None for any other storage."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == f"{prefix}:memory:":
        return None
    return Path(url[len(prefix) :]).expanduser().resolve()


def sqlite_folder(url: str) -> Path | None:
    """The folder of a sqlite storage file, None for any other storage."""
    path = _sqlite_file(url)
    return None if path is None else path.parent


def absolute_storage(url: str) -> str:
    """A sqlite URL with an absolute path whose folder exists; other URLs unchanged.

    Jobs may run with another working directory (``hydra.job.chdir``, other launchers),
    so they get a path that does not depend on it.
    """
    path = _sqlite_file(url)
    if path is None:
        return url
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def build_sampler(name: str, seed: int | None, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``name``; ``grid`` is done by queueing points (see below).

    Optuna's GridSampler visits points in a shuffled order, raises outside ``optimize``
    when the grid is done, and fails on re-queued trials; queueing each grid point as a
    fixed trial gives the plain product order and resumes like any other study.
    """
    if seed is not None and seed < 0:
        raise UserError(f"hydra.sweeper.seed={seed}: use a number >= 0, or null for no seed")
    if name == "tpe":
        return TrialSeededSampler(optuna.samplers.TPESampler, seed)
    if name == "random":
        return TrialSeededSampler(optuna.samplers.RandomSampler, seed)
    if name == "grid":
        space.grid()  # refuse interval() params before the study is created
        return optuna.samplers.RandomSampler(seed=seed)  # never asked: params are queued
    raise UserError(f"hydra.sweeper.sampler={name} is unknown; use {', '.join(SAMPLERS)}")


def trial_seed(seed: int, number: int) -> int:
    """An independent 32-bit seed for trial ``number`` of a search seeded with ``seed``."""
    return int(np.random.SeedSequence(seed, spawn_key=(number,)).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Samples trial N with a fresh sampler seeded from ``(seed, N)``.

    An Optuna sampler keeps its random state in the sampler object. A resumed sweep is a
    new process that builds the sampler again from the same seed, so it would replay the
    first trials' parameters. Seeded per trial number instead, a trial's draw depends only
    on the seed, its number and the study's history: a resumed search continues where it
    stopped and draws exactly what an uninterrupted one would have. With ``seed=None``
    the samplers are unseeded, as Optuna's are.
    """

    def __init__(self, factory: Callable[..., optuna.samplers.BaseSampler], seed: int | None):
        self._factory = factory
        self._seed = seed
        self._inner = factory(seed=seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self._seed is not None:
            self._inner = self._factory(seed=trial_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def open_study(
    *,
    storage: str,
    study_name: str,
    direction: str,
    sampler: optuna.samplers.BaseSampler,
    pruner: str,
    pruner_args: dict[str, Any],
    space: SearchSpace,
) -> optuna.Study:
    """Create the study, or load it to resume; refuse a resume that flips the direction."""
    pruner_obj = build_pruner(pruner, pruner_args)  # fail on bad args before creating
    shown = shown_storage(storage)
    try:
        backend = open_storage(storage)
    except UserError:
        raise
    except Exception as exc:  # SQLAlchemy: bad URL, missing driver, unreachable server
        raise UserError(
            f"hydra.sweeper.storage={shown}: cannot open it ({storage_problem(exc, storage)})"
        ) from None
    try:
        study = optuna.create_study(
            storage=backend,
            study_name=study_name,
            direction=direction,
            sampler=sampler,
            pruner=pruner_obj,
            load_if_exists=True,
        )
    except ValueError as exc:  # e.g. an existing multi-objective study of that name
        raise UserError(f"study {study_name} in {shown}: {exc}") from None
    if study.direction.name.lower() != direction:
        raise UserError(
            f"study {study_name} in {shown} was created to {study.direction.name.lower()}, "
            f"not {direction}; use another hydra.sweeper.study_name or storage"
        )
    _check_compatible(study, space)
    old_space = study.user_attrs.get(SPACE_ATTR)
    if old_space is not None and old_space != space.describe():
        log.warning(
            "study %s continues with a different search space than it started with "
            "(was %s); earlier trials still count towards n_trials",
            study_name,
            old_space,
        )
    study.set_user_attr(SPACE_ATTR, space.describe())
    study.set_user_attr(PRUNER_ATTR, {"name": pruner, "args": dict(pruner_args)})
    return study


def _check_compatible(study: optuna.Study, space: SearchSpace) -> None:
    """Refuse a resume Optuna would reject mid-sweep (e.g. a changed choice list)."""
    seen: dict[str, optuna.distributions.BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False):
        seen.update(trial.distributions)
    for key, new in space.distributions.items():
        if key not in seen:
            continue
        try:
            optuna.distributions.check_distribution_compatibility(seen[key], new)
        except ValueError as exc:
            raise UserError(
                f"study {study.study_name} already searched {key} over {seen[key]}, which "
                f"cannot become {new} ({exc}); use another hydra.sweeper.study_name"
            ) from None


def recover_interrupted(study: optuna.Study) -> int:
    """Close trials a killed sweeper left RUNNING and queue their params to run again.

    Several sweepers may share the study, so a RUNNING trial is only taken for an
    orphan when its sweeper is known to be gone (see :func:`orphaned`).
    """
    orphans = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if orphaned(t)
    ]
    for trial in orphans:
        close_interrupted(study, trial.number, trial.params)
        log.warning("trial %d was left running by an earlier sweep; queued again", trial.number)
    return len(orphans)


CLAIM_S = 60.0  # a running trial nobody claimed (a sweeper ends up in :func:`claim` in ms)


def orphaned(trial: FrozenTrial, now: float | None = None) -> bool:
    """Whether a RUNNING trial's sweeper is gone (so nobody will ever tell its result).

    The sweeper's identity and heartbeat are judged as a run's status.json is
    (:func:`dlrun.rundir.process_alive`): on this machine by its process, elsewhere by a
    heartbeat younger than ``dlrun.rundir.STALE_AFTER_S``.
    """
    who = trial.user_attrs.get(OWNER_ATTR)
    if not isinstance(who, dict):  # an older dlrun, or killed between ask and claim
        now = time.time() if now is None else now
        started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
        return now - started > CLAIM_S
    return not process_alive({**who, "heartbeat": trial.user_attrs.get(HEARTBEAT_ATTR)})


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts towards ``n_trials`` (interrupted and not-run ones don't)."""
    attrs = trial.user_attrs
    return not (
        trial.state == TrialState.FAIL and (INTERRUPTED_ATTR in attrs or NOT_RUN_ATTR in attrs)
    )


def params_of(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's parameters, also for a queued trial (whose are still 'fixed params')."""
    return {**trial.params, **trial.system_attrs.get("fixed_params", {})}


def trials_left(study: optuna.Study, n_trials: int) -> int:
    """How many more trials to ask for: the target less those ended or being run, by any
    sweeper of the study (queued ones are what is left to run, so they are not taken off)."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    taken = [t for t in study.get_trials(deepcopy=False, states=states) if counts(t)]
    return n_trials - len(taken)


def claim(study: optuna.Study, trial: optuna.trial.Trial, n_trials: int) -> str | None:
    """Make an asked trial this sweeper's, or say why it must not run.

    Trial numbers are handed out by the storage one at a time, so every sweeper sees the
    same order: a trial beyond the ``n_trials``-th (two sweepers asked at once for the
    last one), or one whose parameters an earlier trial already has (two sweepers
    queued the same grid point), is closed as FAIL with ``dlrun_not_run`` and not run.
    """
    trial.set_user_attr(OWNER_ATTR, process_identity())
    trial.set_user_attr(HEARTBEAT_ATTR, now_iso())
    mine = params_of(study._storage.get_trial(trial._trial_id))
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and counts(t)]
    reason = None
    if len(earlier) + 1 > n_trials:
        reason = f"the study already has its n_trials={n_trials} trials"
    elif any(params_of(t) == mine for t in earlier):
        reason = f"an earlier trial has the same parameters {mine}"
    if reason is not None:
        trial.set_user_attr(NOT_RUN_ATTR, reason)
        study.tell(trial.number, state=TrialState.FAIL)
    return reason


def close_interrupted(study: optuna.Study, number: int, params: dict[str, Any]) -> None:
    """Mark a cut-short trial FAIL (not counted) and queue its params for the next ask.

    Uses Optuna's storage handle: there is no public way to set a trial's user attribute
    by trial number once its ``Trial`` object is gone.
    """
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    study._storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, True)
    study.tell(number, state=TrialState.FAIL)
    study.enqueue_trial(params, user_attrs={RETRY_OF_ATTR: number})


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count towards ``n_trials``: every ended trial except interrupted ones
    (and those asked for but not run, see :func:`claim`)."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False, states=states) if counts(t)]


def waiting_trials(study: optuna.Study) -> int:
    """Queued trials (re-runs of interrupted ones, the next grid point) not yet asked for."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def grid_points_left(study: optuna.Study, space: SearchSpace) -> list[dict[str, Any]]:
    """Grid points, in product order, that no trial has finished, is running or awaits."""
    grid = space.grid()
    keys = list(grid)
    states = (TrialState.RUNNING, TrialState.WAITING)
    taken_trials = [*finished_trials(study), *study.get_trials(deepcopy=False, states=states)]
    taken = set()
    for trial in taken_trials:
        params = params_of(trial)
        taken.add(tuple(params.get(k) for k in keys))
    return [
        dict(zip(keys, point, strict=True))
        for point in itertools.product(*grid.values())
        if point not in taken
    ]


def queue_next_grid_point(study: optuna.Study, space: SearchSpace) -> None:
    """Queue the first untried grid point, unless a queued trial is already waiting."""
    if waiting_trials(study):
        return
    left = grid_points_left(study, space)
    if left:
        study.enqueue_trial(left[0])
