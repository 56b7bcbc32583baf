"""Overrides as a user types them: unknown keys and options refused in one line with the
closest valid one, + additions refused, ++ as the escape hatch, exit code 2, nothing
written; missing optional packages named with their pip extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_cli import NO_TORCH_PROBE

TINY = ["trainer.epochs=1", "trainer.limit_batches=1", "trainer.progress=none"]


def _refused(result: subprocess.CompletedProcess[str], workdir: Path) -> str:
    """The one stderr line of a usage error that wrote nothing."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlrun: error: "), result.stderr
    assert not (workdir / "outputs").exists(), "a refused command left files"
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["trainer.epoch=5"], "unknown key trainer.epoch: did you mean trainer.epochs=5?"),
        (["+trainer.epoch=5", *TINY], "did you mean trainer.epochs=5?"),
        (["++trainer.epoch=5", *TINY], "did you mean trainer.epochs=5?"),
        (["model=mlp", "model.hiden=[8]"], "model.hiden for model=mlp: did you mean model.hidden"),
        (["model=mlp", "+model.hiden=[8]", *TINY], "++model.hiden=[8] would pass it"),
        (["optimizer=sgd", "+optimizer.amsgrad=true", *TINY], "optimizer has: lr, momentum"),
        (["optimzer=sgd"], "unknown key optimzer: did you mean optimizer=sgd?"),
        (["trainer.lr=0.1"], "did you mean optimizer.lr=0.1?"),
        (["trainer.dropout=0.1"], "did you mean regularization.dropout=0.1?"),
        (["model=resnt"], "model=resnt is not an option of model; did you mean model=resnet?"),
        (["data=irs"], "options: array, breast_cancer, cifar10"),
        (["+trainer.epochs=3", *TINY], "trainer.epochs already exists: write trainer.epochs=3"),
        (["~trainer.epoch"], "did you mean ~trainer.epochs?"),
        (["trainer.epochs=abc"], "trainer.epochs: Value 'abc' of type 'str' could not be"),
        (["trainer.epochs=1,2"], "add -m to sweep"),
        (["optimizer.lr=[1,"], "cannot parse 'optimizer.lr=[1,'"),
        (["++foo=1", *TINY], "unknown key foo; the config has: activation, callbacks, data"),
        # a key inside a dict value is the one named, never the dict itself
        (
            ["trainer={epochs: 2, batch_sise: 8}"],
            "trainer.batch_sise: did you mean trainer.batch_size?",
        ),
        (["trainer={dropout: 0.1}"], "trainer.dropout: did you mean regularization.dropout?"),
        (
            ["optimizer={lr: 0.1, momentun: 0.9}"],
            "optimizer.momentun for optimizer=adamw; optimizer has: betas, lr",
        ),
        (["hydra.run.dri=x"], "unknown key hydra.run.dri: did you mean hydra.run.dir=x?"),
    ],
)
def test_bad_override_is_one_line_with_the_closest_valid_one(
    args: list[str], expected: str, workdir: Path
) -> None:
    assert expected in _refused(run_cli(*args, cwd=workdir), workdir)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["trainer.epoch=1,2"], "did you mean trainer.epochs=1,2?"),
        (["model=resnt,mlp"], "did you mean model=resnet?"),
        (["model=mlp", "data=iris", "trainer.epochs=1,abc"], "trainer.epochs: Value 'abc'"),
        (["model=mlp", "data=iris", "logger=none,nope"], "logger=nope is not an option"),
    ],
)
def test_a_sweep_with_a_bad_value_is_refused_before_its_dir_exists(
    args: list[str], expected: str, workdir: Path
) -> None:
    assert expected in _refused(run_cli("-m", *args, *TINY, cwd=workdir), workdir)


def test_plus_plus_passes_an_extra_argument_to_a_target(workdir: Path) -> None:
    result = run_cli("++optimizer.amsgrad=true", "model=mlp", "data=iris", *TINY, cwd=workdir)
    assert result.returncode == 0, result.stderr
    saved = next((workdir / "outputs" / "runs").iterdir()) / ".hydra" / "config.yaml"
    assert "amsgrad: true" in saved.read_text()


