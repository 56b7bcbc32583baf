"""The study notes' lessons as experiments: run each, judge its claim, write one report.

    python scripts/lessons.py [lesson ...] [--out outputs/lessons] [--report-only]

Each lesson is a small sweep in ``configs/experiment/lessons/<name>.yaml``, run as a user
would (``dlrun -m experiment=lessons/<name> hydra.sweep.dir=<out>/<name>``) with its
leaderboard there. Its verdict is computed here from the jobs' metrics.json: "held" or
"did not hold on this data", with the figures that decided it, so a reader can check
the claim against the numbers. ``<out>/report.md`` and ``report.html`` collect them.
A sweep run again skips its finished jobs (dlrun's own resume), so ``--report-only`` or
a second run only rewrites the report. Exit 1 when a lesson's sweep failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "experiment" / "lessons"


@dataclass(frozen=True)
class Job:
    """One job of a lesson's sweep: its swept values and its metrics.json."""

    name: str
    choices: dict[str, str]
    metrics: dict[str, Any]
    path: Path | None = None  # the job dir, for files besides metrics.json

    def test(self, key: str) -> float:
        return float(self.metrics["test"][key])

    def last(self, key: str) -> float:
        """The value of ``key`` in the last epoch of history (metrics.json's ``history``)."""
        return float(self.metrics["history_last"][key])


@dataclass(frozen=True)
class Verdict:
    held: bool | None  # None: the numbers could not decide (a job missing)
    figures: str


def read_jobs(sweep_dir: Path) -> list[Job]:
    """The completed jobs of a sweep dir, in job order (a job without metrics is left out)."""
    jobs = []
    for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        metrics_file, overrides_file = job_dir / "metrics.json", job_dir / ".hydra/overrides.yaml"
        if not metrics_file.is_file() or not overrides_file.is_file():
            continue
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        metrics["history_last"] = _last_history_row(job_dir / "history.csv")
        overrides = yaml.safe_load(overrides_file.read_text(encoding="utf-8")) or []
        choices = dict(o.split("=", 1) for o in overrides if "=" in o)
        choices.pop("experiment", None)
        jobs.append(Job(job_dir.name, choices, metrics, job_dir))
    return jobs


def _last_history_row(path: Path) -> dict[str, float]:
    import csv

    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", None)} if rows else {}


def by(jobs: list[Job], key: str, *expected: str) -> dict[str, Job]:
    """The jobs keyed by the value they swept for ``key``; KeyError when one of
    ``expected`` is missing (a failed job leaves its lesson undecided)."""
    found = {job.choices[key]: job for job in jobs if key in job.choices}
    missing = [value for value in expected if value not in found]
    if missing:
        raise KeyError(missing[0])
    return found


def _gradient_ratio(job: Job) -> float:
    """Median gradient norm of the first layer over the last's (1 = no vanishing)."""
    grads = job.metrics["diagnostics"]["gradients"]
    return grads["median"][0] / grads["median"][-1]


def judge_deep_activations(jobs: list[Job]) -> Verdict:
    act = by(jobs, "activation", "sigmoid", "relu")
    sig, relu = act["sigmoid"], act["relu"]
    ratios = {name: _gradient_ratio(job) for name, job in act.items()}
    held = ratios["sigmoid"] * 100 <= ratios["relu"] and relu.test("accuracy") > sig.test(
        "accuracy"
    )
    figures = "; ".join(
        f"{name}: first/last layer gradient norm {ratios[name]:.2g}, "
        f"test accuracy {job.test('accuracy'):.3f}"
        for name, job in act.items()
    )
    return Verdict(held, figures)


