"""Ensembles: the combining model, dlrun-ensemble, bagging in one run and over a sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dlrun.data.spec import Task
from tests.conftest import SHRINK, compose_cfg, load_script, run_cli, run_tool, train_run


class Fixed(torch.nn.Module):
    """A member that always answers ``out``."""

    def __init__(self, out: list) -> None:
        super().__init__()
        self.register_buffer("out", torch.tensor(out, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out.expand(len(x), *self.out.shape)


def _ensemble(task: Task, method: str, *outs: list) -> torch.Tensor:
    from dlrun.nn.ensemble import Ensemble

    return Ensemble([Fixed(o) for o in outs], task, method)(torch.zeros(1, 2))[0]


def test_average_gives_the_mean_probability_back_through_the_task_activation() -> None:
    a, b = [2.0, 0.0, -1.0], [-1.0, 1.0, 0.5]
    mean = (torch.tensor(a).softmax(0) + torch.tensor(b).softmax(0)) / 2
    assert torch.allclose(_ensemble(Task.MULTICLASS, "average", a, b).softmax(0), mean)
    p = (torch.tensor([3.0, -2.0]).sigmoid() + torch.tensor([-1.0, 0.0]).sigmoid()) / 2
    got = _ensemble(Task.MULTILABEL, "average", [3.0, -2.0], [-1.0, 0.0]).sigmoid()
    assert torch.allclose(got, p)
    assert torch.allclose(_ensemble(Task.REGRESSION, "average", [1.0], [3.0]), torch.tensor([2.0]))


def test_vote_counts_classes_and_breaks_ties_by_confidence() -> None:
    shares = _ensemble(Task.MULTICLASS, "vote", [5.0, 0.0], [0.0, 1.0], [3.0, 0.0]).softmax(0)
    assert shares[0] == pytest.approx(2 / 3, abs=1e-3)
    tie = _ensemble(Task.MULTICLASS, "vote", [5.0, 0.0], [0.0, 0.5]).softmax(0)
    assert tie.argmax() == 0  # one vote each: the surer member's class wins
    assert _ensemble(Task.REGRESSION, "vote", [1.0], [7.0], [2.0]).item() == 2.0  # median


def test_averaging_never_has_a_worse_log_loss_than_the_mean_member() -> None:
    from dlrun.nn.ensemble import Ensemble
    from dlrun.tasks import loss_fn

    generator = torch.Generator().manual_seed(0)
    members = [torch.nn.Linear(4, 3) for _ in range(5)]
    x, y = torch.randn(64, 4, generator=generator), torch.randint(0, 3, (64,), generator=generator)
    loss = loss_fn(Task.MULTICLASS)
    with torch.no_grad():
        each = sum(float(loss(m(x), y)) for m in members) / len(members)
        together = float(loss(Ensemble(members, Task.MULTICLASS)(x), y))
    assert together <= each


def test_bootstrap_resamples_training_rows_only_and_by_member() -> None:
    from dlrun.data.sklearn_sets import load_iris
    from dlrun.ensembling import bootstrap

    bundle = load_iris(0)
    first, again, second = (bootstrap(bundle, 0, i) for i in (0, 0, 1))
    assert len(first.train) == len(bundle.train)
    assert torch.equal(first.train.x, again.train.x)
    assert not torch.equal(first.train.x, second.train.x)
    assert first.val is bundle.val and first.test is bundle.test
    assert len(torch.unique(first.train.x, dim=0)) < len(bundle.train)  # with replacement


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ensemble.bagging=1"], "ensemble.bagging=1 is invalid"),
        (["ensemble.member=0"], "ensemble.member=0 is invalid"),
        (["ensemble.bagging=2", "ensemble.method=mean"], "ensemble.method='mean' is invalid"),
        (["ensemble.bagging=2", "eval.protocol=kfold"], "use eval.protocol=holdout"),
    ],
)
def test_ensemble_settings_are_checked_first(overrides: list[str], message: str) -> None:
    from dlrun.config import validate
    from dlrun.errors import UserError

    with pytest.raises(UserError, match=message):
        validate(compose_cfg(*overrides))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("members")
    made = {}
    for name, extra in (("a", ["optimizer.lr=0.01", "eval.plots=true"]),
                        ("b", ["optimizer.lr=0.003"]), ("c", ["model.hidden=[16]"]),
                        ("seed1", ["seed=1"])):  # fmt: skip
        made[name] = root / name
        train_run(made[name], "model=mlp", "data=iris", "trainer.epochs=3", *extra)
    return made


def test_an_ensemble_of_runs_is_evaluated_like_a_run(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ens"
    result = run_tool("dlrun.ensemble_cli", f"runs=[{runs['a']},{runs['b']},{runs['c']}]",
                      f"out={out}", "method=vote")  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    table = metrics["ensemble"]
    assert table["method"] == "vote" and table["n_members"] == 3
    assert set(table["members"]) == {"members/1_a", "members/2_b", "members/3_c"}
    member = json.loads((runs["a"] / "metrics.json").read_text())["test"]["accuracy"]
    assert table["members"]["members/1_a"]["accuracy"] == pytest.approx(member)
    assert "comparison" in metrics and (out / "confusion_matrix.png").is_file()
    assert "## Ensemble (vote) and its 3 members" in (out / "report.md").read_text()
    # ... and used like one: predict (and export) take the ensemble dir
    import numpy as np

    from dlrun.predict_cli import DEFAULTS, predict_saved

    np.save(tmp_path / "x.npy", np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]))
    predicted, _ = predict_saved({**DEFAULTS, "run": str(out), "input": str(tmp_path / "x.npy")})
    assert len((predicted / "predictions.csv").read_text().splitlines()) == 3


def test_members_tested_on_another_split_are_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "mixed"
    result = run_tool("dlrun.ensemble_cli", f"runs=[{runs['a']},{runs['seed1']}]", f"out={out}")
    assert result.returncode == 2
    assert "another test split" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()  # nothing half-written is left


def test_the_top_k_of_a_sweep_by_validation(tmp_path: Path) -> None:
    made = run_cli("-m", "model=mlp", "data=iris", "optimizer.lr=0.03,0.01,0.0001",
                   "trainer.epochs=3", "hydra.sweep.dir=sweep", cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    from dlrun import leaderboard

    ranked = [j.name for j in leaderboard.rank(leaderboard.collect(tmp_path / "sweep"))]
    result = run_tool("dlrun.ensemble_cli", f"sweep={tmp_path / 'sweep'}", "top_k=2")
    assert result.returncode == 0, result.stderr
    ensemble = json.loads((tmp_path / "sweep" / "ensemble_top2" / "ensemble.json").read_text())
    assert ensemble["sources"] == [str(tmp_path / "sweep" / name) for name in ranked[:2]]


def test_bagging_in_one_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "bag"
    made = run_cli("model=mlp", "data=iris", "ensemble.bagging=2", *SHRINK,
                   f"hydra.run.dir={run_dir}", cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["members"] == 2 and set(metrics["ensemble"]["members"]) == {
        "member_1", "member_2"}  # fmt: skip
    for member in ("member_1", "member_2"):
        saved = json.loads((run_dir / member / "metrics.json").read_text())
        assert saved["member"]["bootstrap"] and (run_dir / member / ".hydra").is_dir()
        config = (run_dir / member / ".hydra" / "config.yaml").read_text()
        assert "bagging: 0" in config  # a member is one model, not a bag again
    result = run_tool("dlrun.export_cli", f"run={run_dir}", "exporter=legacy")
    assert result.returncode == 0, result.stderr
    parity = json.loads((run_dir / "export" / "onnx" / "parity.json").read_text())
    assert parity["float32"]["max_abs_diff"] < 1e-5


def test_bagging_members_in_parallel_jobs_of_a_sweep(tmp_path: Path) -> None:
    made = run_cli("-m", "model=mlp", "data=iris", "ensemble.bagging=2", "ensemble.member=0,1",
                   *SHRINK, "hydra.sweep.dir=sweep", cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    ensemble = tmp_path / "sweep" / "ensemble"
    assert json.loads((ensemble / "ensemble.json").read_text())["method"] == "average"
    assert json.loads((ensemble / "metrics.json").read_text())["ensemble"]["n_members"] == 2


@pytest.mark.slow
def test_the_ready_bagging_experiment_beats_the_single_model(tmp_path: Path) -> None:
    module = load_script("bagging")
    results = module.experiment(tmp_path, seeds=5, members=10, extra=[], name="mlp_bagging")
    for metric, sign in (("loss", 1), ("accuracy", -1)):  # the README's means over 5 seeds
        single, bagged = results[metric]["single model"], results[metric]["bagging (10 members)"]
        assert sign * sum(bagged) < sign * sum(single)


def test_a_resumed_bag_keeps_its_finished_members(tmp_path: Path) -> None:
    import shutil

    from dlrun.rundir import write_status

    run_dir = tmp_path / "bag"
    made = run_cli("model=mlp", "data=iris", "ensemble.bagging=2", *SHRINK,
                   f"hydra.run.dir={run_dir}", cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    first = (run_dir / "member_1" / "checkpoints" / "best.pt").stat().st_mtime_ns
    shutil.rmtree(run_dir / "member_2" / "checkpoints")  # as if stopped in member 2's
    (run_dir / "member_2" / "metrics.json").unlink()  # first epoch
    write_status(run_dir, "interrupted", reason="test")
    resumed = run_cli(f"resume={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "member 1/2 (member_1): done" in resumed.stdout
    assert (run_dir / "member_1" / "checkpoints" / "best.pt").stat().st_mtime_ns == first
    assert (run_dir / "member_2" / "checkpoints" / "best.pt").is_file()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


def test_a_k_fold_run_ensembles_its_fold_models(tmp_path: Path) -> None:
    from dlrun.ensemble_cli import DEFAULTS, build
    from dlrun.errors import UserError
    from dlrun.predictor import load_predictor

    run_dir = tmp_path / "kfold"
    made = run_cli("model=mlp", "data=iris", "eval.protocol=kfold", "eval.folds=3", *SHRINK,
                   f"hydra.run.dir={run_dir}", cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    with pytest.raises(UserError, match=r"dlrun-ensemble runs=\["):
        load_predictor(run_dir)  # one model per fold: the message says how to use them
    out, metrics = build({**DEFAULTS, "runs": f"[{run_dir}]", "out": str(tmp_path / "ens")})
    table = metrics["ensemble"]["members"]
    assert list(table) == [f"members/{k}_kfold_fold_{k}" for k in (1, 2, 3)]
    for k in (1, 2, 3):
        fold = json.loads((run_dir / f"fold_{k}" / "metrics.json").read_text())["test"]
        assert table[f"members/{k}_kfold_fold_{k}"]["accuracy"] == pytest.approx(fold["accuracy"])
    assert len(load_predictor(out).members) == 3
    with pytest.raises(UserError, match="at least two models"):
        build({**DEFAULTS, "runs": f"[{run_dir / 'fold_1'}]", "out": str(tmp_path / "one")})
