"""A job's robustness claim checked by an attack we did not write: torchattacks' AutoAttack
components (reference settings, cascaded) on a model the service produced, on the same test
samples its audit drew (``draw_samples`` with the evaluation's seed 0).

    .venv/bin/python bench/independent_check.py MODEL [--samples 200] [--epsilons 0.3]

MODEL is any file the service takes (e.g. the model.onnx ``bench/hardening_methods.py
--keep-model`` kept). builtin:mnist inputs in [0, 1]. Prints clean accuracy and torchattacks'
robust accuracy per epsilon, to set beside the job's autoattack-preset figure. Needs the bench
extra (torchattacks).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.autoattack_check import machine, reference  # noqa: E402
from bench.common import Timer, accuracy, mnist  # noqa: E402
from core.audit.evaluate import draw_samples  # noqa: E402
from core.intake.upload import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.3])
    args = parser.parse_args()
    import torchattacks

    data = mnist()
    model = load_model(args.model, num_classes=10, input_shape=(1, 28, 28)).module.eval()
    x, y = draw_samples(data, args.samples, seed=0)
    print(f"machine: {machine()}; torchattacks {torchattacks.__version__}; {args.model.name}")
    print(f"clean: {100 * accuracy(model, x, y):.1f}% on {len(x)} builtin:mnist test samples")
    for epsilon in args.epsilons:
        with Timer() as took:
            robust = reference(model, x, y, epsilon, shipped=False)
        print(
            f"torchattacks AutoAttack components (100 iterations, 5,000 Square queries) at "
            f"L-inf {epsilon:g}: robust {100 * robust.float().mean():.1f}% in {took.seconds:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
