"""A job's plan: every stage it runs priced in sample passes, the stage fraction read back from
the overall progress, and the ETA from the pace so far."""

from __future__ import annotations

import pytest

from core.contract.evaluation_cost import FORWARD_ONLY, audit_passes, run_passes, run_steps
from core.contract.job_plan import (
    ATTACK_PASS,
    BUILTIN_SHAPES,
    FIXED_SECONDS,
    job_plan,
    overall_progress,
    progress_stages,
    stage_fraction,
)
from core.contract.methods import CATALOGUE
from core.contract.spec import HardenSpec


@pytest.mark.parametrize("method", list(CATALOGUE))
@pytest.mark.parametrize("evaluation", [True, False])
def test_the_plan_prices_every_stage_the_job_runs_in_its_order(method, evaluation):
    spec = HardenSpec(
        dataset="builtin:digits", method=method, evaluation={"enabled": evaluation},
        corruptions={"enabled": False},
    )  # fmt: skip
    plan = job_plan(spec)
    ran = [s.name for s in progress_stages(spec) if s.name != "corruptions"]
    assert list(plan.order) == ran
    assert plan.fixed_s == FIXED_SECONDS and set(plan.work) == set(ran) - set(FIXED_SECONDS)
    assert all(work > 0 for work in plan.work.values())


def test_the_evaluation_is_the_audits_own_plan_and_grows_with_its_settings():
    spec = HardenSpec(dataset="builtin:mnist")
    shape = BUILTIN_SHAPES["builtin:mnist"]
    ev = spec.for_input_shape(shape.input_shape).evaluation
    assert job_plan(spec).work["evaluate"] == ATTACK_PASS * audit_passes(
        ev, features=784, classes=10, test_samples=shape.test_samples
    )
    more = HardenSpec(dataset="builtin:mnist", evaluation={"pgd_steps": 80})
    strong = HardenSpec(dataset="builtin:mnist", evaluation={"preset": "autoattack"})
    assert job_plan(more).work["evaluate"] > job_plan(spec).work["evaluate"]
    assert job_plan(strong).work["evaluate"] > 5 * job_plan(spec).work["evaluate"]


def test_an_attack_that_reads_no_gradient_is_priced_at_forward_passes():
    ev = HardenSpec(dataset="builtin:mnist").evaluation
    for name in ("square", "pgd_linf_ce", "transfer"):
        steps = run_steps(name, ev, features=784, classes=10)
        weight = FORWARD_ONLY if name != "pgd_linf_ce" else 1.0
        assert run_passes(name, ev, features=784, classes=10) == pytest.approx(steps * weight)


def test_training_is_priced_by_its_passes():
    # PGD training pays its attack's steps on every batch; more epochs cost more.
    base = job_plan(HardenSpec(dataset="builtin:digits", method="adversarial"))
    longer = job_plan(
        HardenSpec(dataset="builtin:digits", method="adversarial", robust={"epochs": 40})
    )
    assert longer.work["training"] == pytest.approx(2 * base.work["training"])
    steps = job_plan(
        HardenSpec(dataset="builtin:digits", method="adversarial", robust={"steps": 20})
    )
    assert steps.work["training"] == pytest.approx(base.work["training"] * 21 / 11)
    # A set student epoch count is planned as set; an auto one at its expectation.
    ten = job_plan(HardenSpec(dataset="builtin:digits", distillation={"student_epochs": 10}))
    twenty = job_plan(HardenSpec(dataset="builtin:digits", distillation={"student_epochs": 20}))
    assert twenty.work["student"] > ten.work["student"] > 0


@pytest.mark.parametrize("method", list(CATALOGUE))
def test_a_stages_fraction_is_read_back_from_the_overall_progress(method):
    stages = progress_stages(HardenSpec(dataset="builtin:digits", method=method))
    for stage in stages:
        for fraction in (0.0, 0.3, 0.75, 1.0):
            progress = overall_progress(stages, stage.name, fraction)
            assert progress is not None
            assert stage_fraction(stages, stage.name, progress) == pytest.approx(fraction)
    # Progress never goes back: at a later stage's start it may still hold the earlier one's end.
    first, second = stages[1], stages[2]
    held = overall_progress(stages, first.name, 1.0)
    assert held is not None and stage_fraction(stages, second.name, held) == 0.0
    assert stage_fraction(stages, "unknown", 0.5) is None