def judge_dying_relu(jobs: list[Job]) -> Verdict:
    act = by(jobs, "activation", "relu", "leaky_relu")

    def dead(job: Job) -> float:
        layers = job.metrics["diagnostics"]["activations"]["layers"]
        return max((row.get("never_active", 0.0) for row in layers), default=0.0)

    relu, leaky = act["relu"], act["leaky_relu"]
    dying = relu.metrics["diagnostics"]["activations"]["verdict"] == "dying ReLU"
    held = dying and leaky.test("accuracy") > relu.test("accuracy")
    figures = "; ".join(
        f"{name}: {dead(job):.0%} of a layer's units never above 0 "
        f"({job.metrics['diagnostics']['activations']['verdict']}), "
        f"test accuracy {job.test('accuracy'):.3f}"
        for name, job in act.items()
    )
    return Verdict(held, figures)


def judge_step_activation(jobs: list[Job]) -> Verdict:
    act = by(jobs, "activation", "step", "sigmoid")
    step, sig = act["step"], act["sigmoid"]
    first = {
        name: job.metrics["diagnostics"]["gradients"]["median"][0] for name, job in act.items()
    }
    held = first["step"] == 0 < first["sigmoid"] and step.test("accuracy") < sig.test("accuracy")
    figures = (
        f"first layer's median gradient norm: step {first['step']:.3g}, sigmoid "
        f"{first['sigmoid']:.3g}; test accuracy: step {step.test('accuracy'):.3f} (its "
        f"output layer alone learns, on fixed random binary features), sigmoid "
        f"{sig.test('accuracy'):.3f}, the baseline {step.metrics['baseline']['accuracy']:.3f}"
    )
    return Verdict(held, figures)


def _gap(job: Job) -> float:
    return job.last("accuracy") - job.last("val_accuracy")


def judge_regularization_gap(jobs: list[Job]) -> Verdict:
    named = {_regularizer(job): job for job in jobs}
    gaps = {name: _gap(job) for name, job in named.items()}
    held = all(gaps[n] < gaps["none"] for n in ("dropout", "l2", "dropout + l2"))
    figures = "; ".join(
        f"{name}: train-val accuracy gap {gaps[name]:.3f} at the last epoch, "
        f"test accuracy {job.test('accuracy'):.3f}"
        for name, job in named.items()
    )
    return Verdict(held, figures)


def _regularizer(job: Job) -> str:
    parts = [
        name
        for name, key in (("dropout", "regularization.dropout"), ("l2", "regularization.l2"))
        if float(job.choices.get(key, 0)) > 0
    ]
    return " + ".join(parts) or "none"


def judge_early_stopping(jobs: list[Job]) -> Verdict:
    es = by(jobs, "regularization.early_stopping.enabled", "False", "True")  # as Hydra saves
    off, on = es["False"], es["True"]
    saved = off.metrics["train"]["epochs"] - on.metrics["train"]["epochs"]
    cost = off.test("accuracy") - on.test("accuracy")
    held = saved > 0 and cost <= 0.02
    figures = (
        f"stopped after {on.metrics['train']['epochs']} of {off.metrics['train']['epochs']} "
        f"epochs ({saved} saved, {on.metrics['train']['seconds']:.1f}s vs "
        f"{off.metrics['train']['seconds']:.1f}s); test accuracy {on.test('accuracy'):.3f} "
        f"vs {off.test('accuracy'):.3f} without stopping"
    )
    return Verdict(held, figures)


def judge_l1_vs_l2(jobs: list[Job]) -> Verdict:
    reg = by(jobs, "regularization", "l1", "l2")
    zero = {name: job.metrics["train"]["zero_weights"] for name, job in reg.items()}
    held = zero["l1"] >= 0.2 and zero["l2"] < 0.01
    figures = "; ".join(
        f"{name}: {zero[name]:.1%} of weights exactly 0, test accuracy {job.test('accuracy'):.3f}"
        for name, job in reg.items()
    )
    return Verdict(held, figures)


