"""Experiment trackers: the logger group, what a tracker is told, and that it can't hurt a run.

The protocol is tested end to end through the real CLI and the real tracking worker
with :class:`tests.fake_tracker.FakeTracker`, which writes every call it gets to a file.
TensorBoard (in the dev extras) runs for real here; MLflow against a real server, and
W&B, are in tests/test_tracking_services.py (``make test-services``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dlrun.config import validate
from dlrun.errors import UserError
from dlrun.tracking import content, logger_specs
from dlrun.trust import check_replayed_overrides
from tests.conftest import ROOT, compose_cfg, run_cli, sigterm_after_first_epoch
from tests.fake_tracker import calls

IRIS = ["model=mlp", "data=iris", "trainer.epochs=2", "trainer.progress=none"]
ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def fake(path: Path, name: str = "fake", **options: str) -> list[str]:
    """Overrides that add a FakeTracker writing its calls to ``path``."""
    node = f"++logger.{name}"
    out = [f"{node}._target_=tests.fake_tracker.FakeTracker", f"{node}.path={path}",
           f"{node}.name={name}"]  # fmt: skip
    return out + [f"{node}.{k}={v}" for k, v in options.items()]


def by_op(records: list[dict], op: str, run_dir: Path | None = None) -> list[dict]:
    return [r for r in records if r["op"] == op and (run_dir is None or r["dir"] == str(run_dir))]


# --- the logger group ------------------------------------------------------------------


def test_loggers_combine_into_a_dict_of_trackers() -> None:
    both = compose_cfg("logger=[mlflow,tensorboard]").logger
    assert list(both) == ["mlflow", "tensorboard"]
    assert both["mlflow"]["_target_"].endswith("MLflowTracker")
    assert logger_specs(compose_cfg("logger=none").logger) == {}
    assert logger_specs(compose_cfg().logger) == {}  # the default: no tracker
    assert list(logger_specs(compose_cfg("logger=wandb").logger)) == ["wandb"]


def test_a_tracker_setting_is_found_under_its_tracker(workdir: Path) -> None:
    result = run_cli("logger=mlflow", "logger.tracking_uri=http://host:5000", cwd=workdir)
    assert result.returncode == 2
    assert "did you mean logger.mlflow.tracking_uri=http://host:5000?" in result.stderr


def test_a_missing_tracker_package_is_named_for_every_chosen_logger(monkeypatch) -> None:
    from dlrun import config

    monkeypatch.setattr(config, "_installed", lambda module: module != "mlflow")
    cfg = compose_cfg("logger=[tensorboard,mlflow]")
    with pytest.raises(UserError, match=r"logger=mlflow needs mlflow.*dlrun\[tracking\]"):
        validate(cfg)


def test_resume_replays_a_list_of_loggers_but_only_dlruns_own(tmp_path: Path) -> None:
    check_replayed_overrides(["logger=[mlflow,tensorboard]"], tmp_path)
    with pytest.raises(UserError, match="'evil' is not an option"):
        check_replayed_overrides(["logger=[mlflow,evil]"], tmp_path)


# --- what a tracker is told ------------------------------------------------------------


def test_params_are_the_flattened_config_and_the_overrides() -> None:
    cfg = {"optimizer": {"lr": 0.01, "betas": [0.9, 0.99]}, "summary": "x", "trial": {"n": 1}}
    out = content.params(cfg, ["optimizer.lr=0.01", "model=mlp"])
    assert out == {
        "optimizer.lr": "0.01",
        "optimizer.betas": "[0.9, 0.99]",
        "overrides": "optimizer.lr=0.01 model=mlp",
    }


def test_final_metrics_are_named_by_split_and_source() -> None:
    metrics = {
        "splits": ["test", "val"],
        "test": {"accuracy": 0.9, "per_class": {"a": {}}, "roc_auc": None},
        "val": {"accuracy": 0.8},
        "baseline": {"accuracy": 0.1},
        "comparison": {"difference": 0.5, "ci": [0.4, 0.6], "verdict": "better"},
        "train": {"monitor": "val_loss", "best_value": 0.3, "best_epoch": 4, "epochs": 5},
        "cv": {"accuracy": {"mean": 0.85, "std": 0.02, "ci": [0.8, 0.9]}},
    }
    assert content.final_metrics(metrics) == {
        "test_accuracy": 0.9,
        "eval_val_accuracy": 0.8,
        "baseline_accuracy": 0.1,
        "cv_accuracy": 0.85,
        "cv_accuracy_std": 0.02,
        "vs_baseline_difference": 0.5,
        "vs_baseline_ci_low": 0.4,
        "vs_baseline_ci_high": 0.6,
        "best_val_loss": 0.3,
        "best_epoch": 4.0,
        "epochs_trained": 5.0,
    }
    assert content.final_tags(metrics, "completed") == {"status": "completed", "verdict": "better"}


def test_a_fold_shares_its_kfold_runs_state_until_it_has_finished(tmp_path: Path) -> None:
    fold = tmp_path / "fold_1"
    fold.mkdir()
    (tmp_path / "status.json").write_text('{"status": "interrupted"}')
    assert content.run_status(fold, "fold") == "interrupted"
    (fold / "metrics.json").write_text('{"train": {}}')
    assert content.run_status(fold, "fold") == "completed"


# --- through the CLI and the worker ----------------------------------------------------


def check_tensorboard(run_dir: Path) -> None:
    """TensorBoard (in the dev extras) got every epoch and the test metrics."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert {"loss", "val_loss", "val_accuracy", "lr", "test_accuracy"} <= set(
        events.Tags()["tensors"]
    )

    def values(tag: str) -> list[tuple[int, float]]:
        return [(e.step, float(e.tensor_proto.float_val[0])) for e in events.Tensors(tag)]

    assert [step for step, _ in values("val_loss")] == [1, 2]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert values("test_accuracy")[0][1] == pytest.approx(metrics["test"]["accuracy"], rel=1e-6)
    check_tensorboard_hparams(events)


