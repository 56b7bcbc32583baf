"""Does the input pipeline keep up? ``data=image_folder`` measured at 1k, 10k and 100k images.

For each folder size it generates a folder of small images (10 classes, PNG and JPEG,
40x48 px, resized to 32x32 RGB) and measures, each in a fresh process so that every
peak memory figure is that measurement's own:

- ``first batch``: a cold start (no decoded cache): listing the folder, splitting it,
  the normalisation statistics and the first training batch, streamed, 2 workers;
- ``stream, N workers``: images/s of the pipeline alone (decode + resize + batch +
  standardise), streamed through the DataLoader with 0, 1 and 2 worker processes;
- ``cache build`` / ``cache``: decoding the folder once into the memory-mapped cache
  (``data.cache=true``), then images/s read back from it (0 workers);
- ``lenet on cache``: LeNet trained on batches streamed from the cache, to compare with
  ``lenet alone``, the model's own step rate on a batch already in memory.

The pipeline figures are measured after the first batch (steady state) over
``--batches`` batches. Peak memory is the measuring process's largest resident set
(``VmHWM``) and, apart, the largest of its DataLoader workers' (forked: it includes the
pages they share with it). The OS file cache is warm: the folder
was just written (dropping it needs root).

    python scripts/bench_data.py [--sizes 1000 10000 100000] [--batches 40] [--batch 256]
                                 [--root DIR (keep the folders for later runs)] [--json F]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = 10
IMAGE_SIZE = 32  # data.size: what the pipeline resizes to
FILE_SHAPE = (40, 48)  # (height, width) of the generated files
KINDS = ("first", "stream0", "stream1", "stream2", "cache_build", "cache", "train_cache")


def generate(root: Path, n: int, seed: int = 0) -> Path:
    """``root/class_k/i.png|jpg``: ``n`` images in 10 classes (reused when complete)."""
    from PIL import Image

    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    height, width = FILE_SHAPE
    palettes = rng.integers(0, 256, (CLASSES, 64, height, width, 3), dtype=np.uint8)
    for i in range(n):
        label = i % CLASSES
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(palettes[label, (i // CLASSES) % 64])
        picture.save(folder / f"{i:06d}.{'jpg' if i % 2 else 'png'}")
    done.write_text(str(n))
    return root


def peak_mib() -> tuple[float, float]:
    """(this process's peak resident set, the largest finished worker's), in MiB.

    The process's own is ``VmHWM``, which starts afresh at ``exec``: ``ru_maxrss`` would
    carry over the resident set of the bench process that started this one. A worker is
    forked, so its figure includes the pages it shares with this process.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB; fallback off Linux
    try:
        status = Path("/proc/self/status").read_text()
        own = int(
            next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]
        )
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return own / 1024, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def load(root: Path, workers: int, cache_dir: Path | None) -> Any:
    from dlrun.data.image_folder import load_image_folder

    return load_image_folder(
        0, root=str(root), size=IMAGE_SIZE, stream=True, num_workers=workers,
        cache=cache_dir is not None, cache_dir=str(cache_dir),
    )  # fmt: skip


def pipeline(split: Any, batch: int, batches: int, step: Any = None) -> tuple[float, float]:
    """(seconds to the first batch, images/s over the next ``batches`` batches)."""
    import torch

    from dlrun.data.batches import iterate

    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    stream = iterate(split, batch, shuffle=True, generator=generator, limit=batches + 1)
    first = next(stream)
    first_at = time.perf_counter() - started
    if step is not None:
        step(first)
    started, seen = time.perf_counter(), 0
    for part in stream:
        if step is not None:
            step(part)
        seen += len(part)
    return first_at, seen / max(time.perf_counter() - started, 1e-9)


def lenet_step(spec: Any) -> Any:
    """One optimizer step of LeNet on a batch (what a LeNet-sized run does per batch)."""
    import torch

    from dlrun.models.lenet import LeNet5

    torch.manual_seed(0)
    model = LeNet5(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(batch: Any) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(batch.x), batch.y).backward()
        opt.step()

    return step