def judge_baseline(jobs: list[Job]) -> Verdict:
    models = by(jobs, "model", "mlp", "gru")
    gains = {
        name: 1 - job.test("rmse") / job.metrics["baseline"]["rmse"] for name, job in models.items()
    }
    held = all(gain < 0.2 for gain in gains.values())
    kind = next(iter(models.values())).metrics.get("baseline_kind", "baseline")
    figures = "; ".join(
        f"{name}: test rmse {job.test('rmse'):.4g} vs {kind} "
        f"{job.metrics['baseline']['rmse']:.4g} ({gains[name]:+.0%})"
        for name, job in models.items()
    )
    return Verdict(held, figures)


def judge_gru_vs_lstm(jobs: list[Job]) -> Verdict:
    models = by(jobs, "model", "gru", "lstm")
    gru, lstm = models["gru"], models["lstm"]
    gap = lstm.test("accuracy") - gru.test("accuracy")
    faster = gru.metrics["train"]["seconds"] < lstm.metrics["train"]["seconds"]
    figures = "; ".join(
        f"{name}: test accuracy {job.test('accuracy'):.3f} in {job.metrics['train']['seconds']:.1f}"
        f"s ({job.metrics['train']['parameters']:,} parameters)"
        for name, job in models.items()
    )
    return Verdict(gap <= 0.03 and faster, figures)


def judge_skip_connections(jobs: list[Job]) -> Verdict:
    """He et al.'s degradation problem: deeper plain nets get worse, residual ones don't."""
    cells = {(job.choices["model.depth"], job.choices["model.skip"]): job for job in jobs}
    need = [(d, s) for d in ("18", "34") for s in ("True", "False")]  # as Hydra saves them
    missing = [f"depth {d} skip {s}" for d, s in need if (d, s) not in cells]
    if missing:
        raise KeyError(missing[0])
    acc = {cell: job.test("accuracy") for cell, job in cells.items()}
    plain_degrades = acc["34", "False"] < acc["18", "False"]
    residual_keeps = acc["34", "True"] >= acc["18", "True"] - 0.01
    held = plain_degrades and residual_keeps and acc["34", "True"] > acc["34", "False"]
    figures = "; ".join(
        f"depth {d} {'residual' if s == 'True' else 'plain'}: test accuracy "
        f"{acc[d, s]:.3f}, first/last layer gradient norm {_gradient_ratio(cells[d, s]):.2g}"
        for d, s in need
    )
    return Verdict(held, figures)


def judge_batch_size_lr(jobs: list[Job]) -> Verdict:
    """The notes: pair a small batch with a small lr; small batches don't get stuck."""
    cells = {(int(j.choices["trainer.batch_size"]), float(j.choices["optimizer.lr"])): j
             for j in jobs}  # fmt: skip
    batches, lrs = sorted({b for b, _ in cells}), sorted({lr for _, lr in cells})
    if len(batches) != 2 or len(lrs) != 2 or len(cells) != 4:
        raise KeyError("the 2x2 grid of trainer.batch_size x optimizer.lr")
    acc = {cell: job.test("accuracy") for cell, job in cells.items()}
    small_small = acc[batches[0], lrs[0]]
    best_pair = small_small >= max(acc.values())
    small_wins = all(acc[batches[0], lr] >= acc[batches[1], lr] for lr in lrs)
    figures = "; ".join(
        f"batch {b}, lr {lr:g}: test accuracy {acc[b, lr]:.3f} "
        f"(fit: {cells[b, lr].metrics['diagnostics']['fit']['verdict']})"
        for b in batches for lr in lrs
    )  # fmt: skip
    parts = (f"small batch + small lr the best: {'yes' if best_pair else 'no'}; the small "
             f"batch at least as good at each lr: {'yes' if small_wins else 'no'}")  # fmt: skip
    return Verdict(best_pair and small_wins, f"{figures} ({parts})")


