"""The one contract of a hardening job, shared by the API, the CLI and the worker.

No torch import here: the web process validates requests with these models and stays free of torch.
Every default lives here and nowhere else.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from core.datasets.fetched_refs import (
    FORMS,
    RemoteRef,
    is_fetched_reference,
    parse_fetched_reference,
)
from core.datasets.library_names import dataset_name_refusal
from core.errors import InvalidSpecError
from core.mlflow_spec import MlflowSpec
from core.names import BUILTIN_DATASETS
from core.threat_models import (
    PRESET_BUDGETS,
    THREAT_MODEL_RULE,
    ThreatModelName,
    threat_model_for_shape,
)

SPEC_VERSION = 1

# The names of core.audit.registry.REGISTRY in its order, here so that the API (no torch) refuses
# an unknown attack at submit (tests/core/audit/test_registry.py checks both lists agree).
AttackName = Literal[
    "fgsm_ce",
    "fgsm_margin",
    "pgd_linf_ce",
    "pgd_linf_margin",
    "pgd_l2_ce",
    "pgd_l2_margin",
    "jsma_softmax",
    "jsma_logits",
    "cw_l2",
    "apgd_ce",
    "apgd_dlr",
    "apgd_t",
    "fab_t",
    "square",
    "transfer",
]

# The attacks AutoAttack's standard version runs (Croce & Hein 2020), in the order of AttackName.
AUTOATTACK_ATTACKS: tuple[AttackName, ...] = ("apgd_ce", "apgd_t", "fab_t", "square")
# The attacks that run at every L2 budget (cw_l2 searches the smallest perturbation instead).
L2_BUDGET_ATTACKS: tuple[AttackName, ...] = ("pgd_l2_ce", "pgd_l2_margin")
# By default every attack runs, in the order of AttackName, except the two only the autoattack
# preset needs (APGD-T and FAB-T attack 9 target classes each: 9 times the cost of APGD-DLR).
DEFAULT_ATTACKS: tuple[AttackName, ...] = tuple(
    name for name in get_args(AttackName) if name not in ("apgd_t", "fab_t")
)

EvaluationPreset = Literal["default", "autoattack"]
# What the autoattack preset fixes, as AutoAttack's standard version runs it: 100 iterations of
# APGD-CE, APGD-T and FAB-T, 9 target classes, Square with 5,000 queries. A job may ask for more,
# never for less: the preset's name is a promise about the evaluation's strength.
AUTOATTACK_MINIMUMS: dict[str, int] = {
    "pgd_steps": 100,
    "target_classes": 9,
    "square_queries": 5000,
}

# The names of core.intake.zoo.ZOO, here so that the API (no torch) refuses an unknown
# architecture at submit instead of a worker failing the job later (tests check both lists agree).
ZooArchitecture = Literal["mlp", "papernot_cifar", "papernot_mnist", "resnet18"]
ZOO_ARCHITECTURES: tuple[ZooArchitecture, ...] = get_args(ZooArchitecture)


# student_epochs=None ("auto"): the student trains until its soft-label loss stops improving
# (core.hardening.training.Convergence), bounded by STUDENT_STEPS_MAX optimizer steps and
# STUDENT_EPOCHS_MAX epochs, whichever comes first; core.plan.student_epoch_budget applies the
# bound. A step count fitted to one architecture left others 10-50 points below their upload
# (bench/results/student_accuracy.md).
STUDENT_STEPS_MAX = 20_000
STUDENT_EPOCHS_MAX = 500


class _Strict(BaseModel):
    # Unknown fields are refused: a typo in a config must not silently fall back to a default.
    # NaN and infinities (Python's json accepts them) are refused too: they pass no range check
    # honestly (NaN fails every comparison, Infinity is "> 0") and only break the job later.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Normalization(_Strict):
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


# Evaluation samples by device type for samples / samples_slow 'auto': (fast, slow). The CPU's
# are the fixed defaults the audit always had (the default job, about a minute of attacks on 2
# CPU cores: bench/results/eval_default.md); a GPU attacks ten times as many, so sampling noise
# (about 5 points at 100 samples) no longer decides a verdict. bench/gpu.py times the default
# job's evaluation at these counts on a GPU (bench/results/gpu.md).
AUTO_SAMPLES: dict[str, tuple[int, int]] = {"cpu": (100, 50), "cuda": (1000, 500)}
SampleCount = Annotated[int, Field(ge=1, le=10_000)]

MAX_INPUT_MAGNITUDE = 1e6  # bound of input_range values


class EvaluationSpec(_Strict):
    """The threat model and the attack budgets of the robustness audit."""

    enabled: bool = Field(True, description="Run the robustness evaluation at all.")
    preset: EvaluationPreset = Field(
        "default",
        description=(
            "'default': the fields below as given. 'autoattack': AutoAttack's standard version "
            "(Croce & Hein 2020): APGD-CE, APGD-T, FAB-T and Square on the same samples, "
            "robust only if every attack failed on a sample; attacks defaults to those four "
            "(more may be added), pgd_steps to 100, target_classes to 9, square_queries to "
            "5,000 (none may be set lower), samples_slow to samples (it may not differ)."
        ),
    )
    attacks: list[AttackName] = Field(
        default_factory=lambda: list(DEFAULT_ATTACKS),
        description="Attacks to run, for the uploaded model and the student side by side.",
    )
    threat_model: ThreatModelName | None = Field(
        None,
        description=(
            "Preset of the default budgets: 'mnist' (L-inf 0.1/0.2/0.3, L2 1/2/3), 'cifar' "
            "(L-inf 2/255, 4/255, 8/255, L2 0.25/0.5), 'imagenet' (L-inf 1/255, 2/255, 4/255, no "
            "L2), times the width of input_range. Unset: chosen from the input shape ("
            + THREAT_MODEL_RULE
            + "); the report states which. Budgets given below override the preset's."
        ),
    )
    epsilons_linf: list[float] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="L-infinity budgets, in input units. Unset: the threat model's.",
    )
    epsilons_l2: list[float] | None = Field(
        None,
        max_length=16,
        description=(
            "L2 budgets, in input units. Unset: the threat model's. May be empty when no "
            "budgeted L2 attack (pgd_l2_ce, pgd_l2_margin) runs."
        ),
    )
    samples: SampleCount | Literal["auto"] = Field(
        "auto",
        description=(
            "Test samples attacked by the fast attacks (1..10,000). 'auto': sized by the "
            "device the evaluation runs on, 100 on a CPU, 1,000 on a CUDA GPU (AUTO_SAMPLES)."
        ),
    )
    samples_slow: SampleCount | Literal["auto"] = Field(
        "auto",
        description=(
            "Test samples attacked by the slow ones (JSMA, CW-L2, Square), the first of the "
            "samples (1..10,000). 'auto': 50 on a CPU, 500 on a CUDA GPU; the autoattack "
            "preset attacks all samples with every attack."
        ),
    )
    pgd_steps: int = Field(
        20,
        ge=1,
        le=1000,
        description="Iterations of PGD and APGD, and of APGD-T and FAB-T per target class.",
    )
    target_classes: int = Field(
        9,
        ge=1,
        le=1000,
        description=(
            "APGD-T and FAB-T: the most likely wrong classes attacked in turn (AutoAttack: 9; "
            "fewer when the dataset has fewer other classes)."
        ),
    )
    cw_binary_steps: int = Field(5, ge=1, le=20, description="CW-L2 binary-search steps.")
    cw_iterations: int = Field(100, ge=1, le=10_000, description="CW-L2 Adam steps per search.")
    jsma_max_fraction: float = Field(
        0.145,
        gt=0,
        le=1,
        description="JSMA budget: at most this fraction of input features changed (paper: 14.5%).",
    )
    square_queries: int = Field(500, ge=1, le=100_000, description="Square attack query budget.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the attack sampling.")

    @field_validator("epsilons_linf", "epsilons_l2")
    @classmethod
    def _positive(cls, values: list[float] | None) -> list[float] | None:
        if values is None:
            return None
        if any(not (0 < v <= 1000) for v in values):
            raise ValueError("every epsilon must be > 0 and <= 1000 (in input units)")
        return sorted(set(values))

    @model_validator(mode="after")
    def _l2_budgets_for_l2_attacks(self) -> EvaluationSpec:
        budgeted = [name for name in self.attacks if name in L2_BUDGET_ATTACKS]
        if self.epsilons_l2 == [] and budgeted:
            raise ValueError(
                f"epsilons_l2 is empty but attacks include {', '.join(budgeted)}, which attack "
                "at L2 budgets: give L2 budgets, leave epsilons_l2 unset (the threat model's), "
                "or leave those attacks out of attacks"
            )
        return self

    def budgets(self, norm: Literal["linf", "l2"], input_range: tuple[float, float]) -> list[float]:
        """The audited budgets of ``norm``: the spec's, else the threat model's preset (mnist's
        until :meth:`for_input_shape` has chosen one) times the width of ``input_range``."""
        given = self.epsilons_linf if norm == "linf" else self.epsilons_l2
        if given is not None:
            return list(given)
        linf, l2 = PRESET_BUDGETS[self.threat_model or "mnist"]
        width = float(input_range[1]) - float(input_range[0])
        return [epsilon * width for epsilon in (linf if norm == "linf" else l2)]

    def sample_counts(self, device_type: str) -> tuple[int, int]:
        """(samples, samples_slow) on a device of ``device_type`` ('cpu', 'cuda'): 'auto' sized
        by AUTO_SAMPLES (the CPU's for any other type), the autoattack preset's slow count equal
        to its fast one."""
        fast_auto, slow_auto = AUTO_SAMPLES.get(device_type, AUTO_SAMPLES["cpu"])
        fast = fast_auto if self.samples == "auto" else self.samples
        slow = slow_auto if self.samples_slow == "auto" else self.samples_slow
        return fast, fast if self.preset == "autoattack" else slow

    def for_device(self, device_type: str) -> EvaluationSpec:
        """This spec with 'auto' sample counts replaced by the numbers for ``device_type``."""
        fast, slow = self.sample_counts(device_type)
        return self.model_copy(update={"samples": fast, "samples_slow": slow})

    def for_input_shape(self, input_shape: tuple[int, int, int]) -> EvaluationSpec:
        """This spec with its threat model chosen from ``input_shape`` where unset."""
        if self.threat_model is not None:
            return self
        return self.model_copy(update={"threat_model": threat_model_for_shape(input_shape)})

    def resolved(
        self, input_shape: tuple[int, int, int], input_range: tuple[float, float]
    ) -> EvaluationSpec:
        """This spec with its threat model and both budget lists filled in for the data."""
        chosen = self.for_input_shape(input_shape)
        return chosen.model_copy(
            update={
                "epsilons_linf": chosen.budgets("linf", input_range),
                "epsilons_l2": chosen.budgets("l2", input_range),
            }
        )

    @field_validator("attacks")
    @classmethod
    def _each_once(cls, names: list[AttackName]) -> list[AttackName]:
        # An attack named twice (or 50,000 times) would only repeat the same work: each runs
        # once, in the order of first mention.
        return list(dict.fromkeys(names))

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: object) -> object:
        """Fill in what the autoattack preset fixes; refuse what would weaken it."""
        if not isinstance(data, dict) or data.get("preset") != "autoattack":
            return data
        given = dict(data)
        attacks = given.setdefault("attacks", list(AUTOATTACK_ATTACKS))
        if isinstance(attacks, list | tuple):
            missing = [name for name in AUTOATTACK_ATTACKS if name not in attacks]
            if missing:
                raise ValueError(
                    f"the autoattack preset runs {', '.join(AUTOATTACK_ATTACKS)}; attacks lacks "
                    f"{', '.join(missing)}: add them, or leave attacks unset"
                )
        for name, minimum in AUTOATTACK_MINIMUMS.items():
            value = given.setdefault(name, minimum)
            if isinstance(value, int | float) and value < minimum:
                raise ValueError(
                    f"the autoattack preset needs {name} >= {minimum} (AutoAttack's standard "
                    f"version), got {value}: raise it, or leave it unset"
                )
        samples = given.setdefault("samples", EvaluationSpec.model_fields["samples"].default)
        slow = given.setdefault("samples_slow", samples)
        if str(slow) != str(samples):
            raise ValueError(
                "the autoattack preset runs every attack on the same samples: leave samples_slow "
                f"unset or equal to samples ({samples}), got {slow}"
            )
        return given


# The hardening methods a job can run (core.hardening.registry.METHODS; a test checks both agree).
# Defensive distillation is the paper this service implements and the default; the others are
# the methods that hold up under adaptive attacks (issue: hardening that holds).
HardeningMethodName = Literal["distillation", "adversarial", "trades", "robust_distillation"]
HARDENING_METHODS: tuple[HardeningMethodName, ...] = get_args(HardeningMethodName)


class RobustTrainingSpec(_Strict):
    """How the methods that train against attacks train: ``adversarial`` (PGD adversarial
    training, Madry et al. 2018), ``trades`` (Zhang et al. 2019) and ``robust_distillation``
    (ARD, Goldblum et al. 2020). Defensive distillation ignores it."""

    norm: Literal["linf", "l2"] = Field("linf", description="Norm of the training budget.")
    epsilon: float | None = Field(
        None,
        gt=0,
        le=1000,
        description=(
            "Training budget in input units. Unset: the largest audited budget of that norm "
            "(evaluation.epsilons_linf or epsilons_l2): train for the strongest threat audited."
        ),
    )
    steps: int = Field(10, ge=1, le=100, description="PGD steps of the inner maximisation.")
    step_size: float | None = Field(
        None, gt=0, le=1000, description="PGD step size. Unset: 2.5 * epsilon / steps (Madry)."
    )
    fast: bool = Field(
        False,
        description=(
            "One FGSM step from a random start at 1.25 * epsilon (Wong et al. 2020) instead of "
            "PGD: about steps/1 times cheaper per batch. Guarded against catastrophic "
            "overfitting: PGD accuracy on a held-out batch each epoch; when it collapses the "
            "best epoch is restored and training goes on with PGD."
        ),
    )
    epochs: int = Field(20, ge=1, le=500, description="Epochs of training against attacks.")
    warmup_epochs: int = Field(
        5,
        ge=0,
        le=500,
        description=(
            "Epochs over which the budget grows linearly from 0 to epsilon: a large budget from "
            "the first step can stall training at chance (seen with epsilon 0.3 on MNIST)."
        ),
    )
    start: Literal["upload", "scratch"] = Field(
        "upload",
        description="'upload': fine-tune the uploaded model; 'scratch': re-initialise it first.",
    )
    trades_beta: float = Field(
        6.0, gt=0, le=100, description="TRADES: weight of the robustness (KL) term (paper: 6)."
    )
    distillation_alpha: float = Field(
        1.0,
        ge=0,
        le=1,
        description=(
            "robust_distillation: weight of the teacher's soft labels at T on adversarial "
            "inputs against the hard labels' cross-entropy on clean inputs (ARD: 1 - alpha)."
        ),
    )
    teacher: Literal["adversarial", "upload"] = Field(
        "adversarial",
        description=(
            "robust_distillation's teacher: 'adversarial' trains one from the upload first "
            "(PGD); 'upload' uses the upload as it is (when it is already robust)."
        ),
    )


class HardenSpec(_Strict):
    """Parameters of one hardening job: defensive distillation (Papernot et al. 2016) by default,
    or the methods that train against attacks (``method``, ``robust``)."""

    dataset: str = Field(
        "builtin:mnist",
        min_length=1,
        max_length=2048,
        description=(
            "Dataset reference: builtin:mnist, builtin:digits, 'upload' when a dataset file is "
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
        "distillation",
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
    temperature: float = Field(
        100.0,
        ge=1.0,
        le=1000.0,
        description="Distillation temperature T (paper's MNIST choice: 100). Allowed: 1..1000.",
    )
    teacher_epochs: int = Field(
        2,
        ge=0,
        le=500,
        description="Epochs fine-tuning the T-scaled upload at T; 0 uses the scaled copy as is.",
    )
    student_epochs: int | None = Field(
        None,
        ge=1,
        le=STUDENT_EPOCHS_MAX,
        description=(
            "Epochs training the student at T on the soft labels. Unset (null): auto, train "
            "until the soft-label loss stops improving (no 2% gain over 5 epochs), at most "
            f"{STUDENT_STEPS_MAX} optimizer steps and {STUDENT_EPOCHS_MAX} epochs; the report "
            "records why it stopped. Measured: bench/results/student_accuracy.md."
        ),
    )
    student_parametrization: Literal["output_scale", "plain"] = Field(
        "output_scale",
        description=(
            "'output_scale' (default): the student is a normally initialised network times a "
            "fixed T, folded into its last linear layer at export: the same function class, "
            "objective and deployed logits as the paper's student, reached in far fewer steps. "
            "'plain': the paper's recipe, where the network itself must grow its logits T-fold "
            "(thousands of Adam steps; BatchNorm networks stay far below the upload). "
            "Compared in bench/results/student_accuracy.md."
        ),
    )
    optimizer: Literal["adam", "sgd"] = Field(
        "adam",
        description=(
            "Adam by default: at high T the gradient is divided by T and SGD (lr 0.01) does not "
            "train in 50 epochs (measured: 11% accuracy on builtin:mnist at T=100)."
        ),
    )
    learning_rate: float = Field(1e-3, gt=0, le=10.0, description="Learning rate (0 < lr <= 10).")
    teacher_learning_rate: float | None = Field(
        None,
        gt=0,
        le=10.0,
        description=(
            "Learning rate fine-tuning the teacher from the trained upload. Unset: "
            "learning_rate / 10, as fine-tuning usually is: Adam's steps do not shrink with the "
            "gradient, and at the full rate two epochs at T=100 cost Papernot's CNN 1.7 points "
            "on builtin:digits (0.3 at a tenth; bench/results/student_accuracy.md)."
        ),
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by Adam).")
    batch_size: int = Field(128, ge=1, le=4096, description="Training batch size (1..4096).")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of every random choice.")
    student_init: Literal["scratch", "teacher"] = Field(
        "scratch",
        description="'scratch' re-initialises the student (the paper); 'teacher' warm-starts it.",
    )
    student_architecture: ZooArchitecture | None = Field(
        None,
        description="Optional zoo architecture for the student; default: the teacher's own.",
    )
    architecture: ZooArchitecture | None = Field(
        None,
        description=(
            "Zoo architecture of the UPLOADED model (e.g. papernot_mnist); needed only for a "
            "safetensors upload, which holds weights but no code."
        ),
    )
    input_range: tuple[float, float] = Field(
        (0.0, 1.0), description="Valid input value range [low, high]; attacks clip to it."
    )
    normalization: Normalization | None = Field(
        None, description="Per-channel mean/std the model expects, applied in front of it."
    )
    onnx_opset: int = Field(18, ge=14, le=21, description="ONNX opset of the export (14..21).")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    webhook_url: HttpUrl | None = Field(
        None, description="Service only: signed POST (HMAC-SHA256) here when the job ends."
    )
    mlflow: MlflowSpec | None = Field(
        None,
        description="Log the run and register model.onnx in MLflow when the job succeeds "
        "(core/mlflow_spec.py; harden run too). Unset: the service's HARDEN_MLFLOW_* defaults, "
        "if any.",
    )

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

    @model_validator(mode="after")
    def _robust_budget(self) -> HardenSpec:
        trains_against_attacks = any(name != "distillation" for name in self.methods)
        if trains_against_attacks and self.robust.epsilon is None:
            try:
                self.robust_epsilon()
            except InvalidSpecError as exc:
                raise ValueError(f"{exc.message}: {exc.hint}") from exc
        return self

    def for_input_shape(self, input_shape: tuple[int, int, int]) -> HardenSpec:
        """This spec with the evaluation's threat model chosen from ``input_shape`` where unset
        (:mod:`core.threat_models`), once the data is known."""
        evaluation = self.evaluation.for_input_shape(input_shape)
        if evaluation is self.evaluation:
            return self
        return self.model_copy(update={"evaluation": evaluation})

    @field_validator("dataset")
    @classmethod
    def _dataset_ref(cls, ref: str) -> str:
        if ref.startswith("builtin:") and ref not in BUILTIN_DATASETS:
            raise ValueError(
                f"unknown builtin dataset {ref!r}: use one of {', '.join(BUILTIN_DATASETS)}"
            )
        if is_fetched_reference(ref):
            parse_fetched_reference(ref)  # a malformed one raises, naming the right form
            return ref
        # hf://... is refused with the export fix where paths are (submit, load_dataset).
        if "://" in ref and not ref.startswith("file://") and dataset_name_refusal(ref) is None:
            scheme = ref.split("://", 1)[0]
            raise ValueError(
                f"dataset URI scheme {scheme!r} of {ref!r} is not supported: use "
                f"{', '.join(BUILTIN_DATASETS)}, {FORMS}, or upload the file with the job "
                "(harden run also reads a local path)"
            )
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


def spec_json_schema() -> dict[str, object]:
    """The JSON Schema of a job config, for docs and clients."""
    return HardenSpec.model_json_schema()
