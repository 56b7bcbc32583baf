"""What CI's browser and services targets rely on, checked without installing anything.

``scripts/apt_install.sh`` runs against fake ``id``/``sudo``/``apt-get`` on a PATH of their
own: it installs as root or through password-less sudo, and where it cannot it stops the
target with one line (a CI whose browser tests all skip would pass while testing nothing).
``tests/require_all.py`` turns any skip in those targets into a failure for the same reason.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

TOOL = "dlrun-fake-tool"  # a command no machine has, so the script must install it
FAKE = {
    "id": 'echo "${FAKE_UID:-0}"\n',
    "sudo": 'echo "sudo $*" >> "$CALLS"\n[ -n "${FAKE_SUDO_OK:-}" ] || exit 1\nshift\nexec "$@"\n',
    "apt-get": (
        'echo "apt-get $*" >> "$CALLS"\n'
        '[ -z "${FAKE_APT_FAILS:-}" ] || { echo "E: Unable to locate package $3"; exit 100; }\n'
        'case "$1" in install) printf "#!/bin/sh\\n" > "$BIN/$TOOL"; chmod +x "$BIN/$TOOL";; esac\n'
    ),
}


def _fake_path(tmp_path: Path, *, sudo: bool = True, apt: bool = True) -> Path:
    """A bin folder with the fakes and the few real tools the script uses, nothing else."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE.items():
        if (name == "sudo" and not sudo) or (name == "apt-get" and not apt):
            continue
        script = bin_dir / name
        script.write_text("#!/bin/sh\n" + body)
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    for tool in ("mktemp", "grep", "tail", "rm", "env", "chmod", "true"):
        real = shutil.which(tool)
        assert real, tool
        (bin_dir / tool).symlink_to(real)
    return bin_dir


def _apt_install(bin_dir: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    calls = bin_dir.parent / "calls"
    environ = {"PATH": str(bin_dir), "CALLS": str(calls), "BIN": str(bin_dir), "TOOL": TOOL}
    done = subprocess.run(
        ["/bin/bash", str(ROOT / "scripts/apt_install.sh"), TOOL, "pkg-a", "pkg-b"],
        env={**environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done, calls.read_text().splitlines() if calls.exists() else []


def _one_line(done: subprocess.CompletedProcess[str], says: str) -> None:
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"make: {TOOL} is missing and {says}")
    assert done.stderr.rstrip().endswith("apt-get install pkg-a pkg-b")


def test_root_installs_with_apt_get(tmp_path: Path) -> None:
    done, calls = _apt_install(_fake_path(tmp_path))
    assert done.returncode == 0, done.stderr
    assert calls[0] == "apt-get update -qq"
    assert calls[1] == "apt-get install -y -qq --no-install-recommends pkg-a pkg-b"


def test_a_user_installs_through_sudo_without_a_prompt(tmp_path: Path) -> None:
    done, calls = _apt_install(_fake_path(tmp_path), FAKE_UID="1000", FAKE_SUDO_OK="1")
    assert done.returncode == 0, done.stderr
    assert calls[0] == "sudo -n true"
    assert "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install" in calls[-2]


def test_a_command_already_there_installs_nothing(tmp_path: Path) -> None:
    bin_dir = _fake_path(tmp_path)
    (bin_dir / TOOL).symlink_to(bin_dir / "id")
    done, calls = _apt_install(bin_dir)
    assert (done.returncode, done.stdout, calls) == (0, "", [])


@pytest.mark.parametrize(
    ("fakes", "env", "says"),
    [
        ({"apt": False}, {}, "this system has no apt-get"),
        ({"sudo": False}, {"FAKE_UID": "1000"}, "this user is not root and there is no sudo"),
        ({}, {"FAKE_UID": "1000"}, "sudo needs a password here"),
        ({}, {"FAKE_APT_FAILS": "1"}, "apt-get failed (E: Unable to locate package"),
    ],
)
def test_when_it_cannot_install_it_stops_with_one_line(tmp_path: Path, fakes, env, says) -> None:
    done, _ = _apt_install(_fake_path(tmp_path, **fakes), **env)
    _one_line(done, says)


def test_a_skip_fails_under_require_all(tmp_path: Path) -> None:
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n"
        "def test_skips():\n    pytest.skip('no chromium')\n"
        "@pytest.mark.skipif(True, reason='no server')\ndef test_marked():\n    pass\n"
        "@pytest.mark.xfail(reason='known')\ndef test_xfails():\n    assert False\n"
        "def test_passes():\n    pass\n"
    )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "tests.require_all", "-p",
               "no:cacheprovider", str(tmp_path / "test_skips.py")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stdout
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in done.stdout
    assert "must not skip here: no chromium" in done.stdout
    assert "must not skip here: no server" in done.stdout


@pytest.mark.parametrize(
    ("target", "installs"), [("test-browser", "chromium"), ("test-services", "postgresql")]
)
def test_the_target_installs_then_runs_its_tests_with_no_skips(target: str, installs: str):
    done = subprocess.run(["make", "-n", target], cwd=ROOT,
                          capture_output=True, text=True, check=True)  # fmt: skip
    lines = done.stdout.splitlines()
    apt = next(i for i, line in enumerate(lines) if "scripts/apt_install.sh" in line)
    test = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert installs in lines[apt] and apt < test
    assert "-p tests.require_all" in lines[test]


def test_ci_runs_the_browser_and_services_suites() -> None:
    steps = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line[:5] == "make "]
    assert steps == ["make test", "make test-distributed", "make test-browser",
                     "make test-services"]  # fmt: skip
