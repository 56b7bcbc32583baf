"""MLflow and W&B for real: MLflow's default local store, a real ``mlflow server`` on
127.0.0.1 (SQLite behind it) started and stopped here, a server that is down, and W&B
offline. ``make test-services`` installs ``dlrun[tracking,wandb]`` and runs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli, sigterm_after_first_epoch

pytestmark = pytest.mark.services

NO_MLFLOW = "no mlflow: make test-services installs dlrun[tracking]"
IRIS = ["model=mlp", "data=iris", "trainer.epochs=2", "trainer.progress=none"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mlflow_runs(uri: str) -> dict[str, object]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("dlrun")
    assert experiment is not None
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


@contextlib.contextmanager
def mlflow_serving(args: list[str], cwd: Path) -> Iterator[str]:
    """``mlflow <args>`` (``server`` or ``ui``) on a free local port until it answers."""
    port = free_port()
    log_path = cwd / f"mlflow-{port}.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", *args, "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # it creates its database first; a busy machine takes a while
            if proc.poll() is not None:
                pytest.fail(f"mlflow {args[0]} exited: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"mlflow {args[0]} never answered: {log_path.read_text()[-2000:]}")
        yield url
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """End a server and its workers: SIGTERM, and SIGKILL if it is still shutting down
    gracefully a while later (on a loaded machine uvicorn's shutdown took over a minute)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite store, proxied artifacts) on a free local port."""
    pytest.importorskip("mlflow", reason=NO_MLFLOW)
    root = tmp_path_factory.mktemp("mlflow_server")
    args = ["server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"), "--workers", "1"]  # fmt: skip
    with mlflow_serving(args, root) as url:
        yield url