def check_tensorboard_hparams(events) -> None:
    """The config is on TensorBoard's HParams dashboard, numbers as numbers."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["trainer.epochs"].number_value == 2
    assert hparams["model._target_"].string_value == "dlrun.models.mlp.MLP"
    assert hparams["model.batch_norm"].bool_value is False and hparams["model.batch_norm"].HasField(
        "bool_value"
    )
    assert hparams["overrides"].string_value.startswith("model=mlp data=iris")


def test_a_run_tells_its_tracker_everything_its_files_hold(workdir: Path) -> None:
    log = workdir / "calls.jsonl"
    run_dir = workdir / "run"
    result = run_cli(*IRIS, *fake(log), "logger=tensorboard", f"hydra.run.dir={run_dir}",
                     cwd=workdir, env=ENV)  # fmt: skip
    assert result.returncode == 0, result.stderr
    check_tensorboard(run_dir)
    records = calls(log)
    assert [r["op"] for r in records] == [
        "start", "log_metrics", "log_metrics", "log_metrics", "set_tags", "log_files", "finish",
    ]  # fmt: skip
    start = records[0]
    assert start["kind"] == "run" and start["parent"] is None and start["previous"] is None
    assert start["params"]["optimizer.lr"] == "0.002" and start["params"]["model.hidden"]
    assert "model=mlp" in start["params"]["overrides"]
    assert start["tags"]["model"] == "mlp" and start["tags"]["data"] == "iris"
    assert start["tags"]["task"] == "multiclass"
    epochs = by_op(records, "log_metrics")
    assert [e["step"] for e in epochs] == [1, 2, 2]
    assert {"loss", "val_loss", "accuracy", "val_accuracy", "lr"} <= set(epochs[0]["values"])
    final = epochs[-1]["values"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert final["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert final["baseline_f1_macro"] == pytest.approx(metrics["baseline"]["f1_macro"])
    monitor = metrics["train"]["monitor"]
    assert final[f"best_{monitor}"] == pytest.approx(metrics["train"]["best_value"])
    assert by_op(records, "set_tags")[0]["tags"]["verdict"] == metrics["comparison"]["verdict"]
    files = by_op(records, "log_files")[0]["files"]
    assert {"report.html", "report.md", "predictions.csv", "history.csv", "metrics.json",
            "hydra/config.yaml", "checkpoints/best.pt"} <= set(files)  # fmt: skip
    assert by_op(records, "finish")[0]["state"] == "completed"
    assert json.loads((run_dir / "tracking.json").read_text())["fake"] == {
        "id": "run:run",
        "dir": str(run_dir),
    }


def test_sweep_jobs_are_children_of_the_sweeps_run(workdir: Path) -> None:
    log = workdir / "calls.jsonl"
    sweep = workdir / "sweep"
    result = run_cli("-m", *IRIS, "optimizer.lr=0.1,0.01", *fake(log), f"hydra.sweep.dir={sweep}",
                     cwd=workdir, env=ENV)  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = calls(log)
    starts = by_op(records, "start")
    assert [s["kind"] for s in starts] == ["sweep", "run", "run"]
    assert "optimizer.lr=0.1,0.01" in starts[0]["params"]["overrides"]
    for job in starts[1:]:
        assert job["parent"] == {"id": "sweep:sweep", "dir": str(sweep)}
        assert job["tags"]["sweep_id"] == "sweep" and job["group"] == "sweep"
    sweep_files = by_op(records, "log_files", sweep)[0]["files"]
    assert {"leaderboard.html", "leaderboard.md", "leaderboard.csv"} <= set(sweep_files)
    assert records[-1] == {"op": "finish", "dir": str(sweep), "state": "completed"}
    summary = by_op(records, "log_metrics", sweep)[0]["values"]
    assert summary["jobs"] == 2 and any(k.startswith("best_val_") for k in summary)
    again = run_cli("-m", *IRIS, "optimizer.lr=0.1,0.01", *fake(log), f"hydra.sweep.dir={sweep}",
                    cwd=workdir, env=ENV)  # fmt: skip
    assert again.returncode == 0 and "warning" not in again.stderr, again.stderr
    resumed = calls(log)[len(records) :]
    assert [(r["op"], r.get("kind")) for r in by_op(resumed, "start")] == [("start", "sweep")]
    assert by_op(resumed, "start")[0]["previous"] == {"id": "sweep:sweep", "dir": str(sweep)}
    assert {r["dir"] for r in resumed} == {str(sweep)}  # the skipped jobs are left alone


def test_kfold_folds_are_children_of_the_kfold_run(workdir: Path) -> None:
    log = workdir / "calls.jsonl"
    run_dir = workdir / "run"
    result = run_cli(*IRIS, "eval.protocol=kfold", "eval.folds=2", *fake(log),
                     f"hydra.run.dir={run_dir}", cwd=workdir, env=ENV)  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = calls(log)
    starts = by_op(records, "start")
    assert [(s["kind"], Path(s["dir"]).name) for s in starts] == [
        ("kfold", "run"), ("fold", "fold_1"), ("fold", "fold_2"),
    ]  # fmt: skip
    assert all(s["parent"] == {"id": "kfold:run", "dir": str(run_dir)} for s in starts[1:])
    finishes = [(Path(r["dir"]).name, r["state"]) for r in by_op(records, "finish")]
    assert finishes == [("fold_1", "completed"), ("fold_2", "completed"), ("run", "completed")]
    kfold_values = by_op(records, "log_metrics", run_dir)[0]["values"]
    assert {"cv_accuracy", "cv_accuracy_std", "test_accuracy"} <= set(kfold_values)


def test_a_failing_tracker_never_loses_the_run(workdir: Path) -> None:
    good, bad = workdir / "good.jsonl", workdir / "bad.jsonl"
    run_dir = workdir / "run"
    result = run_cli(*IRIS, *fake(good), *fake(bad, name="flaky", fail_on="log_metrics"),
                     "++logger.gone._target_=no.such.Tracker", f"hydra.run.dir={run_dir}",
                     cwd=workdir, env=ENV)  # fmt: skip
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2, result.stderr  # one line per tracker that failed
    flaky = next(w for w in warnings if "flaky" in w)
    assert "logger flaky could not log the metrics of epoch 1" in flaky
    assert "ConnectionRefusedError: flaky is down" in flaky
    assert any("logger gone could not load" in w for w in warnings)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert (run_dir / "report.html").is_file() and (run_dir / "metrics.json").is_file()
    assert [r["op"] for r in calls(bad)] == ["start"]  # nothing after the failure
    assert by_op(calls(good), "finish")[0]["state"] == "completed"  # the other one: all


def test_the_worker_ends_without_the_interpreters_teardown_once_all_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tearing down MLflow's modules was ~0.6 s of every run's end: skipped, but the exit
    handlers (MLflow's, W&B's flushes) still run; a run left open gets the normal exit."""
    import threading

    from dlrun import process_exit
    from dlrun.tracking import worker
    from dlrun.tracking.session import OpenRun, Session

    exits: list[int] = []
    handlers: list[str] = []
    monkeypatch.setattr(process_exit.os, "_exit", exits.append)
    monkeypatch.setattr(process_exit.atexit, "_run_exitfuncs", lambda: handlers.append("ran"))
    monkeypatch.setattr(process_exit.threading, "enumerate", lambda: [threading.main_thread()])
    session = Session(tmp_path)
    worker.leave(session)
    assert exits == [0] and handlers == ["ran"]
    session.runs[tmp_path] = OpenRun(tmp_path, "run", None)  # its training process was killed
    worker.leave(session)
    assert exits == [0] and handlers == ["ran"]


