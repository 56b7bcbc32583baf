"""scripts/lessons.py: every lesson config has a judge, verdicts come from the numbers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, compose_cfg

_spec = importlib.util.spec_from_file_location("lessons", ROOT / "scripts/lessons.py")
assert _spec is not None and _spec.loader is not None
lessons = importlib.util.module_from_spec(_spec)
sys.modules["lessons"] = lessons
_spec.loader.exec_module(lessons)


def fake_job(sweep: Path, num: int, overrides: list[str], metrics: dict[str, Any],
             history: str = "epoch,loss\n1,1.0\n") -> None:  # fmt: skip
    job = sweep / f"{num}_mlp_digits_flat"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra/overrides.yaml").write_text(yaml.safe_dump([*overrides, "experiment=x"]))
    (job / "metrics.json").write_text(json.dumps(metrics))
    (job / "history.csv").write_text(history)


def activation_job(sweep: Path, num: int, name: str, accuracy: float, medians: list[float],
                   never_active: float = 0.0, health: str = "healthy") -> None:  # fmt: skip
    fake_job(sweep, num, [f"activation={name}"], {
        "test": {"accuracy": accuracy}, "baseline": {"accuracy": 0.1},
        "diagnostics": {"gradients": {"median": medians},
                        "activations": {"verdict": health,
                                        "layers": [{"never_active": never_active}]}},
    })  # fmt: skip


def test_every_lesson_config_has_a_judge_and_composes() -> None:
    configs = sorted(p.stem for p in (ROOT / "configs/experiment/lessons").glob("*.yaml"))
    assert configs == sorted(lessons.LESSONS)
    for name in configs:
        cfg = compose_cfg(f"experiment=lessons/{name}")
        assert cfg.trainer.epochs <= 60
        raw = yaml.safe_load((ROOT / f"configs/experiment/lessons/{name}.yaml").read_text())
        assert raw["hydra"]["sweeper"]["params"], name  # each lesson is a sweep


def test_vanishing_sigmoid_gradients_hold_and_a_reversal_does_not(tmp_path: Path) -> None:
    activation_job(tmp_path, 0, "sigmoid", 0.10, [1e-9, 0.3])
    activation_job(tmp_path, 1, "relu", 0.55, [0.2, 1.0])
    verdict = lessons.judge_deep_activations(lessons.read_jobs(tmp_path))
    assert verdict.held is True
    assert "sigmoid: first/last layer gradient norm 3.3e-09, test accuracy 0.100" in verdict.figures
    other = tmp_path / "other"
    activation_job(other, 0, "sigmoid", 0.50, [0.2, 1.0])
    activation_job(other, 1, "relu", 0.55, [0.2, 1.0])
    assert lessons.judge_deep_activations(lessons.read_jobs(other)).held is False


def test_the_regularization_gap_is_read_from_the_last_epoch(tmp_path: Path) -> None:
    gaps = {(0.0, 0.0): 0.30, (0.5, 0.0): 0.10, (0.0, 0.001): 0.20, (0.5, 0.001): 0.05}
    for num, ((dropout, l2), gap) in enumerate(gaps.items()):
        history = f"epoch,accuracy,val_accuracy\n1,0.5,0.5\n2,1.0,{1 - gap}\n"
        overrides = [f"regularization.dropout={dropout}", f"regularization.l2={l2}"]
        fake_job(tmp_path, num, overrides, {"test": {"accuracy": 0.8}}, history)
    verdict = lessons.judge_regularization_gap(lessons.read_jobs(tmp_path))
    assert verdict.held is True and "none: train-val accuracy gap 0.300" in verdict.figures
    assert "dropout + l2: train-val accuracy gap 0.050" in verdict.figures


def test_a_missing_job_leaves_the_lesson_undecided_and_says_why(tmp_path: Path) -> None:
    activation_job(tmp_path / "deep_activations", 0, "relu", 0.5, [0.2, 1.0])
    verdict = lessons.verdict_of("deep_activations", tmp_path)
    assert verdict.held is None and "KeyError: 'sigmoid'" in verdict.figures
    assert lessons.verdict_of("l1_vs_l2", tmp_path).held is None  # never ran


def test_report_only_writes_every_verdict_in_both_pages(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "dying_relu"
    activation_job(sweep, 0, "relu", 0.2, [1.0, 1.0], never_active=0.8, health="dying ReLU")
    activation_job(sweep, 1, "leaky_relu", 0.8, [1.0, 1.0], never_active=0.7)
    assert lessons.main(["dying_relu", "step_activation", "--out", str(tmp_path),
                         "--report-only"]) == 0  # fmt: skip
    md = (tmp_path / "report.md").read_text()
    assert "1 of 2 claims held" in md
    assert "| [dying_relu](dying_relu/leaderboard.md) | held |" in md
    assert "**held: relu: 80% of a layer's units never above 0 (dying ReLU)" in md
    assert "| step_activation | undecided |" not in md  # linked like every lesson
    assert "undecided: no finished job in" in md
    assert "<strong>held: relu: 80%" in (tmp_path / "report.html").read_text()
    assert "dying_relu: held:" in capsys.readouterr().out


def test_an_unknown_lesson_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        lessons.main(["deep_activation", "--out", str(tmp_path)])
    assert exit_info.value.code == 2


def test_the_step_lesson_asks_for_an_exactly_zero_gradient_before_the_step(
    tmp_path: Path,
) -> None:
    activation_job(tmp_path, 0, "step", 0.85, [0.0, 0.5])
    activation_job(tmp_path, 1, "sigmoid", 0.96, [0.1, 0.3])
    assert lessons.judge_step_activation(lessons.read_jobs(tmp_path)).held is True
    leaky = tmp_path / "leaky"
    activation_job(leaky, 0, "step", 0.85, [1e-8, 0.5])  # a tiny gradient is not zero
    activation_job(leaky, 1, "sigmoid", 0.96, [0.1, 0.3])
    assert lessons.judge_step_activation(lessons.read_jobs(leaky)).held is False


def test_early_stopping_counts_the_epochs_it_saved(tmp_path: Path) -> None:
    for num, (flag, epochs) in enumerate((("False", 60), ("True", 40))):  # as Hydra saves them
        train = {"epochs": epochs, "seconds": epochs / 10}
        fake_job(tmp_path, num, [f"regularization.early_stopping.enabled={flag}"],
                 {"test": {"accuracy": 0.93}, "train": train})  # fmt: skip
    verdict = lessons.judge_early_stopping(lessons.read_jobs(tmp_path))
    assert verdict.held is True and "stopped after 40 of 60 epochs (20 saved" in verdict.figures


def grid_job(sweep: Path, num: int, overrides: list[str], accuracy: float, medians: list[float],
             fit: str = "good fit") -> None:  # fmt: skip
    fake_job(sweep, num, overrides, {
        "test": {"accuracy": accuracy},
        "diagnostics": {"gradients": {"median": medians}, "fit": {"verdict": fit}},
    })  # fmt: skip


def test_skip_connections_ask_the_plain_net_to_degrade_and_the_residual_to_keep(
    tmp_path: Path,
) -> None:
    def sweep(name: str, accuracies: dict[tuple[int, bool], float]) -> Path:
        for num, ((depth, skip), acc) in enumerate(accuracies.items()):
            grid_job(tmp_path / name, num, [f"model.depth={depth}", f"model.skip={skip}"],
                     acc, [0.5 if skip else 1e-3, 1.0])  # fmt: skip
        return tmp_path / name

    degrades = sweep("a", {(18, True): 0.95, (18, False): 0.90, (34, True): 0.95,
                           (34, False): 0.60})  # fmt: skip
    verdict = lessons.judge_skip_connections(lessons.read_jobs(degrades))
    assert verdict.held is True
    assert "depth 34 plain: test accuracy 0.600, first/last layer gradient norm 0.001" in (
        verdict.figures
    )
    both_fine = sweep("b", {(18, True): 0.95, (18, False): 0.90, (34, True): 0.95,
                            (34, False): 0.92})  # fmt: skip
    assert lessons.judge_skip_connections(lessons.read_jobs(both_fine)).held is False
    residual_drops = sweep("c", {(18, True): 0.95, (18, False): 0.90, (34, True): 0.90,
                                 (34, False): 0.60})  # fmt: skip
    assert lessons.judge_skip_connections(lessons.read_jobs(residual_drops)).held is False


def test_batch_size_lr_asks_for_the_small_small_pair_to_lead(tmp_path: Path) -> None:
    def sweep(name: str, accuracies: list[float]) -> Path:
        cells = [(16, 0.01), (16, 0.5), (256, 0.01), (256, 0.5)]
        for num, ((batch, lr), acc) in enumerate(zip(cells, accuracies, strict=True)):
            grid_job(tmp_path / name, num, [f"trainer.batch_size={batch}", f"optimizer.lr={lr}"],
                     acc, [1.0, 1.0])  # fmt: skip
        return tmp_path / name

    verdict = lessons.judge_batch_size_lr(lessons.read_jobs(sweep("a", [0.97, 0.90, 0.93, 0.50])))
    assert verdict.held is True and "batch 256, lr 0.5: test accuracy 0.500" in verdict.figures
    slow = lessons.judge_batch_size_lr(lessons.read_jobs(sweep("b", [0.86, 0.98, 0.20, 0.96])))
    assert slow.held is False  # the measured pattern: a small lr is too slow in 10 epochs
    assert "small batch + small lr the best: no" in slow.figures
    assert "the small batch at least as good at each lr: yes" in slow.figures


def test_softmax_vs_sigmoid_counts_the_labels_each_predicts(tmp_path: Path) -> None:
    def job(sweep: Path, num: int, softmax: bool, predictions: list[str], f1: float) -> None:
        fake_job(sweep, num, [f"model.softmax_outputs={softmax}"],
                 {"test": {"f1_micro": f1, "roc_auc": 0.9}})  # fmt: skip
        rows = "".join(f"{i},a|b,{p}\n" for i, p in enumerate(predictions))
        (sweep / f"{num}_mlp_digits_flat/predictions.csv").write_text(
            "index,target,prediction\n" + rows
        )

    job(tmp_path, 0, False, ["a|b", "a", ""], 0.8)
    job(tmp_path, 1, True, ["a", "", "b"], 0.4)
    verdict = lessons.judge_softmax_vs_sigmoid(lessons.read_jobs(tmp_path))
    assert verdict.held is True
    assert "sigmoid: 1.00 labels predicted per test sample (at most 2)" in verdict.figures
    two = tmp_path / "two"
    job(two, 0, False, ["a|b", "a", ""], 0.8)
    job(two, 1, True, ["a|b", "", "b"], 0.4)  # a softmax that predicts two labels: no
    assert lessons.judge_softmax_vs_sigmoid(lessons.read_jobs(two)).held is False