def _labels_per_sample(job: Job) -> tuple[float, int]:
    """Mean and most labels predicted for one test sample (predictions.csv)."""
    import csv

    if job.path is None or not (job.path / "predictions.csv").is_file():
        raise KeyError(f"{job.name}/predictions.csv")
    with (job.path / "predictions.csv").open(newline="") as fh:
        counts = [len([p for p in row["prediction"].split("|") if p]) for row in csv.DictReader(fh)]
    return sum(counts) / max(len(counts), 1), max(counts, default=0)


def judge_softmax_vs_sigmoid(jobs: list[Job]) -> Verdict:
    """Softmax outputs sum to 1: at most one label passes 0.5; a sigmoid each can pass."""
    out = by(jobs, "model.softmax_outputs", "False", "True")
    sigmoid, softmax = out["False"], out["True"]
    counts = {name: _labels_per_sample(job) for name, job in (("sigmoid", sigmoid),
                                                              ("softmax", softmax))}  # fmt: skip
    held = counts["softmax"][1] <= 1 < counts["sigmoid"][1] and sigmoid.test(
        "f1_micro"
    ) > softmax.test("f1_micro")
    figures = "; ".join(
        f"{name}: {counts[name][0]:.2f} labels predicted per test sample (at most "
        f"{counts[name][1]}), f1_micro {job.test('f1_micro'):.3f}, "
        f"roc_auc {job.test('roc_auc'):.3f}"
        for name, job in (("sigmoid", sigmoid), ("softmax", softmax))
    )
    return Verdict(held, figures)


@dataclass(frozen=True)
class Lesson:
    claim: str
    judge: Callable[[list[Job]], Verdict]


LESSONS: dict[str, Lesson] = {
    "deep_activations": Lesson(
        "In a deep (12-layer) MLP, gradients vanish through sigmoid units (the first "
        "layer's gradient norm at least 100x smaller, relative to the last's, than with "
        "ReLU) and the sigmoid net learns worse than the ReLU net.",
        judge_deep_activations,
    ),
    "dying_relu": Lesson(
        "At a high learning rate ReLU units die (the diagnostics say dying ReLU) while "
        "leaky ReLU, whose units keep a gradient below zero, keeps learning: it ends with "
        "the higher test accuracy.",
        judge_dying_relu,
    ),
    "step_activation": Lesson(
        "The binary step activation's derivative is 0, so the layers before it get an "
        "exactly zero gradient and never learn (only the output layer does); the net ends "
        "below the same net with a sigmoid.",
        judge_step_activation,
    ),
    "regularization_gap": Lesson(
        "Dropout, L2 and both shrink the gap between training and validation accuracy "
        "of a network that memorises a small training set.",
        judge_regularization_gap,
    ),
    "early_stopping": Lesson(
        "Early stopping saves epochs at (almost) no cost: at most 0.02 less test accuracy.",
        judge_early_stopping,
    ),
    "l1_vs_l2": Lesson(
        "An L1 penalty zeroes weights (at least 20% exactly 0); L2 only shrinks them "
        "(under 1% exactly 0).",
        judge_l1_vs_l2,
    ),
    "gru_vs_lstm": Lesson(
        "A GRU is about as accurate as an LSTM (at most 0.03 less test accuracy) and "
        "trains faster (fewer gates, fewer parameters).",
        judge_gru_vs_lstm,
    ),
    "skip_connections": Lesson(
        "ResNet goes deeper and keeps its performance through skip connections: the "
        "plain net of the same layers gets worse from 18 to 34 layers, the residual net "
        "does not (at most 0.01 less test accuracy), and at depth 34 the residual net is "
        "the more accurate.",
        judge_skip_connections,
    ),
    "batch_size_lr": Lesson(
        "Pair a small batch with a small learning rate: in a 2x2 grid of batch size x "
        "learning rate, small batch + small lr ends with the best test accuracy, and at "
        "each learning rate the small batch does at least as well as the large one "
        "(large batches 'get stuck in the wrong solution').",
        judge_batch_size_lr,
    ),
    "softmax_vs_sigmoid": Lesson(
        "A softmax output can't produce more than one label; sigmoid outputs can: on "
        "multilabel data the softmax net never predicts two labels for a sample (at the "
        "0.5 threshold) while the sigmoid net does, and the sigmoid net has the higher "
        "micro F1.",
        judge_softmax_vs_sigmoid,
    ),
    "baseline_hard_to_beat": Lesson(
        "A common-sense baseline is hard to beat: on sunspots, small networks trained "
        "briefly cut its test rmse by less than 20%.",
        judge_baseline,
    ),
}


