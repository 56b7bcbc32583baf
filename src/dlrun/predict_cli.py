"""``dlrun-predict``: a trained run's predictions on new data, preprocessed as in training.

    dlrun-predict run=<run dir | ensemble dir> input=<file or folder> [out=<new dir>]
                  [ckpt=best|last] [threshold=<the run's>] [device=auto] [batch_size=256]

input= by the run's data:
  tables (csv, iris, diabetes, ...)  a CSV with the training columns (the target column
                                     is optional), or a .npy of raw features (N, F)
  images (digits, mnist, cifar10)    a folder of PNG/JPEG files (subfolders named after
                                     classes give targets), one image, or a .npy of
                                     images (N, C, H, W) in [0, 1] or uint8
  image folders (image_folder)       the same, each file decoded, cropped and resized
                                     exactly as the training images were
  text classes (text_classes)        a .txt file with one text per line, a folder of
                                     .txt files, or a CSV with a 'text' column (+'target')
  text folders (text_folder)         the same; a file in a folder is one document, as in
                                     training (words never seen become <unk>)
  series (sine, sunspots, csv_series)  a CSV with the series' columns or a .npy (T[, F]):
                                     one forecast after every full window, the last one
                                     past the end of the series
  sequences (waveforms)              a .npy/.npz (x, lengths) or a CSV, a sequence a row
  arrays (array)                     a .npy, or a .npz with x (+y), of rows shaped like
                                     the training array's (channels-last stays so)

Everything preprocessing needs is read from the run dir (contract.json), so a copied
run predicts the same numbers without the training data. Columns the model doesn't use
are ignored, images of another size are resized, categories and characters never seen
in training are encoded as in training (zeros, left out): each fallback is named in one
line. Missing columns, unreadable files and wrong shapes stop with one line.

Writes predictions.csv (per-class probabilities, or values in the data's units) and
predict.json into <run>/predict/<input name>/ (_2, _3, ... when taken) or out=. When the
input holds targets, the predictions are also scored like a run (metrics.json,
report.md, plots; the baseline is fit on the run's own training targets).
Exit codes: 0 done, 2 bad arguments or input, 130 interrupted.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.cli_args import SAVED_RUN_DEFAULTS, SAVED_RUN_KINDS, errors_reported, parse_key_values
from dlrun.errors import UserError

if TYPE_CHECKING:
    from dlrun.config import RunConfig

USAGE = (__doc__ or "").strip()
DEFAULTS: dict[str, Any] = {**SAVED_RUN_DEFAULTS, "input": ""}
KINDS = SAVED_RUN_KINDS


def predict_saved(args: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Predict per ``args``; returns the output folder and the summary written there."""
    from dlrun.restore import check_run_arg

    check_run_arg(args["run"], args["ckpt"])
    if not Path(args["input"]).exists():
        raise UserError(f"input not found: {args['input']}")
    from dlrun.data.inputs import read_inputs
    from dlrun.evaluation.files import write_json
    from dlrun.predictor import interpret, load_predictor, raw_outputs
    from dlrun.rundir import new_output_dir

    if args["batch_size"] < 1:
        raise UserError("batch_size must be >= 1")
    predictor = load_predictor(Path(args["run"]), args["ckpt"], args["device"])
    source = Path(args["input"])
    inputs = read_inputs(source, predictor.contract)
    threshold = _threshold(args, predictor.cfg)
    outputs = raw_outputs(predictor, inputs.x, inputs.lengths, args["batch_size"])
    scaler = predictor.contract.meta.get("target_scaler")
    scored = interpret(predictor.task, outputs, threshold, scaler)
    label = source.stem or "input"
    with new_output_dir(args["out"], predictor.run_dir / "predict", label) as out:
        summary: dict[str, Any] = {
            "run": str(predictor.run_dir),
            "ckpt": args["ckpt"],
            "input": str(source),
            "n": len(inputs),
            "notes": predictor.notes + inputs.notes,
        }
        metrics = None
        if inputs.y is not None:
            metrics = _score_targets(predictor, inputs, out, threshold, args)
            summary["scored"] = len(inputs.y)  # the rows with a target; see metrics.json
        targets = _target_texts(predictor, inputs, scaler)
        write_predictions(out / "predictions.csv", predictor, scored, inputs.names, targets)
        write_json(out / "predict.json", summary)
    return out, {**summary, "metrics": metrics}


