"""``dlrun-inspect``: look inside a trained run's model.

    dlrun-inspect run=<dir> [out=<dir>] [images=0,1,2] [top=6] [rows=200] [ckpt=best]

For a CNN (image data): the first layer's filters, the feature maps of every
convolution for the chosen test ``images``, and Grad-CAM heat maps over the ``top`` most
confidently right and most confidently wrong test images. For a tabular model: feature
attributions by integrated gradients over ``rows`` test rows, per feature. Attribution
methods come from Captum (``pip install captum``; dlrun's ``inspect`` extra), not hand
written. Pictures and ``inspect.md`` go to ``out`` (default ``<run>/inspect``, or
``inspect_2`` ... if that exists: nothing is overwritten). Exit codes: 0 done, 2 bad
arguments, a refused run dir or a model it cannot inspect, 130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.cli_args import errors_reported, parse_key_values
from dlrun.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

USAGE = (__doc__ or "").strip()
DEFAULTS: dict[str, Any] = {
    "run": "", "out": "", "images": "0,1,2", "top": 6, "rows": 200, "ckpt": "best",
}  # fmt: skip
MAPS_PER_LAYER = 8  # feature-map channels shown per convolution


def captum_attr() -> Any:
    """``captum.attr``, or one line saying how to get it."""
    try:
        import captum.attr
    except ImportError:
        raise UserError("dlrun-inspect needs Captum: pip install captum") from None
    return captum.attr


def convolutions(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's 2-D convolutions in forward order (registration order)."""
    from torch import nn

    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor):
    """Grad-CAM (Selvaraju et al. 2017) of ``target`` classes at ``layer``, upsampled to
    the input's size and scaled to [0, 1] per image: where the evidence for the class is."""
    attr = captum_attr()
    cam = attr.LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    cam = attr.LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)
    return (cam / peak[:, None, None]).detach()


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None):
    """Integrated gradients from an all-zero baseline (the mean of standardised
    features); one attribution per row and feature."""
    ig = captum_attr().IntegratedGradients(model)
    return ig.attribute(x, baselines=x * 0, target=target, n_steps=32).detach()


def predictions(model: nn.Module, x: torch.Tensor, batch: int = 256):
    """Predicted class and its probability for every row (multiclass or binary)."""
    import torch

    with torch.no_grad():
        out = torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])
    if out.shape[-1] == 1:
        p = out[:, 0].sigmoid()
        return (p > 0.5).long(), torch.where(p > 0.5, p, 1 - p)
    prob = out.softmax(-1)
    conf, pred = prob.max(-1)
    return pred, conf


def confident_picks(pred, conf, y, top: int) -> tuple[list[int], list[int]]:
    """Indices of the ``top`` most confidently right and most confidently wrong rows."""
    order = conf.argsort(descending=True).tolist()
    right = [i for i in order if pred[i] == y[i]][:top]
    wrong = [i for i in order if pred[i] != y[i]][:top]
    return right, wrong


def inspect_images(exp: Any, out: Path, args: dict[str, Any]) -> list[str]:
    """Filters, feature maps and Grad-CAM pictures; the lines of inspect.md."""
    from dlrun.diagnostics import inspect_plots as plots

    model, spec, test = exp.model, exp.bundle.spec, exp.bundle.test
    convs = convolutions(model)
    if not convs:
        raise UserError("this image model has no 2-D convolution to look inside")
    chosen = _image_indices(args["images"], len(test))
    plots.filters(out / "filters.png", convs[0])
    plots.feature_maps(out / "feature_maps.png", model, convs, test.x[chosen], MAPS_PER_LAYER)
    pred, conf = predictions(model, test.x)
    right, wrong = confident_picks(pred, conf, test.y, args["top"])
    rows = []
    for title, picks in (("right", right), ("wrong", wrong)):
        if picks:
            cams = grad_cam(model, convs[-1][1], test.x[picks], pred[picks])
            rows.append((title, picks, cams))
    plots.grad_cam_grid(out / "gradcam.png", test.x, rows, pred, conf, test.y, spec.class_names)
    return [
        f"- `filters.png`: the {convs[0][1].out_channels} filters of `{convs[0][0]}`",
        f"- `feature_maps.png`: feature maps of {len(convs)} convolutions for test images "
        f"{', '.join(map(str, chosen))}",
        f"- `gradcam.png`: Grad-CAM at `{convs[-1][0]}` over the {len(right)} most confidently "
        f"right and {len(wrong)} most confidently wrong test images",
    ]


