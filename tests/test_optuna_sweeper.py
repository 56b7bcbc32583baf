"""The Optuna sweeper: search space, direction, pruning, resume, grid, trial.json.

Most of the sweeper is exercised through a toy Hydra app (a few lines, no training) so
the sweep logic runs in seconds; the real ``dlrun -m hparams_search=...`` runs are
shrunk to a few batches.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from hydra.core.config_store import ConfigStore  # noqa: E402
from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from hydra.core.utils import JobReturn, JobStatus  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState  # noqa: E402

from dlrun.config import RunConfig  # noqa: E402
from dlrun.errors import UserError  # noqa: E402
from dlrun.sweep.outcome import judge  # noqa: E402
from dlrun.sweep.protocol import (  # noqa: E402
    INTERRUPTED_ATTR,
    JOB_DIR_ATTR,
    PRUNED_AT_ATTR,
    PRUNER_ATTR,
    RETRY_OF_ATTR,
    TrialIdentity,
    TrialPrunedByOptuna,
)
from dlrun.sweep.pruning import OptunaPruning  # noqa: E402
from dlrun.sweep.space import parse_search_space  # noqa: E402
from dlrun.sweep.study import build_sampler, open_study, resolve_direction  # noqa: E402
from tests.conftest import CONFIGS, compose_cfg, run_cli  # noqa: E402

# Until train.yaml lists `hparams_search: null` in its defaults the group must be appended.
HPARAMS = (
    "hparams_search"
    if "hparams_search" in (CONFIGS / "train.yaml").read_text()
    else ("+hparams_search")
)


def load(db: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run this Python with ``args`` in ``cwd`` (a toy app, a probe, the real CLI)."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def trial_records(sweep_dir: Path) -> dict[int, dict[str, Any]]:
    """Every job dir's trial.json, by trial number."""
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("*/trial.json")]
    return {r["number"]: r for r in records}


# --- search space and direction ------------------------------------------------------