def run_lesson(name: str, out: Path) -> tuple[int, float]:
    """The lesson's sweep into ``out/name`` (finished jobs are skipped); exit code, seconds."""
    started = time.perf_counter()
    command = [
        sys.executable, "-m", "dlrun.cli", "-m", f"experiment=lessons/{name}",
        f"hydra.sweep.dir={out / name}",
    ]  # fmt: skip
    with (out / f"{name}.log").open("w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    return code, time.perf_counter() - started


def verdict_of(name: str, out: Path) -> Verdict:
    """The lesson's verdict from its sweep dir; undecided when jobs or numbers are missing."""
    sweep = out / name
    jobs = read_jobs(sweep) if sweep.is_dir() else []
    if not jobs:
        return Verdict(None, f"no finished job in {sweep} (see {name}.log)")
    try:
        return LESSONS[name].judge(jobs)
    except (KeyError, TypeError, ZeroDivisionError) as err:  # a job missing, a null metric
        return Verdict(None, f"the numbers could not decide ({type(err).__name__}: {err})")


def verdict_line(verdict: Verdict) -> str:
    word = {True: "held", False: "did not hold on this data", None: "undecided"}[verdict.held]
    return f"{word}: {verdict.figures}"


def report(out: Path, results: dict[str, Verdict], seconds: dict[str, float]) -> None:
    """``out/report.md`` and ``report.html``: one section per lesson, claim then verdict."""
    from dlrun.document import Cell, Document, Heading, Paragraph, Table, to_markdown
    from dlrun.html_page import write_page

    held = sum(v.held is True for v in results.values())
    doc = Document("The notes' lessons as experiments")
    intro = f"{held} of {len(results)} claims held. Each lesson is a sweep of "
    doc.add(Paragraph(intro + "configs/experiment/lessons/<name>.yaml; its leaderboard is linked."))
    rows = [
        [Cell(name, href=f"{name}/leaderboard.md"), Cell(verdict_line(v).split(":")[0])]
        for name, v in results.items()
    ]
    doc.add(Table(["lesson", "verdict"], rows, name="lessons"))
    for name, verdict in results.items():
        took = f" ({seconds[name]:.0f} s)" if name in seconds else ""
        doc.add(
            Heading(name + took),
            Paragraph(f"Claim: {LESSONS[name].claim}"),
            Paragraph(verdict_line(verdict), strong=True),
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(to_markdown(doc), encoding="utf-8")
    write_page(doc, out / "report.html")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="*", help=f"default: all of {', '.join(LESSONS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "lessons")
    parser.add_argument("--report-only", action="store_true", help="judge what is there")
    args = parser.parse_args(argv)
    unknown = [n for n in args.lessons if n not in LESSONS]
    if unknown:
        parser.error(f"unknown lesson(s) {', '.join(unknown)}; known: {', '.join(LESSONS)}")
    names, failed, seconds = args.lessons or list(LESSONS), [], {}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not args.report_only:
            code, seconds[name] = run_lesson(name, args.out)
            failed += [name] * (code != 0)
        print(f"{name}: {verdict_line(verdict_of(name, args.out))}", flush=True)
    report(args.out, {n: verdict_of(n, args.out) for n in names}, seconds)
    print(f"report: {args.out / 'report.md'}")
    if failed:
        print(f"lessons: sweep failed: {', '.join(failed)} (see <out>/<name>.log)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
