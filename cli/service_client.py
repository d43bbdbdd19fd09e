"""Client commands of a running service: submit, status, download, cancel (httpx only)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer

from cli.gate import (
    FAIL_ON_HELP,
    Gate,
    GateError,
    check,
    check_evaluation,
    parse_gates,
)
from cli.outcome import (
    JSON_HELP,
    JUNIT_HELP,
    SARIF_HELP,
    Outcome,
    failed_sarif,
    not_checked,
    report,
    write_sarif,
)
from cli.run_options import merge_options
from core.contract.dataset_ref import missing_dataset
from core.contract.spec import HardenSpec
from core.report.summary import VerdictSummary

URL_OPTION = typer.Option(
    "http://127.0.0.1:8000", "--url", envvar="HARDEN_URL", help="Service URL."
)
KEY_OPTION = typer.Option(None, "--key", envvar="HARDEN_API_KEY", help="API key (Bearer).")
JOB_ID_ARGUMENT = typer.Argument(
    ..., help="The job's id, as harden submit printed it ('harden jobs' lists yours)."
)


def _client(url: str, key: str | None) -> Any:
    from harden_client import HardenClient

    return HardenClient(url, key)


def _fail(exc: Exception | str) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


@contextmanager
def _service_errors(url: str) -> Iterator[None]:
    """One line and exit 2 for what a user can fix: a problem+json answer, a service that is not
    there (a traceback of 150 lines before), a file that cannot be written."""
    import httpx
    from harden_client import HardenAPIError

    try:
        yield
    except HardenAPIError as exc:
        _fail(exc)
    except httpx.TransportError as exc:
        _fail(
            f"cannot reach the service at {url} ({exc or type(exc).__name__}): start it "
            "('make run' or 'harden serve --embedded'), or point --url / HARDEN_URL at it"
        )
    except OSError as exc:
        _fail(exc)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        _fail(f"--config {path} is not valid JSON ({exc})")
    if not isinstance(spec, dict):
        _fail(f'--config {path} must hold a JSON object, e.g. {{"dataset": "builtin:digits"}}')
    return spec


def submit(
    model: Path = typer.Argument(..., exists=True, dir_okay=False, help="Model file."),
    dataset: str | None = typer.Option(
        None,
        help="builtin:mnist, builtin:digits, dataset:<id> (harden datasets upload FILE), "
        "s3://bucket/key or https://host/file (fetched by the worker, optionally "
        "#sha256=<hex>).",
    ),
    dataset_file: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="Upload this .npz or image-folder archive."
    ),
    config: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="JSON file of the job spec (options override it)."
    ),
    no_evaluation: bool = typer.Option(False, "--no-evaluation", help="Skip the attacks."),
    webhook_url: str | None = typer.Option(
        None, help=HardenSpec.model_fields["webhook_url"].description
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the job with a progress bar."),
    out: Path | None = typer.Option(None, help="With --wait: download the artifacts here."),
    fail_on: list[str] | None = typer.Option(
        None, "--fail-on", help=FAIL_ON_HELP + " Needs --wait."
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    junit: Path | None = typer.Option(None, dir_okay=False, help=JUNIT_HELP + " Needs --wait."),
    sarif: Path | None = typer.Option(None, dir_okay=False, help=SARIF_HELP + " Needs --wait."),
    url: str = URL_OPTION,
    key: str | None = KEY_OPTION,
    **spec_values: Any,
) -> None:
    """Submit MODEL to a running service; print the job (or follow it with --wait). The spec
    options are harden run's; given here, they override --config's values."""
    if (fail_on or junit or sarif) and not wait:
        _fail(
            "--fail-on, --junit and --sarif need --wait: only a followed job has a verdict to check"
        )
    gates = _gates(fail_on)
    if dataset and not dataset.startswith("builtin:") and Path(dataset).is_file():
        _fail(
            f"--dataset takes builtin:mnist, builtin:digits, dataset:<id>, s3:// or https:// "
            f"(the service reads no paths); upload the file with --dataset-file {dataset}, or "
            f"register it once with 'harden datasets upload {dataset}'"
        )
    spec: dict[str, Any] = _read_config(config) if config else {}
    # --temperature goes to distillation.temperature, --method a,b to a list: as in harden run.
    merge_options(spec, {**spec_values, "dataset": dataset, "webhook_url": webhook_url})
    if no_evaluation:
        spec.setdefault("evaluation", {})["enabled"] = False
    if dataset_file is None and "dataset" not in spec:
        _fail(missing_dataset())  # before uploading the model: the service would answer 422
    _check_evaluation(gates, spec)
    client = _client(url, key)
    with _service_errors(url):
        job = client.submit(model, config=spec, dataset_file=dataset_file)
        if not wait:
            typer.echo(json.dumps(job, indent=2))
            return
        started = time.monotonic()
        typer.echo(f"job {job['id']} queued", err=True)
        job = _follow(client, job["id"])
        outcome = _finish(client, job, out, gates, started, json_output)
        if sarif is not None:
            write_sarif(sarif, _job_sarif(client, outcome, out, model))
        code = report(outcome, as_json=json_output, junit=junit, suite=f"harden job {job['id']}")
    if code:
        raise typer.Exit(code)


def _gates(values: list[str] | None) -> list[Gate]:
    try:
        return parse_gates(values)
    except GateError as exc:
        _fail(exc)


def _check_evaluation(gates: list[Gate], spec: dict[str, Any]) -> None:
    """Refuse gates the job's evaluation cannot answer before uploading anything."""
    from pydantic import ValidationError

    from core.contract.evaluation import EvaluationSpec

    try:
        evaluation = EvaluationSpec.model_validate(spec.get("evaluation") or {})
    except ValidationError:
        return  # the service refuses the spec with every detail (422)
    try:
        check_evaluation(gates, evaluation)
    except GateError as exc:
        _fail(exc)