def test_the_eta_is_the_pace_so_far_applied_to_the_work_left():
    plan = job_plan(HardenSpec(dataset="builtin:digits"))
    total = sum(plan.work.values())
    done = plan.done("evaluate", 0.5)
    assert done is not None and 0 < done < total
    fixed_done = FIXED_SECONDS["load"] + FIXED_SECONDS["export"]
    pace = (100.0 - fixed_done) / done
    assert plan.remaining_s("evaluate", 0.5, 100.0) == pytest.approx(
        (total - done) * pace + FIXED_SECONDS["report"]
    )
    # Twice the time for the same work: twice the time for the work left.
    slower = plan.remaining_s("evaluate", 0.5, 2 * 100.0 - fixed_done)
    assert slower == pytest.approx(2 * (total - done) * pace + FIXED_SECONDS["report"])
    assert plan.remaining_s("report", 1.0, 100.0) == 0
    assert plan.remaining_s("load", 1.0, 100.0) is None  # loading is no pace of the work
    assert plan.remaining_s("evaluate", 0.5, 1.0) is None  # too early
    assert plan.remaining_s("certify", 0.5, 100.0) is None  # a stage the job does not run


@pytest.mark.parametrize("reference", sorted(BUILTIN_SHAPES))
def test_builtin_shapes_are_the_loaded_datasets(reference):
    from core.datasets.references import load_dataset

    data = load_dataset(reference)
    shape = BUILTIN_SHAPES[reference]
    assert (len(data.y_train), len(data.y_test)) == (shape.train_samples, shape.test_samples)
    assert (tuple(data.input_shape), data.num_classes) == (shape.input_shape, shape.classes)


def test_auto_counts_are_the_devices():
    # 'auto' evaluation samples and certified images are sized by the device (a CUDA worker
    # attacks ten times the CPU's samples): so is the plan's evaluation.
    spec = HardenSpec(dataset="builtin:mnist", certification={"enabled": True})
    cpu, cuda = job_plan(spec), job_plan(spec, device_type="cuda")
    assert cuda.work["evaluate"] > 5 * cpu.work["evaluate"]
    assert cuda.work["certify"] > cpu.work["certify"]
    assert cuda.work["student"] == cpu.work["student"]


def test_a_stages_own_pace_reads_a_slower_stage_at_once():
    # Training went at 1 ms a pass, the evaluation at 3 ms: a fifth into the evaluation, the
    # job's pace alone still expects 1 ms for its rest; the stage's own pace (where its start is
    # known) expects the 3 ms it runs at. At a steady pace both say the same.
    plan = job_plan(HardenSpec(dataset="builtin:digits"))
    before = plan.done("evaluate", 0.0)
    assert before is not None
    started = FIXED_SECONDS["load"] + FIXED_SECONDS["export"] + 1e-3 * before
    for per_pass, steady in ((3e-3, False), (1e-3, True)):
        in_stage = per_pass * 0.2 * plan.work["evaluate"]
        elapsed = started + in_stage
        truth = (
            per_pass * 0.8 * plan.work["evaluate"]
            + 1e-3 * plan.work["corruptions"]
            + FIXED_SECONDS["report"]
        )
        job_pace = plan.remaining_s("evaluate", 0.2, elapsed)
        own_pace = plan.remaining_s("evaluate", 0.2, elapsed, stage_elapsed_s=in_stage)
        assert job_pace is not None and own_pace is not None
        assert own_pace == pytest.approx(truth, rel=0.1)
        if steady:
            assert job_pace == pytest.approx(own_pace, rel=1e-6)
        else:
            assert abs(own_pace - truth) < abs(job_pace - truth) / 3
    # Too little of the stage done to tell: the job's pace.
    assert plan.remaining_s("evaluate", 0.05, 100.0, stage_elapsed_s=30.0) == plan.remaining_s(
        "evaluate", 0.05, 100.0
    )