def test_epochs_that_end_within_a_second_go_to_the_trackers_in_one_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fast run's epochs cost a few tracker calls (each a transaction beside training),
    not one each; a slow run's epochs are logged as each ends; nothing is lost."""
    from dlrun.tracking import worker
    from dlrun.tracking.session import Session

    class Calls(Session):
        def __init__(self) -> None:
            super().__init__(tmp_path)
            self.calls: list[tuple[Path, list[int]]] = []

        def log_rows(self, run_dir: Path, msgs: list[dict]) -> None:
            self.calls.append((run_dir, [m["step"] for m in msgs]))

    now = [100.0]
    monkeypatch.setattr(worker.time, "monotonic", lambda: now[0])
    session = Calls()
    epochs = worker.Epochs(session)
    assert epochs.wait() is None  # nothing waits: block until the next message
    a, b = tmp_path / "a", tmp_path / "b"
    epochs.add({"dir": str(a), "step": 1, "row": {}})  # the first: logged at once
    now[0] += 0.3
    epochs.add({"dir": str(a), "step": 2, "row": {}})
    epochs.add({"dir": str(b), "step": 1, "row": {}})
    now[0] += 0.3
    epochs.add({"dir": str(a), "step": 3, "row": {}})
    assert session.calls == [(a, [1])] and epochs.wait() == pytest.approx(0.4)
    now[0] += 0.4
    assert epochs.wait() == 0
    epochs.flush()  # the second is over: the rows that waited, one call per run
    assert session.calls == [(a, [1]), (a, [2, 3]), (b, [1])]
    now[0] += 5.0  # a slow epoch: logged as it ends
    epochs.add({"dir": str(a), "step": 4, "row": {}})
    assert session.calls[-1] == (a, [4]) and epochs.wait() is None


