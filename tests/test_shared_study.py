"""Several sweepers on one Optuna study: together n_trials trials, none run twice.

Two sweeper processes start at once on one storage URL, as two terminals or two
machines would. SQLite runs in the fast suite (a toy app whose jobs only sleep);
PostgreSQL runs the real ``dlrun -m hparams_search=mlp_iris`` against a throwaway
server (``make test-services``, see :func:`postgres_url`).
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from dlrun.rundir import STALE_AFTER_S  # noqa: E402
from dlrun.sweep.protocol import HEARTBEAT_ATTR, NOT_RUN_ATTR, OWNER_ATTR  # noqa: E402
from dlrun.sweep.study import claim, orphaned, trials_left  # noqa: E402
from tests.test_optuna_sweeper import HPARAMS, trial_records  # noqa: E402

SLEEPY_APP = """
import time
import hydra

@hydra.main(version_base="1.3", config_path=".", config_name="sleepy")
def main(cfg):
    time.sleep(cfg.pause)  # long enough for the other sweeper to ask in between
    return (cfg.y - 0.3) ** 2 + cfg.x / 10

main()
"""

SLEEPY_CONFIG = """
defaults:
  - override hydra/sweeper: dlrun_optuna
  - _self_
x: 0
y: 0.0
pause: 0.3
trainer: {monitor: val_loss}
hydra:
  sweep: {dir: sweep, subdir: "${hydra.job.num}"}
  sweeper:
    study_name: shared
    pruner: none
    n_trials: 8
    params:
      x: range(0, 6)
"""


def start_sweepers(*commands: list[str], cwd: Path, env: dict[str, str] | None = None):
    """Start every command at once; wait for all; return their CompletedProcess-likes."""
    procs = [
        subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        for cmd in commands
    ]
    return [(p, *p.communicate(timeout=900)) for p in procs]


def check_shared(study: optuna.Study, n_trials: int, sweepers: int) -> list[FrozenTrial]:
    """n_trials trials ran, each once, with distinct parameters, spread over the sweepers."""
    ran = [t for t in study.trials if NOT_RUN_ATTR not in t.user_attrs]
    assert [t.state for t in ran] == [TrialState.COMPLETE] * n_trials
    numbers = [t.number for t in ran]
    assert len(set(numbers)) == n_trials
    params = [tuple(sorted(t.params.items())) for t in ran]
    assert len(set(params)) == n_trials, params  # never the same parameters twice
    owners = {t.user_attrs[OWNER_ATTR]["pid"] for t in ran}
    assert len(owners) == sweepers, "every sweeper ran some of the trials"
    skipped = [t for t in study.trials if NOT_RUN_ATTR in t.user_attrs]
    assert all(t.state == TrialState.FAIL for t in skipped)
    return ran


@pytest.fixture
def sleepy(tmp_path: Path):
    (tmp_path / "sleepy.py").write_text(SLEEPY_APP)
    (tmp_path / "sleepy.yaml").write_text(SLEEPY_CONFIG)
    return [sys.executable, "sleepy.py", "-m"]


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid"])
def test_two_sweepers_share_a_sqlite_study(sleepy, tmp_path: Path, sampler: str) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    common = [*sleepy, f"hydra.sweeper.storage={storage}", f"hydra.sweeper.sampler={sampler}"]
    if sampler != "grid":  # a grid of x alone has 6 points; the samplers get a float too
        common.append("y=interval(0, 1)")
    runs = start_sweepers(common, common, cwd=tmp_path)
    for proc, _, err in runs:
        assert proc.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=storage)
    n_trials = 6 if sampler == "grid" else 8
    ran = check_shared(study, n_trials, sweepers=2)
    if sampler == "grid":
        assert sorted(t.params["x"] for t in ran) == [0, 1, 2, 3, 4, 5]
    records = trial_records(tmp_path / "sweep")  # both wrote into one sweep dir
    assert sorted(records) == sorted(t.number for t in ran)


def test_a_trial_beyond_n_trials_or_a_duplicate_is_not_run() -> None:
    """Two sweepers asking at once: the storage's trial order decides who runs what."""
    study = optuna.create_study()
    x = optuna.distributions.IntDistribution(0, 9)
    for value in (0, 1, 2):  # fixed draws: a random one could collide with the 7 below
        study.enqueue_trial({"x": value})
    first, second = study.ask({"x": x}), study.ask({"x": x})  # two sweepers, same moment
    assert trials_left(study, 2) == 0
    assert claim(study, first, 2) is None and claim(study, second, 2) is None
    third = study.ask({"x": x})  # asked by a third before it saw the first two running
    assert claim(study, third, 2) == "the study already has its n_trials=2 trials"
    study.enqueue_trial({"x": 7})
    study.enqueue_trial({"x": 7})  # the same grid point, queued by two sweepers
    queued = [study.ask({"x": x}), study.ask({"x": x})]
    assert claim(study, queued[0], 10) is None
    assert claim(study, queued[1], 10) == "an earlier trial has the same parameters {'x': 7}"
    skipped = [t for t in study.trials if NOT_RUN_ATTR in t.user_attrs]
    assert [(t.number, t.state) for t in skipped] == [(2, TrialState.FAIL), (4, TrialState.FAIL)]
    assert trials_left(study, 4) == 1  # skipped trials don't count: 0, 1 and 3 run


