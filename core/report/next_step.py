"""What to do after a verdict: one next step, chosen by the label, with the command that does it.

A verdict that says ``masked`` and stops there leaves a new user with nothing to type. Each label
(``core.names.VerdictLabel``), an upload at chance and a run without the audit get a step: in
words, as the spec fields the next run changes, and as a ``harden run`` command that runs it on
the same upload and dataset. Which method to suggest is read from the catalogue
(``core.contract.methods``: the methods that train against attacks), never from a list of names
here. Torch-free and free of the audit code: the job resource's verdict carries it too.
"""

from __future__ import annotations

import json
import math
import shlex
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.contract.methods import CATALOGUE
from core.contract.spec import HardenSpec
from core.names import VerdictLabel
from core.report.formatting import epsilon_text

# The file the command writes the next run's spec changes to, and the folder it writes to.
CONFIG_FILE = "next-step.json"
UPLOADED_DATASET = "DATASET_FILE"  # stands for the file a job was given (its name is not kept)
# Spec fields a next run must keep to read the same data the same way.
_KEPT = ("input_range", "normalization", "architecture", "test_fraction")

NextAfter = VerdictLabel | Literal["untrained upload", "not audited"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NextStep(_Strict):
    """What to do after this report, and the command that does it."""

    after: NextAfter = Field(
        description="What it follows: the verdict's label, 'untrained upload' (the upload is at "
        "chance: nothing else matters first) or 'not audited' (no verdict)."
    )
    action: str = Field(description="What to do next, in a sentence or two.")
    spec: dict[str, Any] = Field(
        default_factory=dict,
        description="The spec fields the next run sets, as the JSON of a --config file (the "
        "method, the evaluation's preset, and what reads the data the same way); empty when "
        "the step is no run.",
    )
    command: str | None = Field(
        None,
        description="A shell command that runs the step with `harden run` on the same upload and "
        f"dataset (writing {CONFIG_FILE} first); {UPLOADED_DATASET} stands for the dataset file "
        "a job was given. Null when the step is no run.",
    )


def _robust_methods() -> list[str]:
    """The catalogue's methods that train against attacks, in its order (adversarial first)."""
    return [name for name, info in CATALOGUE.items() if info.trains_against_attacks]


def _other_robust_method(method: str) -> str:
    """A method that trains against attacks: the first one for a method that does not, else the
    next one after it in the catalogue."""
    robust = _robust_methods()
    if method not in robust:
        return robust[0]
    return robust[(robust.index(method) + 1) % len(robust)]


def _kept_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """The job's settings that decide how its data is read, where they differ from the
    defaults."""
    kept = {}
    for name in _KEPT:
        default = HardenSpec.model_fields[name].default
        value = spec.get(name)
        if value is not None and json.dumps(value) != json.dumps(
            list(default) if isinstance(default, tuple) else default
        ):
            kept[name] = value
    return kept


def _command(
    model_file: str, dataset: str, method: str, config: dict[str, Any], extra: str = ""
) -> str:
    source = (
        f"--dataset-file {UPLOADED_DATASET}"
        if dataset == "upload"
        else f"--dataset {shlex.quote(dataset)}"
    )
    run = (
        f"harden run {shlex.quote(model_file)} {source} --method {method} "
        f"--config {CONFIG_FILE}{extra} --out {shlex.quote(f'hardened-{method}')}"
    )
    return f"echo {shlex.quote(json.dumps(config))} > {CONFIG_FILE} && {run}"


def next_step(
    label: VerdictLabel | None,
    *,
    untrained_upload: bool,
    method: str,
    spec: dict[str, Any],
    model_file: str,
    dataset: str,
    gate: tuple[str, float, float] | None = None,
) -> NextStep:
    """The step after a report: ``label`` the verdict's (None: not audited); ``spec`` the job's
    resolved spec as report.json holds it; ``gate`` (norm, epsilon, robust accuracy to keep) for
    a real gain, from the budget that decided it."""
    evaluation = dict(spec.get("evaluation") or {})
    kept = _kept_fields(spec)
    if untrained_upload:
        return NextStep(
            after="untrained upload",
            action="Check the upload before hardening it: its accuracy on this dataset's test "
            "split is at chance, so it is untrained or not this dataset's model. Check that its "
            "classes are the dataset's, in the same order, and that input_range and "
            "normalization are what it was trained with (README: Datasets).",
        )
    if label is None:
        config = {**kept, "evaluation": {"enabled": True, "preset": "autoattack"}}
        return NextStep(
            after="not audited",
            action="Audit it: nothing says this model resists adversarial examples until the "
            "evaluation runs (`evaluation.enabled: true`, here with `preset: autoattack`).",
            spec={"method": method, **config},
            command=_command(model_file, dataset, method, config),
        )
    preset = {"evaluation": {"preset": "autoattack"}}
    if label == "real gain":
        config = {**kept, **(preset if evaluation.get("preset") != "autoattack" else {})}
        extra, keep = "", ""
        if gate is not None:
            norm, epsilon, lowest = gate
            floor = math.floor(100 * lowest) / 100  # rounded down: the run itself passes it
            width = spec.get("input_range") or (0.0, 1.0)
            budget = epsilon_text(epsilon) if list(width) == [0.0, 1.0] else f"{epsilon:g}"
            extra = f" --fail-on min-robust={floor:.2f}@{norm}:{budget}"
            keep = (
                f" and keep it from regressing: a rerun fails (exit 3) below {floor:.0%} robust "
                f"accuracy at {norm} ε={budget}, the lower end of this run's 95% interval"
            )
        return NextStep(
            after=label,
            action=f"Deploy model.onnx{keep}. Attacks cannot prove robustness: stronger, "
            "adaptive attacks may still lower it.",
            spec={"method": method, **config},
            command=_command(model_file, dataset, method, config, extra),
        )
    other = _other_robust_method(method)
    config = {**kept, **preset}
    if label == "masked":
        action = (
            "Train against attacks instead of hiding the gradients: "
            f"`method: {other}`, audited with `preset: autoattack` (AutoAttack's attacks, which "
            "gradient masking does not fool)."
        )
    elif method in _robust_methods():
        action = (
            f"Train against attacks for longer (`robust.epochs`) or with another method: "
            f"`method: {other}`, audited with `preset: autoattack`."
        )
    else:
        action = (
            f"{method} added no robustness that attacks could not take away: train against "
            f"attacks, `method: {other}`, audited with `preset: autoattack`."
        )
    return NextStep(
        after=label,
        action=action,
        spec={"method": other, **config},
        command=_command(model_file, dataset, other, config),
    )