def test_search_space_reads_hydra_sweep_syntax() -> None:
    space = parse_search_space(
        [
            "optimizer.lr=tag(log, interval(1e-4, 1e-1))",
            "trainer.batch_size=choice(16, 32, 64, 128)",
            "regularization.dropout=interval(0, 0.5)",
            "trainer.epochs=range(2, 11, 4)",
            "model.hidden=choice([64,32],[128])",
            "model=choice(mlp,'odd name')",
            "data=iris",
            "trainer.epochs=3",  # the command line pins what params would search
        ],
        OverridesParser.create(),
    )
    dists = space.distributions
    assert dists["optimizer.lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert dists["trainer.batch_size"] == CategoricalDistribution([16, 32, 64, 128])
    assert dists["regularization.dropout"] == FloatDistribution(0.0, 0.5)
    assert "trainer.epochs" not in dists
    assert space.fixed == ["data=iris", "trainer.epochs=3"]
    overrides = space.overrides_for(
        {"optimizer.lr": 0.001, "model.hidden": "[64,32]", "model": "odd name"}
    )
    assert overrides == [
        "data=iris",
        "trainer.epochs=3",
        "optimizer.lr=0.001",
        "model.hidden=[64,32]",
        "model='odd name'",
    ]
    ranged = parse_search_space(["trainer.epochs=range(2, 11, 4)"], OverridesParser.create())
    assert ranged.distributions["trainer.epochs"] == IntDistribution(2, 10, step=4)
    assert ranged.grid() == {"trainer.epochs": [2, 6, 10]}


def test_grid_needs_finite_values() -> None:
    space = parse_search_space(["optimizer.lr=interval(0.001, 0.1)"], OverridesParser.create())
    with pytest.raises(UserError, match="choice"):
        space.grid()


@pytest.mark.parametrize(
    ("direction", "monitor", "expected"),
    [
        ("auto", "val_accuracy", "maximize"),
        ("auto", "val_loss", "minimize"),
        ("auto", "val_rmse", "minimize"),
        ("minimize", "auto", "minimize"),
        ("maximize", "val_loss", "maximize"),
        ("auto", "auto", "minimize"),  # trainer.monitor=auto is val_loss for every task
    ],
)
def test_direction_follows_the_monitored_metric(direction: str, monitor: str, expected: str):
    assert resolve_direction(direction, monitor) == expected


@dataclass
class _SchemaWithTrial(RunConfig):
    trial: Any = None


@pytest.mark.parametrize("schema", ["plain", "with_trial_field"])
def test_trial_identity_overrides_compose(schema: str) -> None:
    """``++trial.*`` works whether or not the run schema declares ``trial``."""
    store = ConfigStore.instance()
    identity = TrialIdentity("sqlite:////tmp/a dir/optuna.db", "it's", 7)
    try:
        if schema == "with_trial_field":
            store.store(name="dlrun_schema", node=_SchemaWithTrial)
        cfg = compose_cfg(*identity.overrides())
    finally:
        store.store(name="dlrun_schema", node=RunConfig)
    assert cfg.trial == {"storage": identity.storage, "study_name": "it's", "number": 7}


def test_search_configs_compose() -> None:
    for name, monitor in [("lenet_digits", "val_accuracy"), ("mlp_iris", "val_loss")]:
        cfg = compose_cfg(f"{HPARAMS}={name}")
        assert cfg.trainer.monitor == monitor


# --- pruning callback ----------------------------------------------------------------


@dataclass
class _State:
    epoch: int = 0


def _study_with_good_trials(db: Path) -> optuna.Study:
    """Two finished trials whose val_loss fell 1.0 -> 0.5 -> 0.25, and a median pruner."""
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{db}")
    study.set_user_attr(PRUNER_ATTR, {"name": "median", "args": {"n_startup_trials": 0}})
    for _ in range(2):
        trial = study.ask()
        for epoch, loss in enumerate([1.0, 0.5, 0.25], start=1):
            trial.report(loss, epoch)
        study.tell(trial, 0.25)
    return study


def _epochs(callback: OptunaPruning, losses: list[float]) -> None:
    callback.on_fit_start(None, _State())  # type: ignore[arg-type]
    for epoch, loss in enumerate(losses, start=1):
        callback.on_epoch_end(None, _State(epoch), {"epoch": epoch, "val_loss": loss})  # type: ignore[arg-type]


def test_pruning_stops_a_bad_curve(tmp_path: Path) -> None:
    study = _study_with_good_trials(tmp_path / "s.db")
    trial = study.ask()
    callback = OptunaPruning(f"sqlite:///{tmp_path / 's.db'}", "s", trial.number, "val_loss")
    with pytest.raises(TrialPrunedByOptuna, match="pruned at epoch 1") as raised:
        _epochs(callback, [3.0, 2.9, 2.8])
    assert isinstance(raised.value, UserError)
    assert load(tmp_path / "s.db", "s").trials[trial.number].user_attrs[PRUNED_AT_ATTR] == 1
    assert study.trials[trial.number].intermediate_values == {1: 3.0}


def test_pruning_lets_a_good_curve_finish(tmp_path: Path) -> None:
    study = _study_with_good_trials(tmp_path / "s.db")
    trial = study.ask()
    callback = OptunaPruning(f"sqlite:///{tmp_path / 's.db'}", "s", trial.number, "val_loss")
    _epochs(callback, [0.9, 0.4, 0.2])
    assert study.trials[trial.number].intermediate_values == {1: 0.9, 2: 0.4, 3: 0.2}


def test_pruning_leaves_a_finished_trial_alone(tmp_path: Path) -> None:
    """Resuming a pruned run by hand replays its ++trial overrides: nothing to report."""
    study = _study_with_good_trials(tmp_path / "s.db")
    callback = OptunaPruning(f"sqlite:///{tmp_path / 's.db'}", "s", 0, "val_loss")
    _epochs(callback, [9.0, 9.0])
    assert study.trials[0].intermediate_values == {1: 1.0, 2: 0.5, 3: 0.25}


def test_pruning_names_a_missing_study(tmp_path: Path) -> None:
    callback = OptunaPruning(f"sqlite:///{tmp_path / 'none.db'}", "nope", 0, "val_loss")
    with pytest.raises(UserError, match="cannot open the Optuna study"):
        callback.on_fit_start(None, _State())  # type: ignore[arg-type]


# --- judging a job's result ----------------------------------------------------------


def _job(tmp_path: Path, status: JobStatus, value: Any, run_status: str | None = None):
    run_dir = tmp_path / "job"
    run_dir.mkdir(parents=True, exist_ok=True)
    if run_status:
        (run_dir / "status.json").write_text(json.dumps({"status": run_status, "reason": "why"}))
    ret = JobReturn(status=status, _return_value=value)
    ret.hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}})
    return ret