def _threshold(args: dict[str, Any], cfg: RunConfig) -> float:
    threshold = cfg.eval.threshold if args["threshold"] is None else args["threshold"]
    if not 0.0 < threshold < 1.0:
        raise UserError(f"threshold={threshold} is invalid: must be in (0, 1)")
    return threshold


def _score_targets(
    predictor: Any, inputs: Any, out: Path, threshold: float, args: dict[str, Any]
) -> dict[str, Any]:
    """Score the rows that have targets like a run's test split (files go into ``out``)."""
    import torch

    from dlrun.data.spec import Split
    from dlrun.evaluation import evaluate_run

    rows = torch.as_tensor(inputs.scored)
    lengths = None if inputs.lengths is None else inputs.lengths[rows]
    test = Split(inputs.x[rows], inputs.y, lengths)
    return evaluate_run(
        predictor.model,
        predictor.reference(test).to(predictor.device),
        out,
        splits=("test",),
        batch_size=args["batch_size"],
        device=predictor.device,
        threshold=threshold,
        run_summary=f"predictions of {predictor.run_dir} on {args['input']}",
    )


def _target_texts(predictor: Any, inputs: Any, scaler: dict | None) -> list[str]:
    """Each row's target as predictions.csv writes it ('' where a row has none)."""
    from dlrun.evaluation.predict import unscale

    texts = [""] * len(inputs)
    if inputs.y is None:
        return texts
    from dlrun.tasks import info

    record = info(predictor.task)
    if record.scaled:
        values = unscale(inputs.y.reshape(len(inputs.y), -1), scaler).tolist()
        cells = [" ".join(_num(v) for v in row) for row in values]
    else:
        names = class_names(predictor)
        cells = [_label(record.targets, label, names) for label in inputs.y]
    for row, cell in zip(inputs.scored, cells, strict=True):
        texts[row] = cell
    return texts


def class_names(predictor: Any) -> tuple[str, ...]:
    from dlrun.tasks import info

    spec = predictor.contract.spec
    return info(spec.task).class_names(spec.class_names, spec.n_outputs)


def _label(targets: Any, value: Any, names: tuple[str, ...]) -> str:
    from dlrun.tasks import Targets

    if targets is Targets.LABELS:
        return "|".join(n for n, on in zip(names, value.tolist(), strict=True) if on)
    return names[int(value)]


def write_predictions(
    path: Path, predictor: Any, scored: Any, names: list[str], targets: list[str]
) -> None:
    """``index, input, target, prediction`` and ``prob_<class>`` (or ``prediction_<k>``)."""
    from dlrun.tasks import Targets, info

    record = info(predictor.task)
    n = len(names)
    header = ["index", "input", "target"]
    if record.scaled:
        values = scored.preds.reshape(n, -1)
        width = values.shape[1]
        header += ["prediction"] if width == 1 else [f"prediction_{k}" for k in range(width)]
        rows = [[*(_num(v) for v in row)] for row in values.tolist()]
    else:
        classes = class_names(predictor)
        probs = scored.scores.reshape(n, -1)
        if record.targets is Targets.BINARY:
            probs = probs.new_tensor([[1 - p[0], p[0]] for p in probs.tolist()])
        header += ["prediction", *(f"prob_{c}" for c in classes)]
        rows = [
            [_label(record.targets, pred, classes), *(_num(p) for p in prob)]
            for pred, prob in zip(scored.preds, probs.tolist(), strict=True)
        ]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, (name, target, row) in enumerate(zip(names, targets, rows, strict=True)):
            writer.writerow([i, name, target, *row])


def _num(value: float) -> str:
    return format(value, ".6g")


def main() -> None:
    args = parse_key_values(
        sys.argv[1:], DEFAULTS, USAGE, required=("run", "input"), kinds=KINDS,
        prog="dlrun-predict",
    )  # fmt: skip
    with errors_reported("dlrun-predict"):
        out, summary = predict_saved(args)
    for note in summary["notes"]:
        print(f"dlrun-predict: note: {note}", file=sys.stderr)
    _print_summary(out, summary)


def _print_summary(out: Path, summary: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    if summary.get("metrics"):
        from dlrun.evaluation.report import headline_table

        console.print(headline_table(summary["metrics"]))
    console.print(f"{summary['n']} predictions written to {out}", highlight=False)


if __name__ == "__main__":
    from dlrun import process_exit

    process_exit.run(main)