README_OVERRIDES = [
    ["experiment=gpt_text", "trainer.epochs=2"],
    ["hydra.run.dir=somewhere", "++model.extra=1", "++trial.number=3"],
    ["model=resnet", "model.depth=34", "activation=leaky_relu"],
    ["optimizer=sgd", "optimizer.lr=0.05", "optimizer.nesterov=true", "scheduler=cosine"],
    ["-m", "hparams_search=lenet_digits", "hydra.sweeper.n_trials=40", "trainer.epochs=10"],
    ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=0.1,0.01"],
    ["-m", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu"],
    ["-m", "model=mlp,lenet", "optimizer.lr=0.1,0.01", "seed=0,1,2"],
    ["resume=outputs/runs/x", "trainer.epochs=20", "+experiment=lenet_digits"],
]


@pytest.mark.parametrize("args", README_OVERRIDES)
def test_valid_overrides_pass_the_command_line_check(args: list[str]) -> None:
    from dlrun.overrides import check_command_line

    check_command_line(args)


@pytest.mark.parametrize("args", [a for a in README_OVERRIDES if "-m" not in a][:-1])
def test_valid_overrides_still_compose(args: list[str], workdir: Path) -> None:
    result = run_cli(*args, "--cfg", "job", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert not (workdir / "outputs").exists()


def test_a_search_with_sweeper_settings_still_runs(workdir: Path) -> None:
    result = run_cli(
        "-m", "hparams_search=mlp_iris", "hydra.sweeper.sampler=random",
        "hydra.sweeper.n_trials=1", "hydra.sweep.dir=search", *TINY, cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (workdir / "search" / "0_mlp_iris" / "metrics.json").is_file()


def test_flags_that_exclude_each_other_are_one_line(workdir: Path) -> None:
    line = _refused(run_cli("-m", "seed=0,1", "--cfg", "job", cwd=workdir), workdir)
    assert "can't be combined" in line


@pytest.mark.parametrize(
    ("blocked", "args", "extra"),
    [
        ("hydra_plugins.hydra_joblib_launcher", ["-m", "hydra/launcher=joblib", "seed=0,1"],
         "parallel"),
        ("hydra_plugins.hydra_submitit_launcher",
         ["-m", "hydra/launcher=submitit_slurm", "seed=0,1"], "parallel"),
        ("optuna", ["-m", "hparams_search=mlp_iris"], "optuna"),
        ("tensorboard", ["logger=tensorboard", "model=mlp", "data=iris"], "tensorboard"),
        ("tensorboard", ["-m", "logger=none,tensorboard", "model=mlp", "data=iris"],
         "tensorboard"),
        ("statsmodels", ["data=sunspots", "model=gru"], "series"),
    ],
)  # fmt: skip
def test_a_missing_extra_is_named_with_its_install_command(
    blocked: str, args: list[str], extra: str, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules[{blocked!r}] = None\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    result = run_cli(*args, *TINY, cwd=workdir, env={"PYTHONPATH": path})
    line = _refused(result, workdir) if "-m" in args else result.stderr.strip()
    assert result.returncode == 2, result.stderr
    assert f"pip install 'dlrun[{extra}]'" in line and "Traceback" not in result.stderr
    runs = workdir / "outputs" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize(
    "args", [["trainer.epoch=5"], ["model=mlp", "+model.hiden=[8]"], ["-m", "model=resnt,mlp"]]
)
def test_override_errors_do_not_import_torch(args: list[str], workdir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH_PROBE, *args], cwd=workdir, capture_output=True, text=True
    )
    assert out.returncode == 2, out.stderr
    assert "TORCH_NOT_IMPORTED" in out.stdout


def test_closest_prefers_a_sibling_then_the_same_name_elsewhere() -> None:
    from dlrun.overrides import closest

    known = {"trainer", "trainer.epochs", "trainer.device", "optimizer.lr", "regularization",
             "regularization.dropout"}  # fmt: skip
    assert closest("trainer.epoch", known) == "trainer.epochs"
    assert closest("trainer.dropout", known) == "regularization.dropout"
    assert closest("trainer.lr", known) == "optimizer.lr"
    assert closest("trainer.zzz", known) is None


def test_sweep_sample_uses_every_value_once_per_longest_list() -> None:
    from dlrun.overrides import sweep_jobs_sample

    jobs = sweep_jobs_sample(["a=1,2,3", "b=x,y", "c=5", "model=mlp,lenet"])
    assert len(jobs) == 3
    for column in ("a=1", "a=2", "a=3", "b=x", "b=y", "model=mlp", "model=lenet"):
        assert any(column in job for job in jobs)
    assert all("c=5" in job for job in jobs)