def test_the_trackers_exit_handlers_run_before_the_worker_ends(workdir: Path) -> None:
    log = workdir / "calls.jsonl"
    result = run_cli(*IRIS, *fake(log, at_exit="true"), f"hydra.run.dir={workdir / 'run'}",
                     cwd=workdir, env=ENV)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [r["op"] for r in calls(log)][-2:] == ["finish", "exit"]


def test_an_interrupted_run_is_marked_interrupted(workdir: Path) -> None:
    log = workdir / "calls.jsonl"
    run_dir = workdir / "run"
    args = ["model=mlp", "data=digits_flat", "trainer.progress=none", *fake(log)]
    code, err = sigterm_after_first_epoch(*args, run_dir=run_dir, cwd=workdir, env=ENV)
    assert code == 130, err
    assert by_op(calls(log), "finish")[-1]["state"] == "interrupted"
    assert json.loads((run_dir / "tracking.json").read_text())["fake"]["id"] == "run:run"


def test_a_resumed_run_continues_its_tracker_runs(tmp_path: Path) -> None:
    """dlrun resume= reopens the run dir: each tracker gets its own earlier record."""
    from dlrun.tracking.session import Session

    log = tmp_path / "calls.jsonl"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "tracking.json").write_text('{"fake": {"id": "earlier"}}')
    spec = {"_target_": "tests.fake_tracker.FakeTracker", "path": str(log)}
    Session(tmp_path).open({"dir": str(run_dir), "kind": "run", "loggers": {"fake": spec}})
    (start,) = calls(log)
    assert start["previous"] == {"id": "earlier"}
    assert json.loads((run_dir / "tracking.json").read_text()) == {
        "fake": {"id": "run:run", "dir": str(run_dir)}
    }


@pytest.mark.distributed
def test_a_multi_process_run_is_finished_by_its_parent(workdir: Path) -> None:
    """trainer.devices=2: rank 0 starts the tracker run and logs the epochs; the parent
    process, which writes the final files, continues the same tracker run and ends it."""
    log = workdir / "calls.jsonl"
    run_dir = workdir / "run"
    result = run_cli(*IRIS, "trainer.devices=2", *fake(log), f"hydra.run.dir={run_dir}",
                     cwd=workdir, env=ENV)  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = calls(log)
    starts = by_op(records, "start")
    assert len(starts) == 2 and starts[1]["previous"] == {"id": "run:run", "dir": str(run_dir)}
    assert [e["step"] for e in by_op(records, "log_metrics")][:2] == [1, 2]
    assert "test_accuracy" in by_op(records, "log_metrics")[-1]["values"]
    assert records[-1]["op"] == "finish" and records[-1]["state"] == "completed"