def child(kind: str, root: Path, cache_dir: Path, batch: int, batches: int) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    workers = int(kind[-1]) if kind.startswith("stream") else (2 if kind == "first" else 0)
    started = time.perf_counter()
    import dlrun.data.image_folder  # noqa: F401 - torch's import, timed on its own

    imported = time.perf_counter() - started
    started = time.perf_counter()
    bundle = load(root, workers, cache_dir if kind.startswith(("cache", "train")) else None)
    loaded = time.perf_counter() - started
    step = lenet_step(bundle.spec) if kind == "train_cache" else None
    first, rate = pipeline(bundle.train, batch, batches, step)
    out = {"import_s": imported, "load_s": loaded, "first_s": loaded + first, "rate": rate}
    own, workers = peak_mib()
    return out | {"peak_mib": own, "worker_peak_mib": workers}


def model_alone(batch: int, batches: int) -> float:
    """LeNet's images/s on one batch already in memory (the step rate to keep up with)."""
    import torch

    from dlrun.data.spec import DataKind, DataSpec, Split, Task

    spec = DataSpec("bench", Task.MULTICLASS, DataKind.IMAGE, (3, IMAGE_SIZE, IMAGE_SIZE), CLASSES)
    step = lenet_step(spec)
    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE)
    part = Split(x, torch.randint(0, CLASSES, (batch,)))
    step(part)
    started = time.perf_counter()
    for _ in range(batches):
        step(part)
    return batch * batches / (time.perf_counter() - started)


def measure(kind: str, root: Path, cache_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``child`` in a fresh interpreter and read its JSON line."""
    if kind == "cache_build":
        shutil.rmtree(cache_dir, ignore_errors=True)  # a build, even when --root is reused
    spec = {"kind": kind, "root": str(root), "cache_dir": str(cache_dir)}
    spec |= {"batch": args.batch, "batches": args.batches}
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"bench_data: {kind} on {root} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows_for(n: int, results: dict[str, dict[str, Any]], alone: float) -> list[list[str]]:
    """Table rows for one folder size."""
    labels = {
        "first": "first batch (cold, 2 workers)", "stream0": "stream, 0 workers",
        "stream1": "stream, 1 worker", "stream2": "stream, 2 workers",
        "cache_build": "cache build + read, 0 workers", "cache": "cache, 0 workers",
        "train_cache": "lenet on cache",
    }  # fmt: skip
    rows = []
    for kind in KINDS:
        r = results[kind]
        seconds = r["load_s"] if kind == "cache_build" else r["first_s"]
        rate, peak = f"{r['rate']:,.0f}", f"{r['peak_mib']:.0f}"
        workers = f"{r['worker_peak_mib']:.0f}" if r["worker_peak_mib"] else ""
        rows.append([f"{n:,}", labels[kind], f"{seconds:.2f}", rate, peak, workers])
    rows.append([f"{n:,}", "lenet alone (in memory)", "", f"{alone:,.0f}", "", ""])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        paths = Path(spec["root"]), Path(spec["cache_dir"])
        print(json.dumps(child(spec["kind"], *paths, spec["batch"], spec["batches"])))
        return
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        base = args.root or Path(tmp)
        report(base, args)


def report(base: Path, args: argparse.Namespace) -> None:
    """Every measurement for every size, printed as one table (and saved with --json)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    alone = model_alone(args.batch, args.batches)
    table = Table("images", "measurement", "seconds", "images/s", "peak MiB", "worker MiB")
    everything: dict[str, Any] = {"lenet_alone": alone}
    for n in args.sizes:
        started = time.perf_counter()
        root = generate(base / f"images_{n}", n)
        console.print(f"{n:,} images ready in {time.perf_counter() - started:.1f}s")
        cache_dir = base / f"cache_{n}"
        results = {kind: measure(kind, root, cache_dir, args) for kind in KINDS}
        everything[str(n)] = results
        for row in rows_for(n, results, alone):
            table.add_row(*row)
    console.print(table)
    imports = [r["import_s"] for n in args.sizes for r in everything[str(n)].values()]
    console.print(
        f"seconds: from the loader's call to the first batch (cache build: to the cache in "
        f"place); importing torch and dlrun before it took {min(imports):.1f}-{max(imports):.1f}s"
    )
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
