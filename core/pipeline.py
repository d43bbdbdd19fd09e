"""The one entry point: a spec, a model file and a dataset in; model.onnx and the report out.

Stages, in order (``on_progress(stage, done, total)``): ``load``, the hardening method's own
(core.contract.methods), ``export``, ``evaluate``, ``report``. The spec is resolved
once, after loading, into a :class:`core.plan.RunPlan` that every later stage reads. Artifacts are
staged under temporary names in ``out_dir`` and renamed only when every stage succeeded,
``report.json`` last: a failed or cancelled run leaves none of them behind, and a finished
``report.json`` means the whole run is there.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from core.audit.baseline import compare_with_baseline
from core.audit.baseline import with_certificates as baseline_with_certificates
from core.audit.baseline import with_corruptions as baseline_with_corruptions
from core.audit.baseline_input import CACHE_ENTRY, Baseline
from core.audit.certify import certification_sigma, certify_models
from core.audit.corruptions import corruption_robustness
from core.audit.evaluate import UploadAudit, audit
from core.audit.shards import ShardBroker
from core.audit.verdict import with_certificate, with_corruptions, with_untrained_upload
from core.checkpoint import Checkpoints, Resumed, checkpointing
from core.compute import Compute, Precision
from core.contract.corruptions import CorruptionRobustness
from core.contract.spec import HardenSpec
from core.datasets.dataset import Dataset
from core.datasets.references import load_dataset
from core.deploy.onnx_export import check_export, write_onnx
from core.device import pick_device, supports_bfloat16, use_device
from core.hardening.distributed import training_group
from core.hardening.method import HardeningMethod
from core.hardening.normalization import normalized_inputs, with_normalization
from core.hardening.registry import METHODS
from core.intake.upload import LoadedModel, check_model_io, load_model
from core.modules import logits_of, set_training_mode
from core.names import (
    MODEL_CARD,
    MODEL_ONNX,
    REPORT_HTML,
    REPORT_JSON,
    REPORT_SARIF,
    CancelFn,
    ProgressFn,
)
from core.plan import RunPlan, dataset_reference
from core.report.build import (
    build_report,
    method_comparison,
    model_summary,
    onnx_metadata,
)
from core.report.html import render_html
from core.report.model_card import model_card
from core.report.sarif import sarif_log
from core.report.schema import MethodComparison, Report, ResumedFrom
from core.report.summary import near_chance
from core.stages import StageTime, record_stages_into, stop_recording, timed_stage

log = logging.getLogger(__name__)

PARITY_SAMPLES = 64
# The order artifacts are renamed into place: report.json last, so its presence says every other
# artifact is complete.
_WRITE_ORDER = (MODEL_ONNX, REPORT_HTML, REPORT_SARIF, MODEL_CARD, REPORT_JSON)


@dataclass
class RunResult:
    """The validated report and the artifacts written (name -> path)."""

    report: Report
    artifacts: dict[str, Path] = field(default_factory=dict)
    stages: list[StageTime] = field(default_factory=list)  # the trace's stage spans


# The upload's accuracy is checked at load on this many test images: seconds for any model, and
# enough to tell chance (10% of 10 classes) from a trained model within 3 standard errors.
UNTRAINED_CHECK_SAMPLES = 1000


def _untrained_upload_note(module: nn.Module, test_inputs: Tensor, data: Dataset) -> list[str]:
    """A note, logged at once, when the upload is at or near chance on the first test images:
    hardening and auditing it would take the whole job to say nothing."""
    inputs, labels = test_inputs[:UNTRAINED_CHECK_SAMPLES], data.y_test[:UNTRAINED_CHECK_SAMPLES]
    with torch.no_grad():
        accuracy = float((logits_of(module, inputs).argmax(1) == labels).float().mean())
    if data.num_classes < 2 or not near_chance(accuracy, data.num_classes, len(labels)):
        return []
    note = (
        f"the upload is at or near chance accuracy ({accuracy:.1%} on {len(labels)} test images "
        f"of {data.num_classes} classes): it is untrained or not a model of this dataset "
        "(classes, input range, normalization); its hardening and audit say nothing "
        "(--fail-on untrained stops a pipeline on it)"
    )
    log.warning(note)
    return [note]


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _compare(
    method: HardeningMethod,
    uploaded: LoadedModel,
    data: Dataset,
    plan: RunPlan,
    test_inputs: Tensor,
    test_labels: Tensor,
    progress: ProgressFn,
    cancel: CancelFn,
    upload_audit: UploadAudit | None,
) -> MethodComparison:
    """Run one more method on the same upload and audit its model beside the job's own (the
    upload's half of the audit is the job's, not redone); its stages are reported as part of
    ``evaluate`` (the job's model is already exported)."""

    def quiet(stage: str, done: int, total: int) -> None:
        progress("evaluate", 0, 1)

    started = time.perf_counter()
    result = method.harden(uploaded, data, plan, on_progress=quiet, should_cancel=cancel)
    training_s = time.perf_counter() - started
    spec = plan.spec
    evaluation = verdict = None
    if spec.evaluation.enabled:
        set_training_mode(result.student, False)
        done = audit(
            with_normalization(uploaded.module, spec.normalization),
            with_normalization(result.student.to(test_inputs.device), spec.normalization),
            data, spec, device=test_inputs.device, on_progress=quiet, should_cancel=cancel,
            method=method.title, upload=upload_audit,
        )  # fmt: skip
        evaluation, verdict = done.evaluation, done.verdict
    return method_comparison(
        method, result, plan, model_summary(result.student, test_inputs, test_labels),
        training_s=training_s, evaluation=evaluation, verdict=verdict,
    )  # fmt: skip


def run(
    spec: HardenSpec,
    model_file: Path,
    dataset: Path | None,
    out_dir: Path,
    *,
    on_progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    device: str | None = None,
    precision: Precision = "auto",
    channels_last: bool = True,
    cudnn_benchmark: bool = True,
    baseline: Baseline | None = None,
    audit_shards: ShardBroker | None = None,
    shard_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    resume_from: Path | None = None,
    resumed_attempt: int | None = None,
    checkpoint_every_s: float = 300.0,
    on_checkpoint: Callable[[Path], None] | None = None,
    training_processes: int = 1,
) -> RunResult:
    """Harden ``model_file`` with the spec's method(s) (defensive distillation by default) and
    write the first method's model.onnx, report.json and report.html to ``out_dir``.
    Raises HardenError subclasses for bad input and cancellation; DeviceError for a ``device``
    this machine lacks. ``precision``, ``channels_last`` and ``cudnn_benchmark`` say how a GPU
    is used (core.compute; on the CPU only ``precision='bfloat16'`` changes anything).
    ``baseline``: a model to compare the hardened one against (core.audit.baseline).
    ``audit_shards``: which shards of the job's audit this process computes (core.audit.shards;
    None: all of them); ``shard_dir``: where it writes their results (None: a temporary folder).
    ``checkpoint_dir``: where the trainings save checkpoints (core.checkpoint; every
    ``checkpoint_every_s`` at an epoch's end, and at each training's end), each handed to
    ``on_checkpoint``; ``resume_from``: the checkpoints of an earlier attempt
    (``resumed_attempt``) to resume from. ``training_processes``: train over that many
    processes (GPUs), DDP (core.hardening.distributed)."""
    checkpoints = None
    if checkpoint_dir is not None:
        checkpoints = Checkpoints(
            Path(checkpoint_dir), resume_from=resume_from, every_s=checkpoint_every_s,
            on_saved=on_checkpoint,
        )  # fmt: skip
    rerun = functools.partial(
        run, spec, model_file, dataset, precision=precision, channels_last=channels_last,
        cudnn_benchmark=cudnn_benchmark,
    )  # fmt: skip
    group = training_group(training_processes, rerun, device=device)
    with checkpointing(checkpoints), group as watched:
        result = _run(
            spec, model_file, dataset, out_dir, on_progress=watched(on_progress),
            should_cancel=should_cancel, device=device, precision=precision,
            channels_last=channels_last, cudnn_benchmark=cudnn_benchmark, baseline=baseline,
            resumed=lambda: _resumed_from(checkpoints, resumed_attempt),
            audit_shards=audit_shards, shard_dir=shard_dir,
        )  # fmt: skip
    return result


def _resumed_from(checkpoints: Checkpoints | None, attempt: int | None) -> ResumedFrom | None:
    """What an earlier attempt's checkpoints saved this run (None: nothing)."""
    if checkpoints is None or not checkpoints.resumed:
        return None
    last: Resumed = checkpoints.resumed[-1]
    return ResumedFrom(
        attempt=attempt, stage=last.stage, epoch=last.epochs, ended=last.ended,
        trainings=len(checkpoints.resumed),
        epochs_not_retrained=sum(unit.epochs for unit in checkpoints.resumed),
    )  # fmt: skip


def _resumed_note(resumed: ResumedFrom | None) -> list[str]:
    if resumed is None:
        return []
    where = "after its end" if resumed.ended else f"after epoch {resumed.epoch}"
    of = f" of attempt {resumed.attempt}" if resumed.attempt is not None else ""
    return [
        f"resumed from the checkpoints{of}: {resumed.trainings} training(s) taken over, the "
        f"last the {resumed.stage} stage's {where} ({resumed.epochs_not_retrained} epochs not "
        "retrained)"
    ]


def _run(
    spec: HardenSpec,
    model_file: Path,
    dataset: Path | None,
    out_dir: Path,
    *,
    on_progress: ProgressFn | None,
    should_cancel: CancelFn | None,
    device: str | None,
    precision: Precision,
    channels_last: bool,
    cudnn_benchmark: bool,
    baseline: Baseline | None,
    resumed: Callable[[], ResumedFrom | None],
    audit_shards: ShardBroker | None = None,
    shard_dir: Path | None = None,
) -> RunResult:
    progress: ProgressFn = on_progress or (lambda stage, done, total: None)
    cancel: CancelFn = should_cancel or (lambda: False)
    torch_device = pick_device(device)
    compute = Compute.resolve(
        str(torch_device), precision=precision, channels_last=channels_last,
        cudnn_benchmark=cudnn_benchmark, bfloat16_supported=supports_bfloat16(torch_device),
    )  # fmt: skip
    use_device(torch_device, cudnn_benchmark=compute.cudnn_benchmark)
    methods = [METHODS[name] for name in spec.methods]
    method = methods[0]
    created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    timings: dict[str, float] = {}
    notes: list[str] = []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = {name: out_dir / f".{name}.{uuid.uuid4().hex}.partial" for name in _WRITE_ORDER}
    stage_times: list[StageTime] = []
    recording = record_stages_into(stage_times)
    try:
        with timed_stage("load", cancel, timings):
            progress("load", 0, 2)
            reference = dataset_reference(spec, dataset)
            data = load_dataset(
                reference, upload=dataset, input_range=spec.input_range,
                test_fraction=spec.test_fraction, seed=spec.seed,
            )  # fmt: skip
            # The threat model's budgets depend on the data; every later stage reads this spec.
            spec = spec.for_input_shape(data.input_shape)
            if spec.trains_against_attacks:
                spec.robust_epsilon()  # refuses a robust norm with no budget now, not mid-run
            plan = RunPlan.resolve(
                spec,
                dataset=reference,
                train_samples=len(data.y_train),
                device=str(torch_device),
                compute=compute,
            )
            progress("load", 1, 2)
            uploaded = load_model(
                Path(model_file),
                architecture=spec.architecture,
                num_classes=data.num_classes,
                input_shape=data.input_shape,
            )
            test_inputs = normalized_inputs(data.x_test, spec.normalization)
            check_model_io(uploaded.module, test_inputs[:2], data.num_classes)
            notes.extend(f"dataset: {conversion}" for conversion in data.conversions)
            notes.extend(_untrained_upload_note(uploaded.module, test_inputs, data))
            progress("load", 2, 2)

        result = method.harden(uploaded, data, plan, on_progress=progress, should_cancel=cancel)
        timings.update(result.timings)
        resumed_from = resumed()
        notes.extend(_resumed_note(resumed_from))

        with timed_stage("export", cancel, timings):
            progress("export", 0, 1)
            device_inputs = test_inputs.to(torch_device)
            device_labels = data.y_test.to(torch_device)
            uploaded_module = uploaded.module.to(torch_device)
            models = {"uploaded": model_summary(uploaded_module, device_inputs, device_labels)}
            if result.teacher is not None:
                models["teacher"] = model_summary(result.teacher, device_inputs, device_labels)
            models["student"] = model_summary(result.student, device_inputs, device_labels)
            drop = models["uploaded"].clean_accuracy - models["student"].clean_accuracy
            notes.extend(method.notes(result, plan, accuracy_drop=drop))
            checked = check_export(
                result.student,
                sample=test_inputs[:PARITY_SAMPLES],
                opset=spec.onnx_opset,
                scratch=out_dir,
            )
            metadata = onnx_metadata(
                plan, data, uploaded, method=method, result=result, created_at=created_at
            )
            if checked.opset != spec.onnx_opset:
                notes.append(
                    f"ONNX opset {spec.onnx_opset} was asked; the exporter wrote {checked.opset}"
                )
            progress("export", 1, 1)

        evaluation = verdict = None
        upload_audit = None  # the upload's half, attacked once for every method
        versus_baseline = cache_entry = baseline_model = None
        if spec.evaluation.enabled:  # no "evaluate" timing for a job that did not evaluate
            with timed_stage("evaluate", cancel, timings):
                student = result.student.to(torch_device)
                for module in (uploaded_module, student):
                    set_training_mode(module, False)
                done = audit(
                    with_normalization(uploaded_module, spec.normalization),
                    with_normalization(student, spec.normalization),
                    data,
                    spec,
                    device=torch_device,
                    on_progress=progress,
                    should_cancel=cancel,
                    method=method.title,
                    shards=audit_shards,
                    shard_dir=shard_dir,
                )
                evaluation, verdict, upload_audit = done.evaluation, done.verdict, done.upload
                if baseline is not None:  # attacked as the student was; progress is the audit's
                    baseline_run = compare_with_baseline(
                        baseline, data, spec, done, out_dir, on_progress=progress,
                        should_cancel=cancel,
                    )  # fmt: skip
                    versus_baseline = baseline_run.comparison
                    cache_entry, baseline_model = baseline_run.cache_entry, baseline_run.model
        certification = None
        if spec.certifies:
            with timed_stage("certify", cancel, timings):
                certification = certify_models(
                    {
                        "uploaded": with_normalization(uploaded_module, spec.normalization),
                        "student": with_normalization(
                            result.student.to(torch_device), spec.normalization
                        ),
                    },
                    data.x_test.to(torch_device),
                    data.y_test,
                    spec.certification,
                    sigma=certification_sigma(spec, result.noise_sigma),
                    num_classes=data.num_classes,
                    seed=spec.seed,
                    device_type=torch_device.type,
                    on_progress=progress,
                    should_cancel=cancel,
                    stage="certify",
                )
                if versus_baseline is not None and baseline_model is not None:
                    # The baseline's smoothed classifier, certified alike (uncached: rare, and
                    # as costly as the job's own certificates).
                    theirs = certify_models(
                        {"baseline": baseline_model},
                        data.x_test.to(torch_device),
                        data.y_test,
                        spec.certification,
                        sigma=certification.sigma,
                        num_classes=data.num_classes,
                        seed=spec.seed,
                        device_type=torch_device.type,
                        on_progress=lambda stage, done, total: None,  # the stage's bar is done
                        should_cancel=cancel,
                        stage="certify",
                    )
                    versus_baseline = baseline_with_certificates(
                        versus_baseline, certification, theirs
                    )
            if verdict is not None:  # a certified gain is real for the smoothed classifier
                verdict = with_certificate(verdict, certification)
        corruptions = None
        if spec.corruptions.enabled:
            with timed_stage("corruptions", cancel, timings):
                hardened = with_normalization(result.student.to(torch_device), spec.normalization)

                def against(
                    reference: nn.Module, report: ProgressFn | None
                ) -> CorruptionRobustness:
                    return corruption_robustness(
                        reference, hardened, data.x_test, data.y_test, spec.corruptions,
                        input_range=spec.input_range, device=torch_device, on_progress=report,
                        should_cancel=cancel,
                    )  # fmt: skip

                corruptions = against(
                    with_normalization(uploaded_module, spec.normalization), progress
                )
                if versus_baseline is not None and baseline_model is not None:
                    # The baseline in the upload's place, on the same corrupted images.
                    versus_baseline = baseline_with_corruptions(
                        versus_baseline, against(baseline_model, None)
                    )
            if verdict is not None:  # the headline says what hardening cost under corruptions
                verdict = with_corruptions(verdict, corruptions)
        upload_accuracy = models["uploaded"]
        if verdict is not None and near_chance(
            upload_accuracy.clean_accuracy, data.num_classes, upload_accuracy.test_samples
        ):
            verdict = with_untrained_upload(
                verdict, upload_accuracy.clean_accuracy, data.num_classes
            )
        # Written once the verdict is known: the ONNX file says it too (or "not audited").
        label = verdict.label if verdict is not None else "not audited"
        exported = write_onnx(checked, staging[MODEL_ONNX], metadata | {"verdict": label})
        comparison = [
            _compare(
                other, uploaded, data, plan, device_inputs, device_labels, progress, cancel,
                upload_audit,
            )
            for other in methods[1:]
        ]  # fmt: skip

        with timed_stage("report", cancel, timings):
            progress("report", 0, 1)
            report = build_report(
                plan, Path(model_file), uploaded, data, models, result, exported,
                created_at=created_at, notes=notes, timings=timings,
                evaluation=evaluation, verdict=verdict, method=method, comparison=comparison,
                certification=certification,
            )  # fmt: skip
        report = report.model_copy(
            update={
                "corruptions": corruptions,
                "timings_s": dict(timings),
                "notes": list(notes),
                "comparison_to_baseline": versus_baseline,
                "resumed_from": resumed_from,
            }
        )
        # Every file from the final report: report.html's timings and notes are report.json's
        # (rendered inside the report stage, the page lacked that stage's own seconds).
        _write_text(staging[REPORT_HTML], render_html(report))
        # What code scanning and model hubs read, derived from the final report.
        _write_text(staging[REPORT_SARIF], json.dumps(sarif_log(report), indent=2))
        _write_text(staging[MODEL_CARD], model_card(report))
        _write_text(staging[REPORT_JSON], report.model_dump_json(indent=2))
        progress("report", 1, 1)
        artifacts = {name: out_dir / name for name in _WRITE_ORDER}
        for name, path in artifacts.items():
            os.replace(staging[name], path)
        if cache_entry is not None:  # for the worker's baseline cache, not a job artifact
            artifacts[CACHE_ENTRY] = cache_entry
        return RunResult(report=report, artifacts=artifacts, stages=list(stage_times))
    finally:
        stop_recording(recording)
        for path in staging.values():
            path.unlink(missing_ok=True)
