"""``scripts/mutation.py`` (``make mutation``): its config and its report, without mutmut."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("mutation", ROOT / "scripts/mutation.py")
assert _spec is not None and _spec.loader is not None
mutation = sys.modules["mutation"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutation)


def test_each_module_gets_its_own_mutmut_config() -> None:
    config = tomllib.loads(mutation.mutmut_config(mutation.TARGETS["checkpoint"]))
    mutmut = config["tool"]["mutmut"]
    assert mutmut["only_mutate"] == ["src/dlrun/engine/checkpoint.py"]
    assert mutmut["pytest_add_cli_args_test_selection"][0] == "tests/test_checkpoint.py"
    assert mutmut["process_isolation"] == "forkserver"  # forks of a torch process hang
    assert mutmut["timeout_constant"] >= 5  # pytest's start-up in a fork is no hang
    assert "not distributed" in " ".join(mutmut["pytest_add_cli_args"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["pytest"] == project["tool"]["pytest"]  # same markers, options


def test_every_target_names_an_existing_module_and_test_file() -> None:
    for target in mutation.TARGETS.values():
        assert (ROOT / target.source).is_file(), target.source
        files = [t.partition("::")[0] for t in target.tests if t.startswith("tests/")]
        assert files and all((ROOT / f).is_file() for f in files), target.tests


def test_report_counts_timeouts_as_kills_and_lists_open_survivors(tmp_path: Path, monkeypatch):
    docs = tmp_path / "testing.md"
    docs.write_text(
        "- `dlrun.data.splits.x_f__mutmut_2`: the same value either way\n"
        f"{mutation.GPU_HEADING}\n\n- `dlrun.data.splits.x_f__mutmut_5`: a tensor's device\n"
        "\n### Another section\n\n- `dlrun.data.splits.x_f__mutmut_6`: equivalent again\n"
    )
    monkeypatch.setattr(mutation, "EQUIVALENTS", docs)
    counts = {"killed": 15, "timeout": 2, "total": 20}
    survivors = [f"dlrun.data.splits.x_f__mutmut_{n}" for n in (2, 5, 6)]
    survivors.append("dlrun.data.splits.x_g__mutmut_7")
    lines = mutation.report({"splits": {"counts": counts, "survivors": survivors}})
    assert lines[1].split() == ["splits", "17", "20", "85.0%", "2", "1", "1"]
    assert "  dlrun.data.splits.x_g__mutmut_7" in lines
    assert not any("x_f__mutmut" in line for line in lines)


FAKE_MUTMUT = """#!/bin/sh
echo "$@" >> calls.txt
if [ "$1" = results ]; then
  echo "    dlrun.x.x_f__mutmut_3: survived"
  echo "    dlrun.x.x_f__mutmut_4: killed"
  echo "    dlrun.x.x_g__mutmut_1: timeout"
  echo "    dlrun.x.x_h__mutmut_2: no tests"
fi
"""


def _fake_mutmut(folder: Path) -> str:
    fake = folder / "mutmut"
    fake.write_text(FAKE_MUTMUT)
    fake.chmod(0o755)
    return str(fake)


def test_survivors_runs_only_the_last_survivors_again(tmp_path: Path, monkeypatch) -> None:
    """``--survivors`` keeps the folder and its results and names the survivors to mutmut."""
    monkeypatch.setattr(mutation, "WORK", tmp_path)
    folder = tmp_path / "splits"
    folder.mkdir()
    (folder / "kept.txt").write_text("results of the first pass")
    last = ["dlrun.x.x_f__mutmut_3", "dlrun.x.x_g__mutmut_1"]
    (folder / "summary.json").write_text(f'{{"survivors": {last!r}}}'.replace("'", '"'))
    target = mutation.TARGETS["splits"]
    summary = mutation.run("splits", target, _fake_mutmut(tmp_path), 2, survivors=True)
    calls = (folder / "calls.txt").read_text().splitlines()
    assert calls[0] == "run --max-children 2 " + " ".join(last)
    assert (folder / "kept.txt").is_file()  # not wiped: the other mutants' results stay
    assert "splits.py" in (folder / "pyproject.toml").read_text()
    assert summary == {
        "module": "src/dlrun/data/splits.py",
        "counts": {"killed": 1, "timeout": 1, "total": 4},
        "survivors": ["dlrun.x.x_f__mutmut_3", "dlrun.x.x_h__mutmut_2"],
    }


def test_a_restricted_target_runs_and_counts_only_its_mutants(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(mutation, "WORK", tmp_path)
    target = mutation.Target("src/dlrun/data/splits.py", ("tests/test_splits.py",), ("*x_f_*",))
    summary = mutation.run("part", target, _fake_mutmut(tmp_path), 1)
    calls = (tmp_path / "part" / "calls.txt").read_text().splitlines()
    assert calls[0] == "run --max-children 1 *x_f_*"
    assert summary is not None and summary["counts"] == {"killed": 1, "timeout": 0, "total": 2}
    assert summary["survivors"] == ["dlrun.x.x_f__mutmut_3"]