def test_job_results_map_to_trial_states(tmp_path: Path) -> None:
    done, failed = JobStatus.COMPLETED, JobStatus.FAILED
    assert judge(_job(tmp_path, done, 0.5), {}).state == "COMPLETE"
    assert judge(_job(tmp_path, done, 0.5), {}).value == 0.5
    assert judge(_job(tmp_path / "a", done, math.nan, "pruned"), {}).state == "PRUNED"
    assert judge(_job(tmp_path / "b", done, math.nan, "failed"), {}).reason == "why"
    assert judge(_job(tmp_path / "c", done, math.nan), {PRUNED_AT_ATTR: 2}).state == "PRUNED"
    assert judge(_job(tmp_path / "d", done, None), {}).state == "FAIL"
    pruned = TrialPrunedByOptuna(3, 2, "val_loss", 1.5, "median")
    assert judge(_job(tmp_path / "e", failed, pruned), {}).state == "PRUNED"
    crashed = judge(_job(tmp_path / "f", failed, RuntimeError("boom")), {})
    assert (crashed.state, crashed.reason) == ("FAIL", "RuntimeError: boom")


# --- the sweeper, driving a toy app --------------------------------------------------

TOY_APP = '''
import sys
import hydra

@hydra.main(version_base="1.3", config_path=".", config_name="toy")
def main(cfg):
    """val_loss(epoch) = level + 1/epoch: x = 0, 1 are good curves, x >= 2 a bad one."""
    level = cfg.x / 100 + (10 if cfg.x >= 2 else 0)
    if not cfg.report:  # the sampler's tests: no reports, and no 2 s of importing torch
        return level + 1 / 3
    from dlrun.sweep.pruning import OptunaPruning  # imports torch: only once a job runs

    if cfg.x == cfg.crash_at:
        raise RuntimeError("boom")
    if cfg.x == cfg.interrupt_at:
        sys.exit(130)
    callback = OptunaPruning(cfg.trial.storage, cfg.trial.study_name, cfg.trial.number, "val_loss")
    callback.on_fit_start(None, None)
    losses = []
    for epoch in range(1, 4):
        losses.append(level + 1 / epoch)
        callback.on_epoch_end(None, None, {"epoch": epoch, "val_loss": losses[-1]})
    return min(losses)

main()
'''

TOY_CONFIG = """
defaults:
  - override hydra/sweeper: dlrun_optuna
  - _self_
x: 0
y: 0.0
report: true
crash_at: -1
interrupt_at: -1
trainer: {monitor: val_loss}
hydra:
  sweep: {dir: sweep, subdir: "${hydra.job.num}"}
  sweeper:
    study_name: toy
    storage: sqlite:///study.db
    pruner: median
    pruner_args: {n_startup_trials: 2}
    params:
      x: range(0, 4)
"""


