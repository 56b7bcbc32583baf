"""Mutation testing of dlrun's core with mutmut, one module at a time: ``make mutation``.

A test suite that passes on broken code proves nothing. mutmut breaks the code on purpose
(``<`` becomes ``<=``, a constant changes, an argument is dropped, ...), one mutant at a
time, and runs the tests that cover it: a mutant that no test notices "survives".

    python scripts/mutation.py                 # every module below (tens of minutes)
    python scripts/mutation.py checkpoint splits
    python scripts/mutation.py --report        # the last results, without running
    python scripts/mutation.py --survivors baseline   # only the last survivors, again

Why one module at a time, each in its own folder under ``.mutation/``: mutmut reads its
settings from ``pyproject.toml`` in the folder it runs in, and each module needs only a
short selection of tests to finish in minutes on 2 cores; the folder gets links to
``src``, ``tests`` and ``configs`` and a ``pyproject.toml`` made for that module.
Only in-process tests can kill a mutant: a test that runs ``dlrun`` in a subprocess
imports the original code, not mutmut's copy, so the selections leave those out.

The kill rate is (killed + timed out) / all mutants. Survivors that cannot be killed
(equivalent mutants: the code means the same) are named in docs/testing.md, and so are
those only a CUDA device can tell apart (under its GPU heading); the report counts both
apart and lists every survivor that is neither killed nor named there.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
EQUIVALENTS = ROOT / "docs" / "testing.md"
NOT_KILLED = ("survived", "no tests", "suspicious", "skipped")
MUTANT_NAME = re.compile(r"`(dlrun\.[\w.]+__mutmut_\d+)`")


@dataclass(frozen=True)
class Target:
    """A module to mutate and the tests (pytest arguments) that should kill its mutants.

    ``only``: mutant name patterns (fnmatch, e.g. ``dlrun.engine.trainer.x_step_scale*``)
    for a module too large to run whole; the counts are then of those mutants alone.
    """

    source: str
    tests: tuple[str, ...]
    only: tuple[str, ...] = ()


# the metrics against scikit-learn, per epoch and in the report; not the whole runs
_METRIC_TESTS = (
    "tests/test_evaluation_metrics.py",
    "tests/test_metric_registry.py",
    "-k",
    "not refused_after and not resumed_run and not picks_best_pt",
)

# the trainer's fast tests: a few batches of iris each, in-process
_TRAINER_TESTS = (
    "tests/test_trainer_steps.py",
    *(
        f"tests/test_engine.py::test_{name}"
        for name in (
            "l1_is_a_soft_threshold_in_the_optimizers_own_step_size",
            "sparsity_counts_exact_and_near_zeros_of_weight_matrices_only",
            "optimizer_steps_per_epoch_counts_shards_limits_and_accumulation",
            "gradient_accumulation_equals_one_big_batch",
            "fp16_without_cuda_is_refused",
            "bf16_autocast_trains_on_cpu",
            "nan_loss_stops_within_the_step_with_advice",
            "label_smoothing_trains_binary_models_too",
            "the_training_loss_column_is_the_true_loss_too",
            "early_stopping_counts_one_epoch_in_the_singular",
        )
    ),
)
# mutmut's names of the trainer's functions and methods, but state_dict/load_state_dict
# (and the properties: mutmut mutates no decorated function)
_TRAINER_LOOP = (
    *(f"x_{f}" for f in ("batches_per_epoch", "optimizer_steps_per_epoch", "step_scale")),
    *(f"x_{f}" for f in ("sparsity", "_l1_groups", "_plain_objective")),
    "xǁFitStateǁbest_row",
    *(
        f"xǁTrainerǁ{method}"
        for method in (
            "__init__",
            "fit",
            "_epoch",
            "_epoch_end_callbacks",
            "_train_epoch",
            "_step_checks",
            "_interrupted",
            "_sync_gradients",
            "_optimizer_step",
            "_validate",
            "evaluate",
            "_soft_threshold",
            "_autocast",
            "_forward",
            "_penalty",
            "_step_epoch_scheduler",
            "_track_best",
        )
    ),
)

TARGETS = {
    "checkpoint": Target(
        "src/dlrun/engine/checkpoint.py",
        ("tests/test_checkpoint.py", "tests/test_engine.py", "-k", "checkpoint"),
    ),
    "splits": Target(
        "src/dlrun/data/splits.py",
        ("tests/test_splits.py",),
    ),
    "batches": Target(
        "src/dlrun/data/batches.py",
        (
            "tests/test_batches.py",
            "tests/test_distributed.py",
            "-k",
            "test_batches or shard or iterate",
        ),
    ),
    "schedules": Target(
        "src/dlrun/engine/schedules.py",
        (
            "tests/test_schedules.py",
            "tests/test_engine.py",
            "-k",
            "schedules.py or every_scheduler or cosine_warms or onecycle_per_epoch",
        ),
    ),
    "callbacks": Target(
        "src/dlrun/engine/callbacks.py",
        (
            "tests/test_callbacks.py",
            "tests/test_failures.py",
            "-k",
            "callbacks.py or heartbeat_beats",
        ),
    ),
    "baseline": Target(
        "src/dlrun/evaluation/baseline.py",
        (
            "tests/test_baseline.py",
            "tests/test_evaluation_metrics.py",
            "tests/test_evaluation_significance.py",
            "-k",
            "baseline or every_task_has",
        ),
    ),
    "metrics": Target("src/dlrun/evaluation/metrics.py", _METRIC_TESTS),
    "metric_registry": Target("src/dlrun/metric_registry.py", _METRIC_TESTS),
    # the step arithmetic and the loop's methods, against in-process tests that train a
    # few batches of iris (tests/test_trainer_steps.py); mutmut runs every covering test
    # for every mutant, so whole runs stay out
    "trainer": Target(
        "src/dlrun/engine/trainer.py",
        _TRAINER_TESTS,
        tuple(f"dlrun.engine.trainer.{name}__mutmut_*" for name in _TRAINER_LOOP),
    ),
    # what a checkpoint holds and how a resume restores it
    "trainer_state": Target(
        "src/dlrun/engine/trainer.py",
        _TRAINER_TESTS,
        tuple(
            f"dlrun.engine.trainer.xǁTrainerǁ{name}__mutmut_*"
            for name in ("state_dict", "load_state_dict")
        ),
    ),
}


def toml_value(value: object) -> str:
    """A string, number or list of them as TOML (JSON's spelling of these is valid TOML)."""
    return json.dumps(value)


def mutmut_config(target: Target) -> str:
    """``pyproject.toml`` for one module's run: the project's pytest settings + mutmut's."""
    pytest_ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    options = pytest_ini["ini_options"]
    lines = ["[tool.pytest.ini_options]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in options.items()]
    lines += [
        "",
        "[tool.mutmut]",
        f"source_paths = {toml_value(['src'])}",
        f"only_mutate = {toml_value([target.source])}",
        f"also_copy = {toml_value(['configs'])}",
        # a fork of a process that has run torch's thread pools can hang; a fork server
        # that has only imported the modules is safe (mutmut's advice for torch)
        'process_isolation = "forkserver"',
        # mutmut's wall limit per mutant is 15 x (the tests' own time + this constant): for
        # millisecond tests the default 1 s made pytest's start-up in a fork, on a loaded
        # 2-core machine, look like a hang ("timeout" counts as killed)
        "timeout_constant = 5.0",
        # only in-process tests can see a mutant: the multi-process ones are left out
        "pytest_add_cli_args = "
        + toml_value(["-p", "no:cacheprovider", "-q", "-m", "not distributed and not gpu"]),
        f"pytest_add_cli_args_test_selection = {toml_value(list(target.tests))}",
    ]
    return "\n".join(lines) + "\n"


def prepare(name: str, target: Target) -> Path:
    """A fresh ``.mutation/<name>/`` with links to the project and its own config."""
    folder = WORK / name
    shutil.rmtree(folder, ignore_errors=True)  # stale mutants would hide changed code
    folder.mkdir(parents=True)
    for part in ("src", "tests", "configs"):
        (folder / part).symlink_to(ROOT / part, target_is_directory=True)
    (folder / "pyproject.toml").write_text(mutmut_config(target))
    return folder


def run(
    name: str, target: Target, mutmut: str, children: int, survivors: bool = False
) -> dict[str, object] | None:
    """Mutate one module, run its tests against every mutant; the counts and survivors.

    With ``survivors``, only the last run's survivors are run again, against today's tests
    (mutmut copies ``tests/`` afresh each time): minutes instead of a whole pass after new
    tests were written for them. None when mutmut could not finish (e.g. the selected tests
    fail without any mutant).
    """
    last = WORK / name / "summary.json"
    again = json.loads(last.read_text())["survivors"] if survivors and last.is_file() else None
    if again is None:
        folder = prepare(name, target)
    else:  # the mutants and their results stay; the config follows the table
        folder = WORK / name
        (folder / "pyproject.toml").write_text(mutmut_config(target))
    print(f"== {name}: {target.source} against {' '.join(target.tests)}", flush=True)
    if again == []:
        return json.loads(last.read_text())
    with (folder / "mutmut.log").open("a" if again else "w") as log:
        done = subprocess.run(
            [mutmut, "run", "--max-children", str(children), *(again or target.only)],
            cwd=folder,
            stdout=log,
            stderr=log,
        )
    if done.returncode != 0:
        print(f"   mutmut failed (exit {done.returncode}); its output: {folder / 'mutmut.log'}")
        return None
    return collect(folder, target, mutmut)


def collect(folder: Path, target: Target, mutmut: str) -> dict[str, object]:
    """The counts and the names of the mutants not killed, saved as ``summary.json``.

    Counted from every mutant's status (``mutmut results --all``), so that a target
    restricted by ``only`` counts its own mutants, not the module's unchecked rest.
    """
    listed = subprocess.run(
        [mutmut, "results", "--all", "true"], cwd=folder, capture_output=True, text=True, check=True
    ).stdout
    statuses = {
        name.strip(): status.strip()
        for name, _, status in (line.rpartition(": ") for line in listed.splitlines())
        if name.strip() and (not target.only or any(fnmatch(name.strip(), p) for p in target.only))
    }
    counts = Counter(statuses.values())
    summary = {
        "module": target.source,
        "counts": {
            "killed": counts["killed"],
            "timeout": counts["timeout"],
            "total": len(statuses),
        },
        "survivors": sorted(name for name, status in statuses.items() if status in NOT_KILLED),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


# Survivors that only CUDA (fp16, tensors placed on the GPU) can tell apart are named
# under this heading of docs/testing.md: explained, but not equivalent.
GPU_HEADING = "### Survivors only a GPU can kill"


def named_survivors() -> tuple[set[str], set[str]]:
    """Mutant names docs/testing.md explains (in backticks): (equivalent, needing a GPU).

    The GPU ones are those in the section under :data:`GPU_HEADING`, up to the next
    heading; every other name in the file is an equivalent mutant.
    """
    if not EQUIVALENTS.is_file():
        return set(), set()
    before, _, rest = EQUIVALENTS.read_text().partition(GPU_HEADING)
    section, _, after = rest.partition("\n#")
    gpu = set(MUTANT_NAME.findall(section))
    return set(MUTANT_NAME.findall(before + after)) - gpu, gpu


def report(summaries: dict[str, dict]) -> list[str]:
    """One line per module: killed, total, kill rate, equivalents, GPU-only, unexplained."""
    equivalent, gpu = named_survivors()
    lines = [
        f"{'module':<15} {'killed':>6} {'total':>6} {'rate':>7} {'equiv':>6} {'gpu':>4} "
        f"{'open':>5}",
    ]
    open_survivors: list[str] = []
    for name, summary in summaries.items():
        c = summary["counts"]
        killed = c["killed"] + c["timeout"]
        rate = killed / c["total"] if c["total"] else 1.0
        named = [s for s in summary["survivors"] if s in equivalent]
        on_gpu = [s for s in summary["survivors"] if s in gpu]
        left = [s for s in summary["survivors"] if s not in equivalent | gpu]
        open_survivors += left
        lines.append(
            f"{name:<15} {killed:>6} {c['total']:>6} {rate:>7.1%} {len(named):>6} "
            f"{len(on_gpu):>4} {len(left):>5}"
        )
    if open_survivors:
        lines += ["", "not killed and not named in docs/testing.md:"]
        lines += [f"  {s}" for s in open_survivors]
        lines += ["(see one with: cd .mutation/<module> && mutmut show <name>)"]
    return lines


def fail(message: str) -> int:
    print(f"mutation: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"some of: {', '.join(TARGETS)}")
    parser.add_argument("--report", action="store_true", help="print the last results only")
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once")
    parser.add_argument(
        "--survivors", action="store_true", help="run only the last run's survivors again"
    )
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in TARGETS]
    if unknown:
        print(
            f"mutation: error: unknown module {unknown}; use {', '.join(TARGETS)}", file=sys.stderr
        )
        return 2
    names = args.modules or list(TARGETS)
    failed: list[str] = []
    if not args.report:
        mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent))
        if mutmut is None:
            print(
                "mutation: error: mutmut is missing: pip install 'dlrun[mutation]'", file=sys.stderr
            )
            return 2
        failed = [
            name
            for name in names
            if run(name, TARGETS[name], mutmut, args.children, args.survivors) is None
        ]
    # this run's modules and earlier runs of the others
    summaries = {p.parent.name: json.loads(p.read_text()) for p in WORK.glob("*/summary.json")}
    print("\n".join(report(dict(sorted(summaries.items())))))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
