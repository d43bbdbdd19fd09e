"""The spec options of ``harden run`` and ``harden submit``, generated from
:class:`core.contract.spec.HardenSpec`'s top-level scalar fields, so the CLI cannot drift from the
job contract and holds no second copy of its defaults: an option left out is simply not passed,
and the spec's default (or the --config file's value) applies.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from cli.outcome import ci_parameters
from core.contract.distillation import DistillationSpec
from core.contract.spec import HardenSpec

# Fields with a dedicated option (dataset) or not scalars / not meaningful locally.
# Sections (evaluation, robust) and structured values come from --config's JSON.
_NOT_OPTIONS = {
    "dataset",
    "input_range",
    "normalization",
    "evaluation",
    "robust",
    "distillation",  # its scalars are options of their own (SECTION_OPTIONS)
    "webhook_url",
    "mlflow",
}
FIXED = (
    "model", "dataset", "dataset_file", "out", "config", "no_evaluation", "device",
    "fail_on", "json_output", "junit", "sarif",
)  # fmt: skip


def _is_section(annotation: Any) -> bool:
    """Whether a field's type is (or may be) a structured section: a pydantic model, or a union,
    list or dict holding one. Such fields come from --config's JSON, never a text option (a
    method's own settings section, e.g. smoothing, or certification, corruptions, baseline)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_is_section(arg) for arg in typing.get_args(annotation))


def _option_type(info: FieldInfo) -> tuple[Any, str]:
    """The Python type typer parses a field with, and the choices to mention in its help."""
    annotation = info.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = args[0] if len(args) == 1 else str
    if typing.get_origin(annotation) is typing.Literal:
        return str, " Choices: " + ", ".join(map(str, typing.get_args(annotation))) + "."
    return (annotation if annotation in (int, float, str, bool) else str), ""


# Sections whose scalar fields are options too, under their own names (--temperature sets
# distillation.temperature).
SECTION_OPTIONS = {"distillation": DistillationSpec}


def spec_options() -> dict[str, tuple[Any, str]]:
    """HardenSpec's scalar fields, and those of SECTION_OPTIONS, as CLI options: field name ->
    (type, help)."""
    options = {}
    fields = [
        *(
            (name, info)
            for name, info in HardenSpec.model_fields.items()
            if name not in _NOT_OPTIONS and not _is_section(info.annotation)
        ),
        *(
            (name, info)
            for section in SECTION_OPTIONS.values()
            for name, info in section.model_fields.items()
        ),
    ]
    for name, info in fields:
        kind, choices = _option_type(info)
        if name == "method":
            choices = " Several: comma-separated, e.g. adversarial,distillation."
        options[name] = (kind, (info.description or "") + choices)
    return options


def merge_option(values: dict[str, Any], name: str, value: Any) -> None:
    """Set spec field ``name`` to ``value`` in ``values``, inside its section when it has one."""
    for section_name, section in SECTION_OPTIONS.items():
        if name in section.model_fields:
            merged = dict(values.get(section_name) or {})
            merged[name] = value
            values.pop(name, None)  # a config file's top-level (deprecated) form of it
            values[section_name] = merged
            return
    values[name] = value


def merge_options(values: dict[str, Any], options: dict[str, Any]) -> None:
    """Merge the spec options given on the command line (None: not given) over ``values`` (a
    --config file's), as ``harden run`` and ``harden submit`` both do."""
    for name, value in options.items():
        if value is not None:
            merge_option(values, name, value)
    if isinstance(values.get("method"), str) and "," in values["method"]:
        # --method adversarial,distillation: several methods, side by side.
        values["method"] = [name.strip() for name in values["method"].split(",")]


def build_spec(
    dataset: str | None,
    config: Path | None,
    overrides: dict[str, Any],
    no_evaluation: bool,
) -> HardenSpec:
    """The spec from a JSON config file with the CLI flags merged over it; validation errors
    propagate as pydantic ``ValidationError``."""
    values: dict[str, Any] = {}
    if config is not None:
        try:
            values = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise typer.BadParameter(f"cannot read {config} as JSON: {error}") from error
        if not isinstance(values, dict):
            raise typer.BadParameter(f"{config} must hold a JSON object of spec fields")
    merge_options(values, overrides)
    if dataset is not None:
        values["dataset"] = dataset
    if no_evaluation:
        values["evaluation"] = {**dict(values.get("evaluation") or {}), "enabled": False}
    return HardenSpec.model_validate(values)


def spec_parameters() -> list[inspect.Parameter]:
    """spec_options as typer's keyword parameters, each None (not given) by default."""
    return [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[kind | None, typer.Option(help=help_text)],  # type: ignore[valid-type]
        )
        for name, (kind, help_text) in spec_options().items()
    ]


def with_spec_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command``, whose ``**spec_values`` collects the spec options, as typer sees it: its own
    parameters followed by spec_parameters (``harden submit``)."""
    own = [
        parameter
        for parameter in inspect.signature(command, eval_str=True).parameters.values()
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    clash = {parameter.name for parameter in own} & set(spec_options())
    if clash:  # a spec field named like one of the command's own options
        raise TypeError(f"{command.__name__}: options named like spec fields: {sorted(clash)}")

    def wrapper(**kwargs: Any) -> None:
        command(**kwargs)

    signature = inspect.Signature([*own, *spec_parameters()])
    wrapper.__signature__ = signature  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    wrapper.__name__ = command.__name__
    wrapper.__doc__ = command.__doc__
    return wrapper


def command_signature() -> tuple[inspect.Signature, dict[str, Any]]:
    """``harden run``'s parameters for typer: the fixed ones (FIXED), the spec's scalar fields
    (spec_options) and the CI ones (--fail-on, --json, --junit)."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            "model",
            kw,
            annotation=Annotated[
                Path, typer.Argument(exists=True, dir_okay=False, help="The trained model file.")
            ],
        ),
        inspect.Parameter(
            "dataset",
            kw,
            default=None,
            annotation=Annotated[
                str | None,
                typer.Option(help=HardenSpec.model_fields["dataset"].description),
            ],
        ),
        inspect.Parameter(
            "dataset_file",
            kw,
            default=None,
            annotation=Annotated[
                Path | None,
                # Checked by the loader, which names the forms it reads in one error line.
                typer.Option(help="A dataset file (.npz or archive) or a folder of class folders."),
            ],
        ),
        inspect.Parameter(
            "out", kw, annotation=Annotated[Path, typer.Option(help="Directory for the artifacts.")]
        ),
        inspect.Parameter(
            "config",
            kw,
            default=None,
            annotation=Annotated[
                Path | None,
                typer.Option(exists=True, help="JSON spec file; the flags here override it."),
            ],
        ),
        inspect.Parameter(
            "no_evaluation",
            kw,
            default=False,
            annotation=Annotated[
                bool, typer.Option("--no-evaluation", help="Skip the robustness evaluation.")
            ],
        ),
        inspect.Parameter(
            "device",
            kw,
            default=None,
            annotation=Annotated[
                str | None, typer.Option(help="cpu, cuda (default: CUDA if any).")
            ],
        ),
    ]
    params.extend(spec_parameters())
    params.extend(ci_parameters())
    return inspect.Signature(params), {p.name: p.annotation for p in params}
