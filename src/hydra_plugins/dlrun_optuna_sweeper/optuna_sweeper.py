"""A Hydra sweeper that runs an Optuna study: ask trials, launch them as jobs, tell results.

Why not hydra-optuna-sweeper: it pins optuna<3, its sqlite storage breaks on SQLAlchemy 2,
and it cannot prune. This one runs on current Optuna, keeps the study in persistent
storage so an interrupted search resumes, passes each job its trial identity
(``++trial.storage/study_name/number``) so the job can report per-epoch values and be
pruned, and leaves a ``trial.json`` in every job dir for the leaderboard.

Hydra imports this module on every start-up while scanning plugins, so optuna and the
rest of ``dlrun.sweep`` are imported only when a sweep actually starts.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.errors import CompactHydraException, ConfigCompositionException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from dlrun.errors import UserError

if TYPE_CHECKING:
    import optuna

    from dlrun.sweep.heartbeat import Heartbeat
    from dlrun.sweep.space import SearchSpace

log = logging.getLogger(__name__)

# Draws in a row that may be skipped (duplicates of earlier trials) before a sweeper
# decides the search space has nothing new left.
MAX_DRAWS = 50


class SweepError(CompactHydraException):
    """A sweep that failed while running; Hydra prints just the message, no traceback."""


class SweepSettingsError(ConfigCompositionException):
    """A sweeper setting that cannot work, found before any trial ran: ``dlrun`` says so in
    one line and exits 2, like every config error (a config composition error to Hydra)."""


class DlrunOptunaSweeper(Sweeper):
    """``hydra/sweeper=dlrun_optuna``; the fields are documented in ``config.py``."""

    def __init__(
        self,
        sampler: str,
        seed: int | None,
        direction: str,
        n_trials: int,
        n_jobs: int,
        storage: str,
        study_name: str,
        pruner: str,
        pruner_args: Any,
        max_consecutive_failures: int,
        params: Any,
    ) -> None:
        super().__init__()
        self.sampler = sampler
        self.seed = seed
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.storage = storage
        self.study_name = study_name
        self.pruner = pruner
        self.pruner_args = _plain(pruner_args)
        self.max_consecutive_failures = max_consecutive_failures
        self.params = _plain(params)
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.hydra_context is not None
        if importlib.util.find_spec("optuna") is None:
            raise SweepSettingsError(
                "dlrun: error: hydra/sweeper=dlrun_optuna needs optuna: "
                "pip install 'dlrun[optuna]' (or pip install optuna)"
            )
        if self.n_trials < 1 or self.n_jobs < 1:
            raise SweepSettingsError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be >= 1")
        try:
            study, space, direction, storage = self._open(arguments)
        except UserError as exc:
            raise SweepSettingsError(f"dlrun: error: {exc}") from None
        return self._run(study, space, direction, storage)

    def _open(self, arguments: list[str]) -> tuple[optuna.Study, SearchSpace, str, str]:
        """Parse the search space, then create or resume the study."""
        from dlrun import rundir
        from dlrun.sweep.space import parse_search_space
        from dlrun.sweep.study import (
            absolute_storage,
            build_sampler,
            open_study,
            recover_interrupted,
            resolve_direction,
            sqlite_folder,
        )

        assert self.config is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        lines = [f"{key}={value}" for key, value in self.params.items()]
        space = parse_search_space([*lines, *arguments], parser)
        if not space.distributions:
            raise UserError(
                "nothing to search: give hydra.sweeper.params (e.g. hparams_search=lenet_digits) "
                "or a sweep such as 'optimizer.lr=tag(log, interval(1e-4, 0.1))'"
            )
        monitor = str(OmegaConf.select(self.config, "trainer.monitor", default="auto"))
        direction = resolve_direction(self.direction, monitor)
        sampler = build_sampler(self.sampler, self.seed, space)
        folder = sqlite_folder(self.storage)  # the sweep dir, usually: made just below
        if folder is not None:
            rundir.note_missing(folder)
        try:
            storage = absolute_storage(self.storage)
            study = open_study(
                storage=storage,
                study_name=self.study_name,
                direction=direction,
                sampler=sampler,
                pruner=self.pruner,
                pruner_args=self.pruner_args,
                space=space,
            )
        except UserError:  # refused before any trial: leave no folder behind
            if folder is not None:
                rundir.discard(folder)
            raise
        recover_interrupted(study)
        return study, space, direction, storage

    def _run(
        self, study: optuna.Study, space: SearchSpace, direction: str, storage: str
    ) -> list[Sequence[JobReturn]]:
        from dlrun.sweep.heartbeat import Heartbeat

        assert self.config is not None
        target = self._start(study, space, direction, storage)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        returns: list[Sequence[JobReturn]] = []
        failures_in_a_row, ran, failed = 0, 0, 0
        last_reason = ""
        with Heartbeat(study) as beat:
            while trials := self._ask(study, space, target, beat):
                results = self._launch_trials(study, space, storage, trials)
                for trial, ret in zip(trials, results, strict=True):
                    state, reason = self._finish(study, trial, ret, direction)
                    beat.done(trial)
                    ran += 1
                    failed += state == "FAIL"
                    failures_in_a_row = failures_in_a_row + 1 if state == "FAIL" else 0
                    last_reason = reason if state == "FAIL" else last_reason
                returns.append(results)
                limit = self.max_consecutive_failures
                if limit and failures_in_a_row >= limit:
                    raise SweepError(
                        f"dlrun: error: {failures_in_a_row} trials in a row failed, stopping "
                        f"the sweep (hydra.sweeper.max_consecutive_failures={limit}); "
                        f"last: {last_reason}"
                    )
        self._summarize(study, sweep_dir, direction, storage)
        if ran and failed == ran:
            raise SweepError(f"dlrun: error: all {ran} trials failed; last: {last_reason}")
        return returns

    def _start(self, study: optuna.Study, space: SearchSpace, direction: str, storage: str) -> int:
        """Save multirun.yaml, say where the study stands; the number of trials to reach."""
        from dlrun.sweep.study import finished_trials, grid_points_left, waiting_trials

        assert self.config is not None
        done = len(finished_trials(study))
        remaining = max(0, self.n_trials - done)
        if self.sampler == "grid":  # a grid ends when every point was tried once
            remaining = min(remaining, len(grid_points_left(study, space)) + waiting_trials(study))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(
            "Optuna study %s (%s, %s sampler, %s pruner): %d of %d trials done, %d to run; "
            "resume with hydra.sweeper.storage=%s hydra.sweeper.study_name=%s",
            study.study_name,
            direction,
            self.sampler,
            self.pruner,
            done,
            done + remaining,
            remaining,
            storage,
            study.study_name,
        )
        return done + remaining

    def _launch_trials(
        self,
        study: optuna.Study,
        space: SearchSpace,
        storage: str,
        trials: list[optuna.trial.Trial],
    ) -> list[JobReturn]:
        """Run a batch of trials as jobs; cut short, they are queued to run again."""
        from dlrun.sweep.protocol import TrialIdentity
        from dlrun.sweep.study import close_interrupted

        batch = [
            [
                *space.overrides_for(t.params),
                *TrialIdentity(storage, study.study_name, t.number).overrides(),
            ]
            for t in trials
        ]
        self._validate(study, trials, batch)
        try:
            return self._launch(batch, [t.number for t in trials])
        except BaseException:  # Ctrl-C, SystemExit from a job: make them resumable
            for trial in trials:
                close_interrupted(study, trial.number, trial.params)
            log.warning(
                "sweep interrupted; trials %s will run again when it is resumed",
                [t.number for t in trials],
            )
            raise

    def _ask(
        self, study: optuna.Study, space: SearchSpace, target: int, beat: Heartbeat
    ) -> list[optuna.trial.Trial]:
        """The next batch of trials this sweeper runs (empty: the study is done).

        Other sweepers may share the study: what is left is counted from the storage
        before each batch, and every asked trial is claimed (:func:`dlrun.sweep.study.
        claim`); one that must not run (over ``target``, or a duplicate) is skipped.
        """
        from dlrun.sweep.study import claim, queue_next_grid_point, trials_left

        trials: list[optuna.trial.Trial] = []
        for _ in range(MAX_DRAWS):
            wanted = min(self.n_jobs, trials_left(study, target)) - len(trials)
            if wanted <= 0 or (self.sampler == "grid" and not self._grid_left(study, space)):
                break
            if self.sampler == "grid":
                queue_next_grid_point(study, space)
            trial = study.ask(space.distributions)
            reason = claim(study, trial, target)
            if reason is None:
                beat.running(trial)
                trials.append(trial)
            else:
                log.info("trial %d not run: %s", trial.number, reason)
        return trials

    def _grid_left(self, study: optuna.Study, space: SearchSpace) -> bool:
        from dlrun.sweep.study import grid_points_left, waiting_trials

        return bool(grid_points_left(study, space) or waiting_trials(study))

    def _validate(
        self, study: optuna.Study, trials: list[optuna.trial.Trial], batch: list[list[str]]
    ) -> None:
        """Compose every job's config now, so a bad override fails once, with its message."""
        from optuna.trial import TrialState

        try:
            self.validate_batch_is_legal(batch)
        except Exception as exc:
            for trial in trials:
                study.tell(trial.number, state=TrialState.FAIL)
            raise SweepError(f"dlrun: error: a trial's config does not compose: {exc}") from exc

    def _launch(self, batch: list[list[str]], numbers: list[int]) -> list[JobReturn]:
        """Launch with job numbers equal to trial numbers (dirs ``<trial>_<model>_<data>``).

        A resumed sweep in the same sweep dir then never reuses a job dir. Numbers are
        consecutive unless another process asks trials of the same study at the same time;
        then each job is launched on its own to keep its number.
        """
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return list(self.launcher.launch(batch, initial_job_idx=numbers[0]))
        results: list[JobReturn] = []
        for overrides, number in zip(batch, numbers, strict=True):
            results.extend(self.launcher.launch([overrides], initial_job_idx=number))
        return results

    def _finish(
        self, study: optuna.Study, trial: optuna.trial.Trial, ret: JobReturn, direction: str
    ) -> tuple[str, str]:
        """Tell Optuna how the trial ended and write ``trial.json`` into the job's dir."""
        from optuna.trial import TrialState

        from dlrun.monitor import metric_mode
        from dlrun.sweep.outcome import job_dir, judge, monitored_metric, write_trial_record
        from dlrun.sweep.protocol import FAIL_REASON_ATTR, JOB_DIR_ATTR, PRUNED_AT_ATTR

        # From storage: the Trial object does not see attributes the job set on it.
        attrs = study._storage.get_trial(trial._trial_id).user_attrs
        outcome = judge(ret, attrs)
        run_dir = job_dir(ret)
        if run_dir is not None:
            trial.set_user_attr(JOB_DIR_ATTR, str(run_dir))
        if outcome.state == "FAIL":
            trial.set_user_attr(FAIL_REASON_ATTR, outcome.reason[:2000])
        values = outcome.value if outcome.state == "COMPLETE" else None
        frozen = study.tell(trial.number, state=TrialState[outcome.state], values=values)
        monitor = monitored_metric(run_dir)
        if monitor and (metric_mode(monitor) == "min") != (direction == "minimize"):
            log.warning(
                "trial %d optimised %s but the study is set to %s it; check "
                "hydra.sweeper.direction and trainer.monitor",
                trial.number,
                monitor,
                direction,
            )
        if run_dir is not None and run_dir.is_dir():
            write_trial_record(
                run_dir,
                trial.number,
                frozen.params,
                frozen.state.name,
                frozen.value,
                study_name=study.study_name,
                direction=direction,
                monitor=monitor,
                pruned_at_epoch=attrs.get(PRUNED_AT_ATTR),
                reason=outcome.reason or None,
            )
        shown = "-" if frozen.value is None else f"{frozen.value:.4g}"
        log.info("trial %d %s: %s %s", trial.number, frozen.state.name, shown, frozen.params)
        if outcome.state == "FAIL":
            log.warning("trial %d failed: %s", trial.number, outcome.reason)
        return outcome.state, outcome.reason

    def _summarize(
        self, study: optuna.Study, sweep_dir: Path, direction: str, storage: str
    ) -> None:
        """``optuna_study.json`` in the sweep dir: counts and the best trial so far."""
        from optuna.trial import TrialState

        from dlrun.rundir import write_json
        from dlrun.sweep.protocol import JOB_DIR_ATTR

        trials = study.get_trials(deepcopy=False)
        counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = None
        if complete:
            top = study.best_trial
            best = {
                "number": top.number,
                "value": top.value,
                "params": top.params,
                "job_dir": top.user_attrs.get(JOB_DIR_ATTR),
            }
            log.info("best trial %d: %.4g %s", top.number, top.value, top.params)
        write_json(
            sweep_dir / "optuna_study.json",
            {
                "study_name": study.study_name,
                "storage": storage,
                "direction": direction,
                "sampler": self.sampler,
                "pruner": self.pruner,
                "trials": {name: n for name, n in counts.items() if n},
                "best": best,
            },
        )


def _plain(node: Any) -> dict[str, Any]:
    """A DictConfig (or None) from Hydra's instantiate as a plain dict."""
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        container = OmegaConf.to_container(node, resolve=True)
        assert isinstance(container, dict)
        return {str(k): v for k, v in container.items()}
    return dict(node)
