"""Commands end without the interpreter's teardown, and lose nothing by it: exit status,
buffered output, exit handlers, a running thread's work (dlrun.process_exit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

PROBE = """
import atexit, sys, threading, time
from pathlib import Path
from dlrun.process_exit import run
out = Path(sys.argv[1])
class Torn:
    def __del__(self):  # runs only if the interpreter tears its modules down
        (out / "torn_down").write_text("1")
kept = Torn()
atexit.register(lambda: (out / "atexit").write_text("1"))
def main():
    sys.stdout.write("buffered, no newline")
    if sys.argv[2] == "thread":
        threading.Thread(target=lambda: (time.sleep(0.5), (out / "thread").write_text("1"))).start()
    if sys.argv[2] == "message":
        sys.exit("dlrun: error: a message")
    return 3
run(main)
"""


def _probe(tmp_path: Path, how: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path), how],
        capture_output=True, text=True, timeout=300, env={"PYTHONPATH": SRC},
    )  # fmt: skip


def test_the_status_output_and_exit_handlers_survive_and_teardown_is_skipped(tmp_path):
    done = _probe(tmp_path, "plain")
    assert done.returncode == 3 and done.stdout == "buffered, no newline"
    assert (tmp_path / "atexit").is_file()
    assert not (tmp_path / "torn_down").exists()  # os._exit: no module teardown


def test_a_running_thread_gets_the_normal_exit_which_waits_for_it(tmp_path):
    done = _probe(tmp_path, "thread")
    assert done.returncode == 3 and (tmp_path / "thread").is_file()
    assert (tmp_path / "torn_down").is_file()  # the normal exit, teardown included


def test_a_message_exit_is_printed_with_status_1(tmp_path):
    done = _probe(tmp_path, "message")
    assert done.returncode == 1 and done.stderr.strip() == "dlrun: error: a message"


def test_help_piped_into_a_reader_that_left_is_one_quiet_exit(tmp_path):
    """``dlrun --help | head -1``: the reader is gone before the help is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "dlrun.cli", "--help"],
            stdout=write, stderr=subprocess.PIPE, cwd=tmp_path, timeout=300,
        )  # fmt: skip
    finally:
        os.close(write)
    assert b"Traceback" not in done.stderr and done.returncode == 141