@pytest.fixture
def toy(tmp_path: Path):
    (tmp_path / "toy.py").write_text(TOY_APP)
    (tmp_path / "toy.yaml").write_text(TOY_CONFIG)

    def run(*overrides: str) -> subprocess.CompletedProcess[str]:
        return python("toy.py", "-m", *overrides, cwd=tmp_path)

    return run


def test_grid_sweep_completes_prunes_and_fails(toy, tmp_path: Path) -> None:
    """The grid runs in product order: x=0, 1 finish, x=2 is pruned, x=3 crashes."""
    result = toy("hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=50", "crash_at=3")
    assert result.returncode == 0, result.stderr
    assert "0 of 4 trials done, 4 to run" in result.stderr + result.stdout  # capped at the grid
    study = load(tmp_path / "study.db", "toy")
    assert [(t.params["x"], t.state) for t in study.trials] == [
        (0, TrialState.COMPLETE),
        (1, TrialState.COMPLETE),
        (2, TrialState.PRUNED),
        (3, TrialState.FAIL),
    ]
    records = trial_records(tmp_path / "sweep")
    assert sorted(records) == [0, 1, 2, 3]
    by_x = {r["params"]["x"]: r for r in records.values()}
    assert by_x[0]["state"] == "COMPLETE" and by_x[0]["value"] == pytest.approx(1 / 3)
    assert by_x[2]["state"] == "PRUNED" and by_x[2]["pruned_at_epoch"] == 1
    assert by_x[2]["value"] == pytest.approx(11.02)  # the last value it reported
    assert by_x[3]["state"] == "FAIL" and by_x[3]["value"] is None
    assert "RuntimeError: boom" in by_x[3]["reason"]
    summary = json.loads((tmp_path / "sweep" / "optuna_study.json").read_text())
    assert summary["best"]["params"] == {"x": 0}
    assert summary["trials"] == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 1}


def test_interrupted_sweep_resumes_where_it_stopped(toy, tmp_path: Path) -> None:
    """A Ctrl-C'd trial (the job exits 130) is not counted and runs again on resume."""
    grid = ["hydra.sweeper.sampler=grid", "hydra.sweeper.pruner=none"]
    cut = toy(*grid, "interrupt_at=1")
    assert cut.returncode == 130
    study = load(tmp_path / "study.db", "toy")
    assert [(t.params.get("x"), t.state) for t in study.trials] == [
        (0, TrialState.COMPLETE),
        (1, TrialState.FAIL),  # marked interrupted
        (None, TrialState.WAITING),  # x=1 queued to run again
    ]
    assert study.trials[1].user_attrs[INTERRUPTED_ATTR] is True
    resumed = toy(*grid)  # the same command, without the Ctrl-C
    assert resumed.returncode == 0, resumed.stderr
    assert "1 of 4 trials done, 3 to run" in resumed.stderr + resumed.stdout
    study = load(tmp_path / "study.db", "toy")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert [(t.number, t.params["x"]) for t in complete] == [(0, 0), (2, 1), (3, 2), (4, 3)]
    assert study.trials[2].user_attrs[RETRY_OF_ATTR] == 1
    # job dirs are numbered by trial, so resuming in the same sweep dir overwrites nothing
    assert sorted(trial_records(tmp_path / "sweep")) == [0, 2, 3, 4]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_resumed_search_continues_the_sampler(toy, tmp_path: Path, sampler: str) -> None:
    """n_trials=3, then 5 on the same study: trials 3 and 4 are new draws, never replays
    of trials 0 and 1, and exactly what one uninterrupted n_trials=5 search draws."""
    common = [f"hydra.sweeper.sampler={sampler}", "report=false", "y=interval(0, 1)"]
    for n_trials in (3, 5):
        result = toy(*common, f"hydra.sweeper.n_trials={n_trials}")
        assert result.returncode == 0, result.stderr
    assert "3 of 5 trials done, 2 to run" in result.stderr + result.stdout
    resumed = [t.params for t in load(tmp_path / "study.db", "toy").trials]
    assert len({p["y"] for p in resumed}) == 5  # five distinct draws
    fresh = toy(
        *common,
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.storage=sqlite:///fresh.db",
        "hydra.sweep.dir=fresh",
    )
    assert fresh.returncode == 0, fresh.stderr
    assert [t.params for t in load(tmp_path / "fresh.db", "toy").trials] == resumed


