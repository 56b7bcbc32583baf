"""``dlrun-generate``: sample text from a trained language-model run.

    dlrun-generate run=outputs/runs/<run> prompt="def " [temperature=0.8] [top_k=40]
                   [max_new_tokens=200] [seed=0] [ckpt=best] [device=auto]

``temperature=0`` always takes the most likely next token (greedy); higher values
flatten the distribution and make the text more surprising. ``top_k`` samples only
among the k most likely tokens (0 = all). The run's saved config is untrusted input:
only dlrun's own targets are built from it. Exit codes: 0 done, 2 bad arguments or a
refused run dir, 130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dlrun.cli_args import errors_reported, parse_key_values
from dlrun.errors import UserError

USAGE = (__doc__ or "").strip()
DEFAULTS = {
    "run": "",
    "prompt": "",
    "temperature": 0.8,
    "top_k": 40,
    "max_new_tokens": 200,
    "seed": 0,
    "ckpt": "best",
    "device": "auto",
}


def generate_text(args: dict) -> str:
    """The prompt followed by ``max_new_tokens`` generated characters."""
    import torch

    from dlrun.restore import load_run, run_context
    from dlrun.tasks import info

    if args["temperature"] < 0:
        raise UserError("temperature must be >= 0 (0 = always the most likely token)")
    if args["max_new_tokens"] < 1:
        raise UserError("max_new_tokens must be >= 1")
    _, exp = load_run(Path(args["run"]), args["ckpt"], args["device"])
    spec = exp.bundle.spec
    if not info(spec.task).per_token or not hasattr(exp.model, "generate"):
        raise UserError(
            f"{args['run']} is a {spec.task} run of "
            f"model={run_context(Path(args['run'])).model_name}; "
            "generation needs a language-model run (e.g. dlrun experiment=gpt_text)"
        )
    index = {token: i for i, token in enumerate(spec.vocab)}
    prompt = args["prompt"] or spec.vocab[0]
    unknown = sorted({ch for ch in prompt if ch not in index})
    if unknown:
        raise UserError(f"the prompt has characters the model never saw: {''.join(unknown)!r}")
    torch.manual_seed(args["seed"])
    ids = torch.tensor([[index[ch] for ch in prompt]], device=exp.device)
    top_k = args["top_k"] or None
    out = exp.model.generate(ids, args["max_new_tokens"], args["temperature"], top_k)
    return "".join(spec.vocab[i] for i in out[0].tolist())


def main() -> None:
    args = parse_key_values(sys.argv[1:], DEFAULTS, USAGE, required=("run",), prog="dlrun-generate")
    with errors_reported("dlrun-generate"):
        print(generate_text(args))


if __name__ == "__main__":
    from dlrun import process_exit

    process_exit.run(main)
