"""Several processes (torch.distributed, gloo on the CPU): sharding, results, run dirs.

The end-to-end tests start real processes through the CLI and are marked
``distributed``; the shard and error-choice tests are plain unit tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlrun import tasks
from dlrun.config import validate
from dlrun.data.batches import Shard, iterate
from dlrun.data.sklearn_sets import load_iris
from dlrun.data.spec import Split
from dlrun.engine import distributed
from dlrun.engine.callbacks import Callback
from dlrun.engine.interrupts import RunInterrupted
from dlrun.engine.launch import WorkerCrashed, _outcome
from dlrun.engine.trainer import FitState, Trainer, TrainerSettings
from dlrun.errors import UserError
from dlrun.models.mlp import MLP
from tests.conftest import compose_cfg, read_history, run_cli, sigterm_after_first_epoch

# 1258 training samples (val_fraction 0.1495 leaves an even count), so two ranks of
# batch 32 see exactly the samples one process of batch 64 sees at every step. No
# dropout: each rank draws the same mask stream, which one process of 64 cannot match.
COMMON = [
    "model=mlp",
    "data=digits_flat",
    "data.val_fraction=0.1495",
    "optimizer=sgd",
    "regularization=none",
    "scheduler=none",
    "trainer.epochs=3",
    "trainer.progress=lines",
    "seed=7",
]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
RUN_FILES = [
    "metrics.json",
    "status.json",
    "history.csv",
    "train.log",
    "report.md",
    "predictions.csv",
    "checkpoints/last.pt",
    "checkpoints/best.pt",
    ".hydra/config.yaml",
]


# ------------------------------------------------------------------------ shards
@pytest.mark.parametrize("n", [1, 7, 10, 1257])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_padded_shards_cover_everything_with_equal_lengths(n: int, world: int) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    parts = [Shard(r, world).take(order) for r in range(world)]
    assert {len(p) for p in parts} == {Shard(0, world).length(n)} == {-(-n // world)}
    assert set(torch.cat(parts).tolist()) == set(range(n))
    assert sum(len(p) for p in parts) - n == (-n) % world  # only the padding repeats


@pytest.mark.parametrize("n", [1, 7, 10, 270])
@pytest.mark.parametrize("world", [2, 3])
def test_unpadded_shards_are_disjoint_and_count_each_sample_once(n: int, world: int) -> None:
    order = torch.arange(n)
    parts = [Shard(r, world, pad=False).take(order) for r in range(world)]
    assert [len(p) for p in parts] == [Shard(r, world, pad=False).length(n) for r in range(world)]
    assert sorted(torch.cat(parts).tolist()) == list(range(n))


def test_two_shards_of_batch_b_are_one_batch_of_2b_at_every_step() -> None:
    n = 20
    split = Split(torch.arange(n).float().unsqueeze(1), torch.arange(n))

    def batches(batch_size: int, shard: Shard | None) -> list[set[int]]:
        gen = torch.Generator().manual_seed(3)
        return [
            set(b.y.tolist())
            for b in iterate(split, batch_size, shuffle=True, generator=gen, shard=shard)
        ]

    one = batches(8, None)
    two = [a | b for a, b in zip(batches(4, Shard(0, 2)), batches(4, Shard(1, 2)), strict=True)]
    assert one == two


def test_iterate_without_a_shard_is_unchanged() -> None:
    split = Split(torch.arange(10).float().unsqueeze(1), torch.arange(10))
    assert [b.y.tolist() for b in iterate(split, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_devices_must_be_positive() -> None:
    cfg = compose_cfg("trainer.devices=0")
    with pytest.raises(UserError, match=r"trainer.devices=0 is invalid"):
        validate(cfg)


# ----------------------------------------------------- which worker error is told
def test_a_silently_killed_worker_is_named_not_its_peers_lost_connection() -> None:
    peer = ("builtins", "Traceback ...\nRuntimeError: Read error: Connection reset by peer")
    with pytest.raises(UserError, match=r"process 1 of 2 was killed by SIGKILL"):
        _outcome([("crash", 0, peer)], [1, -signal.SIGKILL], 1, [])


def test_a_user_error_in_a_worker_is_its_own_message_and_status() -> None:
    messages = [("peer", 1, ("another process stopped", "failed"))]
    messages.append(("user", 0, ("trial 3 pruned at epoch 2", "pruned")))
    with pytest.raises(UserError, match=r"^trial 3 pruned at epoch 2$") as caught:
        _outcome(messages, [1, 1], 1, [])
    assert getattr(caught.value, "status", None) == "pruned"


def test_a_real_crash_is_preferred_over_a_lost_peer(capsys: pytest.CaptureFixture) -> None:
    lost = ("torch.distributed", "Traceback ...\nDistBackendError: peer gone")
    bug = ("builtins", "Traceback ...\nZeroDivisionError: division by zero")
    with pytest.raises(WorkerCrashed, match=r"process 1 failed: ZeroDivisionError"):
        _outcome([("crash", 0, lost), ("crash", 1, bug)], [1, 1], 0, [])
    assert "traceback of training process 1" in capsys.readouterr().err


def test_interrupted_workers_and_finished_workers() -> None:
    with pytest.raises(RunInterrupted, match="SIGTERM"):
        _outcome([("interrupted", 0, "stopped by SIGTERM")], [130, 130], 0, ["SIGTERM"])
    metrics = {"train": {"epochs": 1}}
    assert _outcome([("done", 1, None), ("ok", 0, metrics)], [0, 0], None, []) == metrics


# --------------------------------------------------------------- real processes
class _FailOnRankZero(Callback):
    """Stands for a rank-0-only callback that stops the run (pruner, full disk)."""

    def on_epoch_end(self, trainer: Trainer, state: FitState, row: dict[str, float]) -> None:
        if trainer.rank == 0 and state.epoch == 2:
            raise UserError("rank 0 stops here")


def _trainer_rank(rank: int, port: int, out: str) -> None:
    """One rank of a 2-process gloo group training the trainer directly (no CLI)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    distributed.init(torch.device("cpu"))
    bundle = load_iris(seed=0)
    torch.manual_seed(0)
    model = distributed.wrap(MLP(bundle.spec, hidden=(8,)), torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    settings = TrainerSettings(epochs=5, batch_size=16, accumulate=2)
    loss = tasks.loss_fn(bundle.spec.task)
    trainer = Trainer(model, bundle, opt, loss, settings, callbacks=[_FailOnRankZero()])
    state = FitState()
    try:
        trainer.fit(state)
        outcome = "finished"
    except UserError as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    weights = [p.detach().sum().item() for p in trainer.base_model.parameters()]
    Path(out, f"rank{rank}.json").write_text(json.dumps([outcome, state.epoch, weights]))
    distributed.teardown()
    distributed.exit_now(0)


@pytest.mark.distributed
def test_a_stop_on_rank_zero_stops_every_rank_at_the_same_epoch(tmp_path: Path) -> None:
    torch.multiprocessing.start_processes(
        _trainer_rank, args=(distributed.free_port(), str(tmp_path)), nprocs=2
    )
    zero = json.loads((tmp_path / "rank0.json").read_text())
    one = json.loads((tmp_path / "rank1.json").read_text())
    assert zero[:2] == ["UserError: rank 0 stops here", 2]
    assert one[:2] == ["PeerStopped: another process stopped after epoch 2", 2]
    assert zero[2] == pytest.approx(one[2], abs=1e-6)  # DDP kept the weights in sync


def _only_run_dir(cwd: Path) -> Path:
    runs = list((cwd / "outputs" / "runs").iterdir())
    assert len(runs) == 1, runs  # no second directory from another rank
    return runs[0]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cwd = tmp_path_factory.mktemp("single")
    result = run_cli(*COMMON, "trainer.batch_size=64", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads((_only_run_dir(cwd) / "metrics.json").read_text())


@pytest.mark.distributed
@pytest.mark.parametrize("attempt", range(3))
def test_two_processes_match_one_process_with_double_batch(
    attempt: int, single_process: dict, tmp_path: Path
) -> None:
    result = run_cli(*COMMON, "trainer.devices=2", "trainer.batch_size=32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = _only_run_dir(tmp_path)
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    # one writer: each epoch once on stdout, in train.log and in history.csv
    assert result.stdout.count("epoch 1/3 ") == 1
    assert sum(" epoch 1 " in line for line in (run_dir / "train.log").open()) == 1
    assert len((run_dir / "history.csv").read_text().splitlines()) == 4
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key, value in single_process["test"].items():
        if isinstance(value, float):
            assert metrics["test"][key] == pytest.approx(value, abs=1e-4), key
    assert metrics["train"]["best_value"] == pytest.approx(
        single_process["train"]["best_value"], abs=1e-4
    )


@pytest.mark.distributed
def test_a_registry_monitor_sees_every_process_share_of_val(tmp_path: Path) -> None:
    """val_f1_macro from two processes (each scores half of val) equals one process's."""
    columns = []
    for name, options in (("one", ["trainer.batch_size=64"]),
                          ("two", ["trainer.devices=2", "trainer.batch_size=32"])):  # fmt: skip
        cwd = tmp_path / name
        cwd.mkdir()
        result = run_cli(*COMMON, "trainer.monitor=val_f1_macro", *options, cwd=cwd)
        assert result.returncode == 0, result.stderr
        columns.append([row["val_f1_macro"] for row in read_history(_only_run_dir(cwd))])
    assert len(columns[0]) == 3
    assert columns[1] == pytest.approx(columns[0], abs=1e-4)


@pytest.mark.distributed
def test_a_worker_refusing_to_start_is_one_message_and_leaves_nothing(tmp_path: Path) -> None:
    # fp16 on the CPU is refused inside every worker, after the run dir exists but before
    # training: a refusal, so the run dir goes as for one process
    result = run_cli(*COMMON, "trainer.devices=2", "trainer.precision=fp16", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("dlrun: error:") == 1 and "fp16 needs a CUDA" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.distributed
@pytest.mark.slow
def test_sigterm_then_resume_with_two_processes_matches_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    args = [a for a in COMMON if not a.startswith(("trainer.epochs", "trainer.progress"))]
    args += ["trainer.devices=2", "trainer.batch_size=16", "trainer.progress=none"]
    whole = tmp_path / "whole"
    done = run_cli(*args, "trainer.epochs=10", f"hydra.run.dir={whole}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stopped = tmp_path / "stopped"
    code, err = sigterm_after_first_epoch(*args, run_dir=stopped, cwd=tmp_path)
    assert code == 130, err
    status = json.loads((stopped / "status.json").read_text())
    assert status["status"] == "interrupted" and "SIGTERM" in status["reason"]
    resumed = run_cli(f"resume={stopped}", "trainer.epochs=10", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((whole / "metrics.json").read_text())["test"]
    b = json.loads((stopped / "metrics.json").read_text())["test"]
    assert a == b


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_workers_leave_one_run_dir(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run(
        [*TORCHRUN, "-m", "dlrun.cli", *COMMON, "trainer.batch_size=32"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert result.returncode == 0, result.stderr
    run_dir = _only_run_dir(tmp_path)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert result.stdout.count("epoch 1/3 ") == 1
    assert not list(scratch.glob("dlrun-rank*"))  # the other rank's scratch dir is gone


@pytest.mark.gpu
@pytest.mark.distributed
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_gpus_with_nccl_match_one_gpu_with_double_batch(tmp_path: Path) -> None:
    gpu = [*COMMON, "trainer.device=cuda"]
    one = run_cli(*gpu, "trainer.batch_size=64", "hydra.run.dir=one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    two = run_cli(
        *gpu, "trainer.devices=2", "trainer.batch_size=32", "hydra.run.dir=two", cwd=tmp_path
    )
    assert two.returncode == 0, two.stderr
    a = json.loads((tmp_path / "one" / "metrics.json").read_text())["test"]
    b = json.loads((tmp_path / "two" / "metrics.json").read_text())["test"]
    for key, value in a.items():
        if isinstance(value, float):
            assert b[key] == pytest.approx(value, abs=1e-3), key