N_TRIALS = "hydra.sweeper.n_trials"


def test_resumed_grid_keeps_its_order(toy, tmp_path: Path) -> None:
    """A grid stopped after 2 points continues with the 3rd and 4th, in product order."""
    for n_trials in (2, 4):
        result = toy("hydra.sweeper.sampler=grid", "report=false", f"{N_TRIALS}={n_trials}")
        assert result.returncode == 0, result.stderr
    study = load(tmp_path / "study.db", "toy")
    assert [t.params["x"] for t in study.trials] == [0, 1, 2, 3]


def test_negative_seed_is_refused() -> None:
    space = parse_search_space(["x=choice(0, 1)"], OverridesParser.create())
    with pytest.raises(UserError, match=r"hydra\.sweeper\.seed=-1"):
        build_sampler("random", -1, space)


def test_resume_refuses_a_changed_choice_list(tmp_path: Path) -> None:
    """Optuna rejects new choices for a searched key mid-sweep; say so before starting."""
    parser = OverridesParser.create()
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    study.tell(study.ask({"x": CategoricalDistribution([0, 1])}), 1.0)
    with pytest.raises(UserError, match="already searched x"):
        open_study(
            storage=f"sqlite:///{tmp_path / 's.db'}",
            study_name="s",
            direction="minimize",
            sampler=optuna.samplers.RandomSampler(seed=0),
            pruner="none",
            pruner_args={},
            space=parse_search_space(["x=choice(0, 2)"], parser),
        )


def test_sweep_refuses_an_unknown_direction_in_one_line(toy) -> None:
    result = toy("hydra.sweeper.direction=sideways")
    assert result.returncode != 0
    assert "hydra.sweeper.direction=sideways" in result.stderr
    assert "Traceback" not in result.stderr


# --- plugin discovery and the real CLI -----------------------------------------------

PROBE = """
import sys
sys.argv = ["dlrun", *sys.argv[1:]]
from dlrun.cli import main
try:
    main()
finally:
    print("HEAVY:", sorted({"torch", "optuna"} & set(sys.modules)))
"""


