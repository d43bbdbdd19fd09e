"""The one contract of a hardening job, shared by the API, the CLI and the worker.

No torch import here: the web process validates requests with these models and stays free of torch.
Every default lives here or in the section's own module (core.contract.evaluation,
core.contract.robust,
core.contract.mlflow_settings) and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, HttpUrl, field_validator, model_validator

from core.contract.baseline import BaselineRef
from core.contract.certification import CertificationSpec
from core.contract.corruptions import CorruptionsSpec
from core.contract.dataset_ref import parse_dataset_ref
from core.contract.distillation import (
    STUDENT_CHECK_LEAST,
    STUDENT_CHECK_MOST,
    STUDENT_EPOCHS_MAX,
    STUDENT_STEPS_MAX,
    ZOO_ARCHITECTURES,
    DistillationSpec,
    ZooArchitecture,
)
from core.contract.evaluation import EvaluationSpec
from core.contract.fetched_refs import RemoteRef, is_fetched_reference, parse_fetched_reference
from core.contract.methods import CATALOGUE, DEFAULT_METHOD, with_sections
from core.contract.mlflow_settings import MlflowSpec
from core.contract.robust import HardeningMethodName, RobustTrainingSpec
from core.contract.strict_model import StrictModel
from core.errors import DatasetError, InvalidSpecError

SPEC_VERSION = 1

__all__ = [
    "STUDENT_CHECK_LEAST",
    "STUDENT_CHECK_MOST",
    "STUDENT_EPOCHS_MAX",
    "STUDENT_STEPS_MAX",
    "ZOO_ARCHITECTURES",
    "HardenSpec",
    "Normalization",
    "ZooArchitecture",
    "deprecations",
    "spec_json_schema",
]
# The distillation settings that were top-level fields before the distillation section: still
# accepted there (moved into the section, with a deprecation note) for one report version.
FLAT_DISTILLATION_FIELDS = tuple(DistillationSpec.model_fields)


class Normalization(StrictModel):
    """Per-channel normalisation the model expects: ``(x - mean) / std`` applied inside the model
    wrapper, so attacks and the value range stay in raw input space."""

    mean: list[float] = Field(min_length=1, max_length=16, description="Per-channel mean.")
    std: list[float] = Field(min_length=1, max_length=16, description="Per-channel std, all > 0.")

    @model_validator(mode="after")
    def _check(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"normalization.mean has {len(self.mean)} values and normalization.std has "
                f"{len(self.std)}: give one value per input channel in both"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError("normalization.std values must all be > 0")
        return self


MAX_INPUT_MAGNITUDE = 1e6  # bound of input_range values


class HardenSpec(StrictModel):
    """Parameters of one hardening job: defensive distillation (Papernot et al. 2016) by default,
    or the methods that train against attacks (``method``, ``robust``)."""

    dataset: str = Field(
        "builtin:mnist",
        min_length=1,
        max_length=2048,
        description=(
            "Dataset reference, required at submit (POST /harden, harden submit/run refuse a "
            "job without one and a dataset file; the default only reads back older specs): "
            "builtin:mnist, builtin:digits, 'upload' when a dataset file is "
            "sent with the job, dataset:<id> or dataset:sha256:<hex> (registered with POST "
            "/datasets), s3://bucket/key or https://host/path (fetched by the worker; optionally "
            "ending in #sha256=<hex>); harden run also reads a local path or file:///path (.npz "
            "or image-folder archive) or a folder of images (<class>/<image>, optionally under "
            "train/ and test/)."
        ),
        examples=["builtin:digits"],
    )
    dataset_sha256: str | None = Field(
        None,
        pattern="^[0-9a-f]{64}$",
        description=(
            "Pins the dataset a dataset:<id>, s3:// or https:// reference names: the job fails "
            "(before training) when the file's sha256 differs. Same as ending the reference in "
            "#sha256=<hex>."
        ),
    )
    test_fraction: float = Field(
        0.2,
        ge=0.01,
        le=0.9,
        description=(
            "Share of the images held out as the test split when the dataset has none of its "
            "own (an .npz with only x and y, image folders without train/ and test/): "
            "stratified by class, seeded with seed; the report's dataset_split records it. "
            "Allowed: 0.01..0.9."
        ),
    )
    method: HardeningMethodName | list[HardeningMethodName] = Field(
        DEFAULT_METHOD,
        description=(
            "Hardening method, or several to compare side by side (the first one's model is "
            "the job's model.onnx): 'distillation' (defensive distillation, the paper; the "
            "default), 'adversarial' (PGD adversarial training), 'trades' (TRADES), "
            "'robust_distillation' (ARD: an adversarially trained teacher's soft labels at T "
            "on adversarial inputs). The last three are set by 'robust'."
        ),
        examples=["distillation", ["distillation", "adversarial"]],
    )
    robust: RobustTrainingSpec = Field(default_factory=RobustTrainingSpec)
    distillation: DistillationSpec = Field(default_factory=DistillationSpec)
    optimizer: Literal["adam", "sgd"] = Field(
        "adam",
        description=(
            "Adam by default: at high T the gradient is divided by T and SGD (lr 0.01) does not "
            "train in 50 epochs (measured: 11% accuracy on builtin:mnist at T=100)."
        ),
    )
    learning_rate: float = Field(1e-3, gt=0, le=10.0, description="Learning rate (0 < lr <= 10).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by Adam).")
    batch_size: int = Field(128, ge=1, le=4096, description="Training batch size (1..4096).")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of every random choice.")
    architecture: ZooArchitecture | None = Field(
        None,
        description=(
            "Zoo architecture of the UPLOADED model (e.g. papernot_mnist); needed only for a "
            "safetensors upload, which holds weights but no code."
        ),
    )
    input_range: tuple[float, float] = Field(
        (0.0, 1.0),
        strict=False,  # a JSON array; its two numbers stay strict (core/contract/strict_model.py)
        description="Valid input value range [low, high]; attacks clip to it.",
    )
    normalization: Normalization | None = Field(
        None, description="Per-channel mean/std the model expects, applied in front of it."
    )
    onnx_opset: int = Field(18, ge=14, le=21, description="ONNX opset of the export (14..21).")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    certification: CertificationSpec = Field(
        default_factory=CertificationSpec,
        description="Randomized smoothing's certificates for the upload and the hardened model "
        "(core/contract/certification.py).",
    )
    corruptions: CorruptionsSpec = Field(
        default_factory=CorruptionsSpec,
        description="Both models' accuracy under common corruptions at five severities "
        "(core/contract/corruptions.py).",
    )
    webhook_url: HttpUrl | None = Field(
        None, description="Service only: signed POST (HMAC-SHA256) here when the job ends."
    )
    baseline: BaselineRef | None = Field(
        None,
        description="A model to compare the hardened one against on the same attacks, budgets "
        "and samples: {'job': <id>} (a previous job's model.onnx) or {'mlflow_model': <name>, "
        "'alias': 'champion'} (core/contract/baseline.py). The report gains "
        "comparison_to_baseline; --fail-on regression=POINTS gates on it.",
    )
    mlflow: MlflowSpec | None = Field(
        None,
        description="Log the run and register model.onnx in MLflow when the job succeeds "
        "(core/contract/mlflow_settings.py; harden run too). Unset: the service's HARDEN_MLFLOW_* "
        "defaults, "
        "if any.",
    )

    @model_validator(mode="before")
    @classmethod
    def _flat_distillation_fields(cls, data: Any) -> Any:
        # The distillation settings given at the top level (the form before the section) are
        # moved into it; deprecations() says so to the caller.
        if not isinstance(data, dict):
            return data
        flat = [name for name in FLAT_DISTILLATION_FIELDS if name in data]
        section = data.get("distillation") or {}
        if not flat or not isinstance(section, dict):
            return data
        both = [name for name in flat if name in section]
        if both:
            raise ValueError(
                f"{', '.join(both)} given both at the top level and in distillation: keep the "
                "distillation section's"
            )
        moved = {k: v for k, v in data.items() if k not in flat}
        moved["distillation"] = {**section, **{name: data[name] for name in flat}}
        return moved

    @field_validator("method")
    @classmethod
    def _methods(
        cls, value: HardeningMethodName | list[HardeningMethodName]
    ) -> HardeningMethodName | list[HardeningMethodName]:
        if isinstance(value, list):
            if not value:
                raise ValueError("method lists no method: name at least one, e.g. 'adversarial'")
            if len(set(value)) != len(value):
                raise ValueError("method names a method twice: list each method once")
        return value

    @property
    def methods(self) -> tuple[HardeningMethodName, ...]:
        """The methods to run, in order; the first one's model is the job's model.onnx."""
        return tuple(self.method) if isinstance(self.method, list) else (self.method,)

    def robust_epsilon(self) -> float:
        """The robust methods' training budget: ``robust.epsilon``, else the largest audited one."""
        if self.robust.epsilon is not None:
            return self.robust.epsilon
        audited = self.evaluation.budgets(self.robust.norm, self.input_range)
        if not audited:
            raise InvalidSpecError(
                f"robust.norm is {self.robust.norm} but the evaluation audits no "
                f"{self.robust.norm} budget (threat model {self.evaluation.threat_model or 'unset'}"
                ") to train for",
                hint="set robust.epsilon, or give evaluation.epsilons_l2",
            )
        return max(audited)

    @property
    def trains_against_attacks(self) -> bool:
        """Whether a method of this job trains against attacks (and so needs a budget)."""
        return any(CATALOGUE[name].trains_against_attacks for name in self.methods)

    @property
    def certifies(self) -> bool:
        """Whether the audit certifies (certification.enabled; 'auto': when a method of the job
        trains its model under noise)."""
        if self.certification.enabled == "auto":
            return any(CATALOGUE[name].trains_under_noise for name in self.methods)
        return self.certification.enabled

    @model_validator(mode="after")
    def _robust_budget(self) -> HardenSpec:
        if self.trains_against_attacks and self.robust.epsilon is None:
            try:
                self.robust_epsilon()
            except InvalidSpecError as exc:
                raise ValueError(f"{exc.message}: {exc.hint}") from exc
        return self

    def for_input_shape(self, input_shape: tuple[int, int, int]) -> HardenSpec:
        """This spec with the evaluation's threat model chosen from ``input_shape`` where unset
        (:mod:`core.contract.threat_models`), once the data is known."""
        evaluation = self.evaluation.for_input_shape(input_shape)
        if evaluation is self.evaluation:
            return self
        return self.model_copy(update={"evaluation": evaluation})

    @field_validator("dataset")
    @classmethod
    def _dataset_ref(cls, ref: str) -> str:
        try:
            parse_dataset_ref(ref)  # core/contract/dataset_ref.py: the one parser
        except DatasetError as exc:
            raise ValueError(f"{exc.message}: {exc.hint}") from exc
        return ref

    @model_validator(mode="after")
    def _dataset_pin(self) -> HardenSpec:
        if self.dataset_sha256 is None:
            return self
        if not is_fetched_reference(self.dataset) or self.dataset.startswith("dataset:sha256:"):
            raise ValueError(
                "dataset_sha256 pins a dataset the service fetches (dataset:<id>, s3://, "
                f"https://), not {self.dataset!r}: remove dataset_sha256"
            )
        pinned = parse_fetched_reference(self.dataset)
        if isinstance(pinned, RemoteRef) and pinned.sha256 not in (None, self.dataset_sha256):
            raise ValueError(
                "dataset_sha256 and the #sha256= pin of the dataset reference differ: keep one"
            )
        return self

    @field_validator("input_range")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not low < high:
            raise ValueError(f"input_range must be [low, high] with low < high, got {list(value)}")
        # Pixel ranges are [0, 1], [-1, 1] or [0, 255]; a range near float's limits overflows in
        # the attacks' arithmetic (high - low is inf) and the job could only fail later.
        if max(abs(low), abs(high)) > MAX_INPUT_MAGNITUDE:
            raise ValueError(
                f"input_range bounds must lie within ±{MAX_INPUT_MAGNITUDE:g}, got {list(value)}"
            )
        return value


def _with_method_settings(base: type[HardenSpec]) -> type[HardenSpec]:
    """``base`` with one field per method that declares settings of its own in the catalogue
    (core.contract.methods: ``settings``), defaults filled in: a new method's settings are part
    of the job contract, its schema and the OpenAPI without an edit here."""
    sections = (info.settings for info in CATALOGUE.values() if info.settings is not None)
    return with_sections(base, sections, optional=False)


if not TYPE_CHECKING:  # the type checker sees the class above; methods read theirs by name
    HardenSpec = _with_method_settings(HardenSpec)


def deprecations(config: object) -> list[str]:
    """Notes on the deprecated forms a job config (the JSON object as sent) uses; none for the
    current form. The spec accepts them (moved where they belong)."""
    if not isinstance(config, dict):
        return []
    return [
        f"{name} at the top level is deprecated: give it as distillation.{name}"
        for name in FLAT_DISTILLATION_FIELDS
        if name in config
    ]


def spec_json_schema() -> dict[str, object]:
    """The JSON Schema of a job config, for docs and clients."""
    return HardenSpec.model_json_schema()