def fetch(url: str, body: dict[str, object] | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return answer.read()


def test_mlflow_default_local_store_out_of_the_box(workdir: Path) -> None:
    pytest.importorskip("mlflow", reason=NO_MLFLOW)
    run_dir = workdir / "run"
    result = run_cli(
        *IRIS,
        "logger=mlflow",
        f"hydra.run.dir={run_dir}",
        cwd=workdir,
        env={"MLFLOW_TRACKING_URI": ""},
    )  # unset: MLflow's default
    assert result.returncode == 0, result.stderr
    assert (workdir / "mlflow.db").is_file()  # MLflow's own default, where dlrun ran
    record = json.loads((run_dir / "tracking.json").read_text())["mlflow"]
    assert record["tracking_uri"] == f"sqlite:///{workdir / 'mlflow.db'}"
    assert f"is run {record['run_id']}" in result.stderr
    run = mlflow_runs(record["tracking_uri"])["run"]
    assert run.info.status == "FINISHED"  # type: ignore[attr-defined]
    # The README's way to see it: `mlflow ui --backend-store-uri sqlite:///mlflow.db` there.
    with mlflow_serving(["ui", "--backend-store-uri", "sqlite:///mlflow.db"], workdir) as url:
        search = {"experiment_ids": [run.info.experiment_id]}  # type: ignore[attr-defined]
        found = json.loads(fetch(f"{url}/ajax-api/2.0/mlflow/runs/search", search))["runs"]
        assert [r["info"]["run_id"] for r in found] == [record["run_id"]]
        page = fetch(f"{url}/get-artifact?path=report.html&run_uuid={record['run_id']}")
        assert page == (run_dir / "report.html").read_bytes()


def test_mlflow_server_gets_a_sweep_with_nested_jobs(mlflow_server: str, workdir: Path) -> None:
    from mlflow import MlflowClient

    sweep = workdir / "sweep"
    result = run_cli("-m", *IRIS, "optimizer.lr=0.1,0.01", "logger=mlflow", "eval.plots=true",
                     f"logger.mlflow.tracking_uri={mlflow_server}", f"hydra.sweep.dir={sweep}",
                     cwd=workdir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs = mlflow_runs(mlflow_server)
    parent = runs["sweep"]
    jobs = [runs["0_mlp_iris"], runs["1_mlp_iris"]]
    client = MlflowClient(mlflow_server)
    assert parent.info.status == "FINISHED"  # type: ignore[attr-defined]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {  # type: ignore[attr-defined]
        "leaderboard.html", "leaderboard.csv"}  # fmt: skip
    for job, lr in zip(jobs, ("0.1", "0.01"), strict=True):
        data = job.data  # type: ignore[attr-defined]
        run_id = job.info.run_id  # type: ignore[attr-defined]
        assert data.tags["mlflow.parentRunId"] == parent.info.run_id  # type: ignore[attr-defined]
        assert data.tags["sweep_id"] == "sweep" and data.tags["model"] == "mlp"
        assert data.tags["task"] == "multiclass" and data.tags["data"] == "iris"
        assert (
            data.params["optimizer.lr"] == lr and f"optimizer.lr={lr}" in data.params["overrides"]
        )
        history = client.get_metric_history(run_id, "val_loss")
        assert sorted(m.step for m in history) == [1, 2]
        metrics = json.loads((sweep / job.info.run_name / "metrics.json").read_text())  # type: ignore[attr-defined]
        assert data.metrics["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
        assert data.metrics["baseline_accuracy"] == pytest.approx(metrics["baseline"]["accuracy"])
        files = {a.path for a in client.list_artifacts(run_id)}
        assert {"report.html", "report.md", "predictions.csv", "confusion_matrix.png"} <= files
        assert "checkpoints" not in files  # only with logger.mlflow.log_checkpoints=true


def test_mlflow_server_gets_kfold_folds_nested_and_checkpoints_on_request(
    mlflow_server: str, workdir: Path
) -> None:
    from mlflow import MlflowClient

    run_dir = workdir / "kfold"
    result = run_cli(*IRIS, "eval.protocol=kfold", "eval.folds=2", "logger=mlflow",
                     f"logger.mlflow.tracking_uri={mlflow_server}",
                     "logger.mlflow.log_checkpoints=true", f"hydra.run.dir={run_dir}",
                     cwd=workdir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs = mlflow_runs(mlflow_server)
    record = json.loads((run_dir / "tracking.json").read_text())["mlflow"]
    parent = next(r for r in runs.values() if r.info.run_id == record["run_id"])  # type: ignore[attr-defined]
    assert "cv_accuracy" in parent.data.metrics  # type: ignore[attr-defined]
    client = MlflowClient(mlflow_server)
    for fold in ("fold_1", "fold_2"):
        fold_id = json.loads((run_dir / fold / "tracking.json").read_text())["mlflow"]["run_id"]
        run = client.get_run(fold_id)
        assert run.data.tags["mlflow.parentRunId"] == record["run_id"]
        assert run.info.status == "FINISHED"
        assert {a.path for a in client.list_artifacts(fold_id, "checkpoints")} == {
            "checkpoints/best.pt", "checkpoints/last.pt"}  # fmt: skip


def test_a_resumed_run_continues_its_mlflow_run(mlflow_server: str, workdir: Path) -> None:
    from mlflow import MlflowClient

    run_dir = workdir / "run"
    args = ["model=mlp", "data=digits_flat", "trainer.progress=none", "logger=mlflow",
            f"logger.mlflow.tracking_uri={mlflow_server}"]  # fmt: skip
    code, err = sigterm_after_first_epoch(*args, run_dir=run_dir, cwd=workdir)
    assert code == 130, err
    record = json.loads((run_dir / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(mlflow_server)
    assert client.get_run(record["run_id"]).info.status == "KILLED"
    done = client.get_metric_history(record["run_id"], "val_loss")
    result = run_cli(f"resume={run_dir}", f"trainer.epochs={len(done) + 1}", cwd=workdir)
    assert result.returncode == 0, result.stderr
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "true"
    steps = sorted(m.step for m in client.get_metric_history(record["run_id"], "val_loss"))
    assert steps == list(range(1, len(done) + 2))


def test_a_tracker_that_is_down_never_loses_the_run(workdir: Path) -> None:
    pytest.importorskip("mlflow", reason=NO_MLFLOW)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run_dir = workdir / "run"
    result = run_cli(*IRIS, "logger=[mlflow,tensorboard]", f"logger.mlflow.tracking_uri={closed}",
                     f"hydra.run.dir={run_dir}", cwd=workdir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith(f"dlrun: warning: logger mlflow at {closed} could not start")
    assert "nothing of" in warnings[0] and "its files are complete" in warnings[0]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "completed"
    for name in ("metrics.json", "report.html", "report.md", "predictions.csv", "history.csv"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))  # the other one works
    assert "mlflow" not in json.loads((run_dir / "tracking.json").read_text())


def test_wandb_logs_offline(workdir: Path) -> None:
    pytest.importorskip("wandb", reason="no wandb: make test-services installs dlrun[wandb]")
    run_dir = workdir / "run"
    result = run_cli(*IRIS, "logger=[wandb,tensorboard]", f"hydra.run.dir={run_dir}",
                     cwd=workdir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr
    record = json.loads((run_dir / "tracking.json").read_text())["wandb"]
    assert record["mode"] == "offline"
    (offline,) = (run_dir / "wandb").glob(f"offline-run-*-{record['id']}")
    assert (offline / f"run-{record['id']}.wandb").stat().st_size > 0
    saved = {p.name for p in (offline / "files").rglob("*")}
    assert {"report.html", "metrics.json"} <= saved


def test_the_worker_imports_mlflows_sql_store_before_the_run_opens(tmp_path: Path) -> None:
    """Left to the first message (the first epoch), these imports are CPU taken from training:
    the SQL store, and what opening the first run imported (the SQLite dialect, Alembic)."""
    pytest.importorskip("mlflow", reason=NO_MLFLOW)
    modules = ["mlflow.store.tracking.sqlalchemy_store", "sqlalchemy.dialects.sqlite.pysqlite",
               "alembic.command", "dlrun.tracking.mlflow_tracker"]  # fmt: skip
    code = (
        "import sys\nfrom dlrun.tracking.worker import warm_up\nwarm_up(['mlflow'])\n"
        f"print([m for m in {modules!r} if m not in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.stdout.strip() == "[]", done.stderr
    assert list(tmp_path.iterdir()) == []  # no store created before a run opens


def test_mlflow_gets_the_epochs_gathered_by_the_worker_in_one_batch() -> None:
    pytest.importorskip("mlflow", reason=NO_MLFLOW)
    from dlrun.tracking.mlflow_tracker import MLflowTracker

    batches: list[list[tuple[str, float, int]]] = []

    class Client:
        def log_batch(self, run_id: str, metrics: list) -> None:
            batches.append([(m.key, m.value, m.step) for m in metrics])

    tracker = MLflowTracker()
    tracker.client, tracker.run_id = Client(), "r"
    tracker.log_rows([(1, {"loss": 0.9, "val_loss": 1.0}), (2, {"loss": 0.5, "val_loss": 0.7})])
    assert batches == [[("loss", 0.9, 1), ("val_loss", 1.0, 1), ("loss", 0.5, 2),
                        ("val_loss", 0.7, 2)]]  # fmt: skip


def test_a_server_slow_to_shut_down_is_killed() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(600)"  # noqa: E501
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline()  # it ignores SIGTERM now
    stop(proc, grace=0.5)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
