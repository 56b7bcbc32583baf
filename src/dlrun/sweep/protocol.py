"""What the sweeper and its jobs agree on: trial identity, attribute names, the pruner.

Kept free of torch (and of optuna at import time): the sweeper runs without torch until
its jobs need it, Hydra's plugin scan imports the sweeper on every start-up, and the CLI
can catch :class:`TrialPrunedByOptuna` before torch is loaded.
"""

from __future__ import annotations

import functools
import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dlrun.errors import UserError

if TYPE_CHECKING:
    import optuna

# Study user attribute holding the pruner the sweeper chose, so each job can rebuild the
# same pruner (Optuna stores no pruner in the storage, only trials and attributes).
PRUNER_ATTR = "dlrun_pruner"
# Trial user attributes.
PRUNED_AT_ATTR = "dlrun_pruned_at_epoch"  # set by the job's callback just before it raises
INTERRUPTED_ATTR = "dlrun_interrupted"  # set by the sweeper for trials a Ctrl-C/kill cut short
RETRY_OF_ATTR = "dlrun_retry_of"  # on a queued re-run: the interrupted trial's number
FAIL_REASON_ATTR = "dlrun_fail_reason"
JOB_DIR_ATTR = "dlrun_job_dir"
# Several sweepers may drive one study (a shared database, several machines):
OWNER_ATTR = "dlrun_owner"  # {"pid", "hostname", "started_at"} of the sweeper running it
HEARTBEAT_ATTR = "dlrun_heartbeat"  # that sweeper's last sign of life (ISO time)
NOT_RUN_ATTR = "dlrun_not_run"  # asked for but not run: over n_trials, or a duplicate


class TrialPrunedByOptuna(UserError):
    """The job's trial was judged unpromising by the study's pruner and stopped early.

    A :class:`UserError` so the CLI reports it as one line, never as a crash; the sweeper
    records the trial as PRUNED rather than FAIL; ``status`` is what the CLI writes
    into the job's status.json.
    """

    status = "pruned"

    def __init__(self, number: int, epoch: int, monitor: str, value: float, pruner: str):
        self.number, self.epoch = number, epoch
        super().__init__(
            f"trial {number} pruned at epoch {epoch}: {monitor}={value:.4g} was not "
            f"promising next to the other trials ({pruner} pruner)"
        )


@dataclass(frozen=True)
class TrialIdentity:
    """Where a job's trial lives: enough to reopen it from another process."""

    storage: str
    study_name: str
    number: int

    def overrides(self) -> list[str]:
        """Hydra overrides that put this identity at ``cfg.trial``.

        ``++`` sets the key whether or not the run schema declares ``trial``, so the
        overrides work with a schema that has ``trial: Any = None`` and one without it.
        """
        return [
            f"++trial.storage={quote(self.storage)}",
            f"++trial.study_name={quote(self.study_name)}",
            f"++trial.number={self.number}",
        ]


def quote(text: str) -> str:
    """``text`` as a quoted string in Hydra's override grammar (paths may hold spaces)."""
    # Hydra's rule: backslashes are literal except a run of them just before a quote or
    # the closing quote, which must be doubled; the quote itself is then escaped.
    escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, text).replace("'", "\\'")
    return f"'{escaped}'"


# The pruners a sweep config may name, with the Optuna class behind each.
PRUNERS = {"none": "NopPruner", "median": "MedianPruner", "hyperband": "HyperbandPruner"}


def build_pruner(name: str, args: dict[str, Any] | None = None) -> optuna.pruners.BasePruner:
    """``median``/``hyperband`` with keyword arguments for Optuna's class, or ``none``.

    The sweeper stores ``{"name", "args"}`` on the study; each job rebuilds the pruner
    from it with this function, since Optuna's storage keeps no pruner.
    """
    import optuna

    if name not in PRUNERS:
        raise UserError(f"hydra.sweeper.pruner={name} is unknown; use {', '.join(PRUNERS)}")
    if name == "none":  # ignore the args a search config set for its usual pruner
        return optuna.pruners.NopPruner()
    cls = getattr(optuna.pruners, PRUNERS[name])
    try:
        return cls(**(args or {}))
    except (TypeError, ValueError) as exc:  # an unknown name; a value out of range
        raise UserError(
            f"hydra.sweeper.pruner_args do not fit pruner={name} ({exc}); "
            "set hydra.sweeper.pruner_args={} for its defaults"
        ) from None


CONNECT_TRIES = 5


@functools.cache
def shown_storage(url: str) -> str:
    """The storage URL as messages show it: a database password is replaced by ``***``.

    Error lines end up in terminals, CI logs and bug reports; the password of a shared
    PostgreSQL study should not.
    """
    written = _passwords(url)[:1]
    return url.replace(f":{written[0]}@", ":***@", 1) if written else url


def storage_problem(exc: BaseException, url: str) -> str:
    """``Type: message`` of a storage error on one line, without the URL's password."""
    detail = " ".join(str(exc).split())  # drivers write several lines
    for password in _passwords(url):
        detail = detail.replace(password, "***")
    return f"{type(exc).__name__}: {detail}"


def _passwords(url: str) -> list[str]:
    """The password in ``scheme://user:password@host/...`` as written and %-decoded."""
    from urllib.parse import unquote

    netloc = url.partition("://")[2].split("/", 1)[0]
    userinfo = netloc.rpartition("@")[0]
    password = userinfo.partition(":")[2]
    return [p for p in dict.fromkeys((password, unquote(password))) if p]


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """One storage object per URL and process.

    Connecting checks the database schema (~0.3 s); under Hydra's basic launcher every
    job runs in the sweeper's process, so they share the sweeper's connection instead.
    Any SQLAlchemy URL Optuna supports works (``postgresql://user@host/db`` needs a
    driver: ``pip install 'dlrun[postgres]'``); a SQLite file shared by several
    sweepers waits up to two minutes for its write lock instead of SQLite's five seconds.
    Sweepers started together on a new database race to create Optuna's tables; the
    one that loses tries again once the other has made them.
    """
    import optuna
    from sqlalchemy.exc import DBAPIError

    kwargs: dict[str, Any] = {}
    url = with_driver(url)
    if url.startswith("sqlite"):  # several sweepers on one file: wait for its lock
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    for attempt in range(CONNECT_TRIES):
        try:
            storage = optuna.storages.RDBStorage(url, **kwargs)
            if url.startswith("sqlite"):
                _serialize_sqlite(storage.engine)
            return storage
        except DBAPIError:  # two sweepers created the tables at once: the loser retries
            if attempt == CONNECT_TRIES - 1:
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def with_driver(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed.

    SQLAlchemy's default driver for a bare ``postgresql://`` is psycopg2 before 2.1 and
    psycopg (3) from 2.1 on; ``dlrun[postgres]`` installs psycopg, so a bare URL is
    pointed at whichever of the two is there. A URL that names its driver is kept.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://{rest}"
    raise UserError(
        f"{url.split('@')[-1]} is a PostgreSQL database: its driver is not installed "
        "(pip install 'dlrun[postgres]')"
    )


def _serialize_sqlite(engine: Any) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    Python's sqlite3 starts a transaction only at the first write, so Optuna's "read the
    queued trial, then mark it RUNNING if it is still WAITING" is two separate steps on
    SQLite and two sweepers could both take the same queued trial. ``BEGIN IMMEDIATE``
    (SQLAlchemy's recipe for SQLite) makes the read and the write one step, as
    ``SELECT ... FOR UPDATE`` does on PostgreSQL.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners existed are dropped