def test_hydra_finds_the_sweeper_without_importing_optuna(workdir: Path) -> None:
    out = python("-c", PROBE, "hydra/sweeper=dlrun_optuna", "--cfg", "hydra", cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert "DlrunOptunaSweeper" in out.stdout
    assert "HEAVY: []" in out.stdout


# The real CLI, shrunk: 2 epochs of 2 batches per trial; most of each command's few
# seconds go to importing torch, scikit-learn and torchmetrics once.
REAL = [f"{HPARAMS}=mlp_iris", "trainer.epochs=2", "trainer.limit_batches=2"]


TWO_SWEEPS = """
import sys
from dlrun.cli import main

given = sys.argv[1:]
for n_trials, sweep_dir in ((2, "s1"), (3, "s2")):
    sys.argv = ["dlrun", "-m", *given, f"hydra.sweeper.n_trials={n_trials}",
                f"hydra.sweep.dir={sweep_dir}"]
    try:
        main()  # ends with sys.exit(0) as the dlrun command does
    except SystemExit as done:
        if done.code:
            raise
    print("SWEPT", sweep_dir)
"""


def test_real_sweep_resumes_with_only_the_missing_trials(workdir: Path) -> None:
    """2 trials, then the same search with n_trials=3: only trial 2 runs, with new params.

    Both sweeps run in one process to pay for importing torch & co once (~5 s); the
    second is a new sweeper that reopens the study from its file, as a new command
    does. Resuming from a new process is covered by the toy-app tests above.
    """
    db = workdir / "search.db"
    common = [*REAL, f"hydra.sweeper.storage=sqlite:///{db}", "hydra.sweeper.pruner=none"]
    out = python("-c", TWO_SWEEPS, *common, cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert "SWEPT s1" in out.stdout and "SWEPT s2" in out.stdout
    assert "2 of 3 trials done, 1 to run" in out.stderr + out.stdout
    records = trial_records(workdir / "s1")
    assert sorted(records) == [0, 1]
    assert records[0]["monitor"] == "val_loss" and records[0]["direction"] == "minimize"
    assert set(records[0]["params"]) == {"optimizer.lr", "trainer.batch_size", "model.hidden"}
    history = (workdir / "s1" / "0_mlp_iris" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # a header and the two epochs asked for
    assert sorted(trial_records(workdir / "s2")) == [2]
    study = load(db, "mlp_iris")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    for trial in study.trials:  # the value told to Optuna is the job's best val_loss
        record = trial_records(workdir / ("s1" if trial.number < 2 else "s2"))[trial.number]
        metrics = json.loads((Path(trial.user_attrs[JOB_DIR_ATTR]) / "metrics.json").read_text())
        assert trial.value == record["value"] == metrics["train"]["best_value"]
    lrs = [t.params["optimizer.lr"] for t in study.trials]
    assert len(set(lrs)) == 3  # trial 2 is a new draw, not a replay of trial 0


def test_real_sweep_prunes_a_hopeless_learning_rate(workdir: Path) -> None:
    """Grid order: lr=0.05 finishes first, then lr=1e-5 (val_loss stuck) is pruned."""
    result = run_cli(
        "-m",
        *REAL,
        "hydra.sweeper.sampler=grid",
        "optimizer.lr=0.05,0.00001",
        "trainer.batch_size=16",
        "model.hidden=[32]",
        "hydra.sweeper.pruner_args={n_startup_trials: 1, n_warmup_steps: 0}",
        "hydra.sweep.dir=sw",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    assert "dlrun: trial 1 pruned at epoch 1" in result.stderr  # a search at work, not a
    assert "job failed" not in result.stderr  # failure
    records = trial_records(workdir / "sw")
    assert [records[n]["state"] for n in (0, 1)] == ["COMPLETE", "PRUNED"]
    assert records[1]["params"]["optimizer.lr"] == 1e-5
    assert records[1]["pruned_at_epoch"] == 1
    status = json.loads((workdir / "sw" / "1_mlp_iris" / "status.json").read_text())
    assert status["status"] == "pruned"
    history = (workdir / "sw" / "1_mlp_iris" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 1  # stopped after its first epoch, not run to the end


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("hydra.sweeper.n_trials=0", "n_trials and hydra.sweeper.n_jobs must be >= 1"),
        ("hydra.sweeper.sampler=bogus", "hydra.sweeper.sampler=bogus is unknown"),
        ("hydra.sweeper.direction=sideways", "hydra.sweeper.direction=sideways"),
        ("hydra.sweeper.pruner=bogus", "hydra.sweeper.pruner=bogus is unknown"),  # after the
        ("hydra.sweeper.pruner_args={n_startup_trials: -5}", "cannot be negative"),  # db is made
        (
            "hydra.sweeper.pruner_args={n_startup_trail: 1}",
            "unknown key hydra.sweeper.pruner_args.n_startup_trail: did you mean "
            "hydra.sweeper.pruner_args.n_startup_trials?",
        ),
    ],
)
def test_a_bad_sweeper_setting_is_a_config_error(workdir: Path, setting: str, says: str) -> None:
    """Exit 2 and one line, as for any config error; no sweep dir is left behind."""
    result = run_cli("-m", "hparams_search=mlp_iris", setting, "hydra.sweep.dir=sw", cwd=workdir)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlrun: error: ") and says in lines[0]
    assert not (workdir / "sw").exists()