def test_a_sqlite_transaction_holds_the_write_lock_from_its_start(tmp_path: Path) -> None:
    """So Optuna's read-then-mark of a queued trial is one step: only one sweeper gets it."""
    import sqlite3

    from sqlalchemy import text

    from dlrun.sweep.protocol import open_storage

    db = tmp_path / "lock.db"
    engine = open_storage(f"sqlite:///{db}").engine
    with engine.connect() as first, first.begin():
        first.execute(text("SELECT 1"))  # a read opens the transaction...
        other = sqlite3.connect(db, timeout=0.05, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")  # ...and another writer must wait for it
        other.close()


def frozen(owner: dict | None, heartbeat: float | None, started: float) -> FrozenTrial:
    attrs: dict = {}
    if owner is not None:
        attrs[OWNER_ATTR] = owner
    if heartbeat is not None:
        stamp = datetime.datetime.fromtimestamp(heartbeat).astimezone()
        attrs[HEARTBEAT_ATTR] = stamp.isoformat(timespec="seconds")
    return FrozenTrial(
        number=0, state=TrialState.RUNNING, value=None, values=None,
        datetime_start=datetime.datetime.fromtimestamp(started), datetime_complete=None,
        params={}, distributions={}, user_attrs=attrs, system_attrs={},
        intermediate_values={}, trial_id=1,
    )  # fmt: skip


def test_a_storage_that_cannot_be_opened_is_one_line_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A driver's multi-line message on one line; the password of a shared study hidden."""
    from optuna.samplers import RandomSampler

    from dlrun.errors import UserError
    from dlrun.sweep import protocol
    from dlrun.sweep.study import open_study

    monkeypatch.setattr(protocol, "CONNECT_TRIES", 1)
    url = "postgresql://dlrun:pa%24%24word@127.0.0.1:1/dlrun"  # nothing listens on port 1
    found = protocol.storage_problem(OSError(f"no server at {url}\n\tpa$$word?"), url)
    assert found == "OSError: no server at postgresql://dlrun:***@127.0.0.1:1/dlrun ***?"
    with pytest.raises(UserError) as raised:
        open_study(storage=url, study_name="s", direction="minimize", sampler=RandomSampler(),
                   pruner="none", pruner_args={}, space=None)  # type: ignore[arg-type]  # fmt: skip
    message = str(raised.value)
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:  # without the driver: how to install it
        assert "pip install 'dlrun[postgres]'" in message
    else:
        assert message.startswith(
            "hydra.sweeper.storage=postgresql://dlrun:***@127.0.0.1:1/dlrun: "
        )
    assert "\n" not in message and "pa%24%24word" not in message and "pa$$word" not in message


def test_only_a_gone_sweepers_running_trials_are_orphans() -> None:
    now = time.time()
    here = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    me = {"hostname": here, "pid": os.getpid()}
    assert not orphaned(frozen(me, now - 3600, now), now)  # its process runs: alive
    assert orphaned(frozen({"hostname": here, "pid": int(dead)}, now, now), now)
    elsewhere = {"hostname": "another-machine", "pid": os.getpid()}
    assert not orphaned(frozen(elsewhere, now - 30, now - 3600), now)  # it beats: alive
    assert orphaned(frozen(elsewhere, now - STALE_AFTER_S - 5, now - 3600), now)
    assert not orphaned(frozen(None, None, now - 1), now)  # just asked, claim on its way
    assert orphaned(frozen(None, None, now - 3600), now)  # an older dlrun's, long gone


# --- PostgreSQL (make test-services) ----------------------------------------------------


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: run its commands as ``postgres`` then."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("PostgreSQL refuses root and runuser is missing")
    return [runuser, "-u", "postgres", "--"]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 (initdb into a temp dir, a free port)."""
    import importlib.util

    if not any(importlib.util.find_spec(m) for m in ("psycopg", "psycopg2")):
        pytest.skip("no PostgreSQL driver: make test-services installs dlrun[postgres]")
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server: make test-services installs it (apt-get postgresql)")
    prefix = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="dlrun-pg-"))
    data = root / "data"
    if prefix:
        shutil.chown(root, "postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def pg(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr

    pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "dlrun", "--auth=trust", "-E", "UTF8")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=50"
    pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
       "-w", "start")  # fmt: skip
    try:
        pg(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dlrun", "dlrun")
        yield f"postgresql://dlrun@127.0.0.1:{port}/dlrun"
    finally:
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.services
def test_two_sweepers_share_a_postgresql_study(sleepy, postgres_url: str, tmp_path: Path):
    common = [*sleepy, f"hydra.sweeper.storage={postgres_url}", "y=interval(0, 1)"]
    runs = start_sweepers(common, common, cwd=tmp_path)
    for proc, _, err in runs:
        assert proc.returncode == 0, err
    check_shared(optuna.load_study(study_name="shared", storage=postgres_url), 8, sweepers=2)


@pytest.mark.services
def test_two_dlrun_searches_share_a_postgresql_study(postgres_url: str, tmp_path: Path) -> None:
    """The real CLI, shrunk: two ``dlrun -m hparams_search=mlp_iris`` on one database."""
    search = [sys.executable, "-m", "dlrun.cli", "-m", f"{HPARAMS}=mlp_iris",
              "trainer.epochs=2", "trainer.limit_batches=2", "hydra.sweeper.n_trials=6",
              "hydra.sweeper.pruner=none", f"hydra.sweeper.storage={postgres_url}",
              "hydra.sweeper.study_name=dlrun_iris"]  # fmt: skip
    runs = start_sweepers([*search, "hydra.sweep.dir=a"], [*search, "hydra.sweep.dir=b"],
                          cwd=tmp_path)  # fmt: skip
    for proc, _, err in runs:
        assert proc.returncode == 0, err
    ran = check_shared(optuna.load_study(study_name="dlrun_iris", storage=postgres_url), 6, 2)
    jobs = {**trial_records(tmp_path / "a"), **trial_records(tmp_path / "b")}
    assert sorted(jobs) == sorted(t.number for t in ran)  # each trial ran in one place
    assert len(trial_records(tmp_path / "a")) + len(trial_records(tmp_path / "b")) == 6