def inspect_table(exp: Any, out: Path, args: dict[str, Any]) -> list[str]:
    """Integrated-gradients attributions per feature: a bar chart and a table."""
    from dlrun.diagnostics import inspect_plots as plots
    from dlrun.tasks import Targets, info

    model, spec, bundle = exp.model, exp.bundle.spec, exp.bundle
    x = bundle.test.x[: args["rows"]]
    record = info(spec.task)
    target = predictions(model, x)[0] if record.targets is Targets.CLASSES else None
    if not record.single_label and model(x[:1]).shape[-1] != 1:
        target = 0 * x[:, 0].long()  # the first output of a multi-output model
    attributions = integrated_gradients(model, x, target)
    names = list(bundle.meta.get("feature_names") or [f"x{i}" for i in range(x.shape[1])])
    mean_abs = attributions.abs().mean(0).tolist()
    signed = attributions.mean(0).tolist()
    plots.attribution_bars(out / "attributions.png", names, mean_abs, signed)
    ranked = sorted(zip(names, mean_abs, signed, strict=True), key=lambda r: -r[1])
    lines = [
        f"- `attributions.png`: integrated gradients over {len(x)} test rows "
        "(towards each row's predicted class)", "",
        "| feature | mean abs attribution | mean attribution |", "|---|---:|---:|",
    ]  # fmt: skip
    lines += [f"| {n} | {a:.4g} | {s:+.4g} |" for n, a, s in ranked]
    return lines


def _image_indices(text: str, n: int) -> list[int]:
    try:
        chosen = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"images={text}: give test image numbers, e.g. images=0,5,9") from None
    bad = [i for i in chosen if not 0 <= i < n]
    if bad or not chosen:
        raise UserError(f"images={text}: the test split has images 0 to {n - 1}")
    return chosen


def output_dir(run_dir: Path, out: str) -> Path:
    """``out`` (new or empty), else ``<run>/inspect``, ``inspect_2``, ...: never overwrites."""
    if out:
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise UserError(f"out={out} already holds files; name a new or empty folder")
        return path
    path, n = run_dir / "inspect", 1
    while path.exists():
        n += 1
        path = run_dir / f"inspect_{n}"
    return path


def inspect_run(args: dict[str, Any]) -> Path:
    """Load the run, pick the pictures for its kind of data, write them and inspect.md."""
    from dlrun.data.spec import DataKind
    from dlrun.restore import load_run, run_context

    captum_attr()  # before loading anything: a missing package is the first thing to say
    run_dir = Path(args["run"])
    _, exp = load_run(run_dir, args["ckpt"], "cpu")
    kind = exp.bundle.spec.kind
    if kind is DataKind.IMAGE and exp.bundle.spec.task.value == "multiclass":
        make = inspect_images
    elif kind is DataKind.TABULAR:
        make = inspect_table
    else:
        raise UserError(
            f"dlrun-inspect looks inside CNNs on image classification and tabular models; "
            f"{run_dir} is a {exp.bundle.spec.task} run on {kind} data"
        )
    out = output_dir(run_dir, args["out"])
    out.mkdir(parents=True)
    lines = make(exp, out, args)
    names = run_context(run_dir)
    title = f"# Inside {names.model_name} on {names.data_name} ({run_dir.name})"
    (out / "inspect.md").write_text("\n".join([title, "", *lines, ""]))
    return out


def main() -> None:
    prog = "dlrun-inspect"
    args = parse_key_values(sys.argv[1:], DEFAULTS, USAGE, required=("run",), prog=prog)
    with errors_reported(prog):
        out = inspect_run(args)
        print(f"pictures and inspect.md: {out}")


if __name__ == "__main__":
    main()