def _follow(client: Any, job_id: str) -> dict[str, Any]:
    from tqdm import tqdm

    from cli.run_cmd import bar_interval_s

    with tqdm(
        total=100,
        unit="%",
        bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}{postfix}]",
        mininterval=bar_interval_s(),
    ) as bar:

        def show(job: dict[str, Any]) -> None:
            bar.set_description(f"{job['state']}:{job.get('stage') or '-'}")
            bar.n = round(100 * job["progress"], 1)
            eta = job.get("eta_s")
            bar.set_postfix_str("" if eta is None else f"ETA {duration(eta)}", refresh=False)
            bar.refresh()

        return dict(client.wait(job_id, on_progress=show, poll_s=0.5, timeout_s=None))


def duration(seconds: float) -> str:
    """Seconds as a person reads them: '45 s', '3 min 20 s', '2 h 05 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _finish(
    client: Any,
    job: dict[str, Any],
    out: Path | None,
    gates: list[Gate],
    started: float,
    as_json: bool,
) -> Outcome:
    """Say how the job ended (stderr), download its files (listed on stdout, unless that is the
    --json summary's), check the gates."""
    verdict = VerdictSummary.model_validate(job["verdict"]) if job.get("verdict") else None
    artifacts = {name: a["href"] for name, a in (job.get("artifacts") or {}).items()}
    if job["state"] != "succeeded":
        error = job.get("error") or {}
        typer.echo(
            f"job {job['id']} {job['state']}: {error.get('code')}: {error.get('message')}"
            + (f"\nhint: {error['hint']}" if error.get("hint") else ""),
            err=True,
        )
        checks = not_checked(gates)
    else:
        said = f": verdict {verdict.label}" if verdict else ""
        typer.echo(f"job {job['id']} succeeded{said}", err=True)
        if verdict is not None and verdict.next_step is not None:
            typer.echo(f"next step: {verdict.next_step.action}", err=True)
        if out is not None:
            files = client.download(job["id"], out)
            artifacts = {name: str(path) for name, path in files.items()}
            for name, path in files.items():
                typer.echo(f"{name}\t{path}", err=as_json)
        checks = check(gates, verdict)
    return Outcome(
        job["state"], job_id=job["id"], verdict=verdict, checks=checks, error=job.get("error"),
        artifacts=artifacts, duration_s=time.monotonic() - started,
    )  # fmt: skip


def _job_sarif(client: Any, outcome: Outcome, out: Path | None, model: Path) -> dict[str, Any]:
    """The SARIF log of a followed job, its results pointing at the submitted model file: from
    its report.json (the one downloaded to --out, else fetched) and the gates' outcomes."""
    import tempfile

    from core.report.sarif import sarif_log
    from core.report.schema import read_report

    if outcome.state != "succeeded" or outcome.job_id is None:
        return failed_sarif(outcome)
    with tempfile.TemporaryDirectory(prefix="harden-sarif-") as folder:
        path = out / "report.json" if out is not None else None
        if path is None or not path.is_file():
            path = client.download(outcome.job_id, folder, names=("report.json",))["report.json"]
        job_report = read_report(json.loads(path.read_text(encoding="utf-8")))
    return sarif_log(job_report, model_uri=model, gates=outcome.checks)


def status(
    job_id: str = JOB_ID_ARGUMENT,
    wait: bool = typer.Option(False, "--wait", help="Follow until the job ends."),
    url: str = URL_OPTION,
    key: str | None = KEY_OPTION,
) -> None:
    """Print a job's JSON (state, stage, progress, error)."""
    client = _client(url, key)
    with _service_errors(url):
        job = _follow(client, job_id) if wait else client.status(job_id)
    typer.echo(json.dumps(job, indent=2))


def download(
    job_id: str = JOB_ID_ARGUMENT,
    out: Path = typer.Option(Path("."), "--out", help="Folder for the files."),
    layout: str | None = typer.Option(
        None,
        "--layout",
        help="Write model.onnx as a serving layout into --out instead (GET "
        "/jobs/{id}/layout.zip): 'triton' (a model repository: NAME/config.pbtxt read from the "
        "ONNX graph, NAME/VERSION/model.onnx) or 'kserve' (the same plus "
        "inference-service.yaml, KServe's v2 protocol).",
    ),
    name: str | None = typer.Option(
        None, help="With --layout: the model's name (default harden-<first 8 of the job id>)."
    ),
    version: int = typer.Option(1, help="With --layout: the version folder."),
    max_batch_size: int | None = typer.Option(
        None, help="With --layout: Triton's max_batch_size (the service's default: 32)."
    ),
    storage_uri: str | None = typer.Option(
        None, help="With --layout kserve: where the repository will be copied (storageUri)."
    ),
    url: str = URL_OPTION,
    key: str | None = KEY_OPTION,
) -> None:
    """Download a finished job's files (model.onnx, report.json, report.html, report.sarif,
    MODEL_CARD.md; sha256-checked), or its model as a Triton/KServe layout (--layout)."""
    with _service_errors(url):
        client = _client(url, key)
        if layout is None:
            for artifact, path in client.download(job_id, out).items():
                typer.echo(f"{artifact}\t{path}")
            return
        files = client.download_layout(
            job_id, out, layout=layout, name=name, version=version,
            max_batch_size=max_batch_size, storage_uri=storage_uri,
        )  # fmt: skip
        for path in files:
            typer.echo(f"{path.relative_to(out).as_posix()}\t{path}")


def cancel(
    job_id: str = JOB_ID_ARGUMENT, url: str = URL_OPTION, key: str | None = KEY_OPTION
) -> None:
    """Cancel a queued or running job."""
    with _service_errors(url):
        client = _client(url, key)
        job = client.cancel(job_id)
        # The cancel's answer can carry the state before the worker stopped (printed 'running'):
        # wait a few seconds for the state after it.
        for _ in range(10):
            if job["state"] not in ("queued", "running"):
                break
            time.sleep(0.5)
            job = client.status(job_id)
    state = job["state"]
    if state in ("queued", "running"):
        state += f" (cancel requested; the worker stops it shortly: harden status {job_id})"
    typer.echo(f"job {job['id']}: {state}")


def jobs(
    state: str | None = typer.Option(
        None,
        help="Only jobs in this state: queued, running, succeeded, failed, cancelled, expired.",
    ),
    limit: int = typer.Option(20, min=1, max=200, help="Jobs per page (1..200)."),
    offset: int = typer.Option(0, min=0, help="Skip this many of the newest jobs."),
    json_output: bool = typer.Option(False, "--json", help="Print the page as the API answers it."),
    url: str = URL_OPTION,
    key: str | None = KEY_OPTION,
) -> None:
    """List your jobs on the service, newest first: id, state, verdict, submitted."""
    with _service_errors(url):
        page = _client(url, key).list_jobs(state=state, limit=limit, offset=offset)
    if json_output:
        typer.echo(json.dumps(page, indent=2))
        return
    typer.echo(f"{'ID':<32}  {'STATE':<9}  {'VERDICT':<18}  SUBMITTED")
    for job in page["items"]:
        verdict = (job.get("verdict") or {}).get("label")
        if verdict is None and job["state"] in ("queued", "running"):
            verdict = f"{job.get('stage') or '-'} {100 * job['progress']:.0f}%"
        typer.echo(f"{job['id']:<32}  {job['state']:<9}  {verdict or '-':<18}  {job['created_at']}")
        error = job.get("error") or {}
        if job["state"] == "failed" and error:
            # Why it failed, under it: the list was ids and 'failed' and nothing to act on.
            typer.echo(f"  reason: {error.get('code')}: {error.get('message', '')[:200]}")
    shown = len(page["items"])
    where = (
        f"{offset + 1}-{offset + shown} of {page['total']}" if shown else f"0 of {page['total']}"
    )
    more = f"; next page: harden jobs --offset {offset + limit}" if page.get("next") else ""
    typer.echo(f"jobs {where}{more}", err=True)
