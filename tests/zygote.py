"""Run ``dlrun`` commands for the tests as forks of one process that has imported dlrun.

Every ``dlrun`` a test starts would spend ~2.4 s of CPU importing torch, SciPy,
matplotlib, torchmetrics and Hydra before its first line of dlrun, nearly half of the
fast suite. A zygote process (as Android starts apps, and Mercurial's chg its commands)
does those imports once per test worker, then forks one child per command: the child
is a fresh process with its own cwd, environment, argv, stdout and stderr files and exit
status, runs ``dlrun``'s console entry (``dlrun.process_exit.run(dlrun.cli.main)``,
what ``python -m dlrun.cli`` runs) and ends. Nothing runs in the zygote but imports, so
no thread or torch state is forked with it.

What a fork cannot show stays a real process in the tests: imports of a fresh
interpreter (tests/test_startup.py, the no-torch probes), signals sent to a run
(``sigterm_after_first_epoch``, ``kill_after_epoch``), ``python -m`` itself. One thing
a fork shares that real processes do not: the string hash seed, fixed when the zygote
started, so every command of one test worker iterates a set of strings in the same
order (a different order per worker and per session still); one test runs the same
experiment in two real processes with other hash seeds and compares every number.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

SERVER = r"""
import importlib, json, os, sys
import dlrun.cli, dlrun.runner
from dlrun.evaluation import prefetch
prefetch.load()
from dlrun import process_exit
requests, answers = sys.stdin, sys.stdout
for line in requests:
    req = json.loads(line)
    answers.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(req["cwd"])
            os.environ.clear()
            os.environ.update(req["env"])
            null = os.open(os.devnull, os.O_RDONLY)
            out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(null, 0); os.dup2(out, 1); os.dup2(err, 2)
            sys.stdin = open(0, closefd=False)
            command = importlib.import_module(req["module"])
            sys.argv = [command.__file__, *req["argv"]]  # as `python -m <module>` has it
            process_exit.run(command.main)  # ends the process (os._exit or SystemExit)
        except SystemExit:
            raise  # the normal exit, as in a process of its own: it waits for threads
        except BaseException:
            import traceback
            traceback.print_exc()
            os._exit(70)
    answers.write(json.dumps({"pid": pid}) + "\n"); answers.flush()
    _, status = os.waitpid(pid, 0)
    answers.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
    answers.flush()
"""


class Zygote:
    """One zygote process; :meth:`run` forks a ``dlrun`` command from it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=os.environ.copy(),
        )
        self.pending = b""  # answer bytes read but not yet a whole line

    def _answer(self, timeout: float | None = None) -> dict | None:
        """The zygote's next answer line, or None if none came within ``timeout``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.pending:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("the test zygote died")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(
        self,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        timeout: float,
        module: str = "dlrun.cli",
    ) -> subprocess.CompletedProcess[str]:
        """``python -m <module> argv`` in ``cwd`` with ``env``, as ``subprocess.run``
        reports it; ``subprocess.TimeoutExpired`` (the command killed) after ``timeout``
        seconds. ``module`` is ``dlrun.cli`` or a companion command's (``dlrun.eval_cli``)."""
        assert self.proc.stdin is not None
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "out", Path(tmp) / "err"
            request = {"module": module, "argv": argv, "cwd": str(cwd), "env": env,
                       "stdout": str(out), "stderr": str(err)}  # fmt: skip
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            pid = self._answer()["pid"]  # type: ignore[index]
            answer = self._answer(timeout)
            if answer is None:
                os.kill(pid, signal.SIGKILL)
                self._answer()
                raise subprocess.TimeoutExpired([module, *argv], timeout)
            code = answer["code"]
            return subprocess.CompletedProcess(
                [module, *argv], code, out.read_text(errors="replace"),
                err.read_text(errors="replace"),
            )  # fmt: skip


_ZYGOTE: Zygote | None = None


def zygote() -> Zygote:
    """This test worker's zygote, started on first use (and again if it died)."""
    global _ZYGOTE
    if _ZYGOTE is None or not _ZYGOTE.alive():
        _ZYGOTE = Zygote()
    return _ZYGOTE
