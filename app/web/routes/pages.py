"""The front door in the browser: ``GET /`` (your jobs and the submit form) and
``GET /ui/jobs/{job_id}`` (one job's live progress and its report), small server-rendered pages
whose scripts (app/web/static/) call the JSON API with the key kept in the tab's sessionStorage.

The pages carry no data and need no key: the scripts fetch everything from the API with an
``Authorization`` header, so a key never appears in a URL (which proxies and access logs keep).
What the server renders is the catalogue a form needs (methods, builtin datasets, the
contract's defaults) and whether this service asks for keys at all (open mode does not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from app.infra.db import is_job_id
from app.web.deps import ServicesDep
from app.web.errors import NotFoundError
from core.contract.distillation import DistillationSpec
from core.contract.evaluation import EvaluationPreset, EvaluationSpec
from core.contract.methods import CATALOGUE, DEFAULT_METHOD
from core.names import BUILTIN_DATASETS

HERE = Path(__file__).resolve().parent.parent
STATIC_PATH = "/ui/static"
_templates = Environment(
    loader=FileSystemLoader(HERE / "pages"), autoescape=select_autoescape(["html"])
)

# Scripts and styles come from this origin's files only: no inline script can run, so a job's
# text shown on a page (an error message, a dataset name) cannot become code. The job page
# embeds report.html in a sandboxed frame (no scripts, an opaque origin): a srcdoc frame
# inherits the page's policy, and the report's own <style> and data: plots need it to allow
# inline styles and data: images.
_POLICY = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "form-action": "'none'",
    "base-uri": "'none'",
    "frame-ancestors": "'none'",
}
FRONT_DOOR_POLICY = "; ".join(f"{name} {value}" for name, value in _POLICY.items())
JOB_PAGE_POLICY = "; ".join(
    f"{name} {value}" for name, value in (_POLICY | {"style-src": "'self' 'unsafe-inline'"}).items()
)

router = APIRouter(include_in_schema=False)


def _page(template: str, policy: str, **context: Any) -> HTMLResponse:
    html = _templates.get_template(template).render(static=STATIC_PATH, **context)
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


@router.get("/", response_class=HTMLResponse)
def front_door(services: ServicesDep) -> HTMLResponse:
    """Your jobs, and a form to submit one."""
    distillation = DistillationSpec()
    evaluation = EvaluationSpec()
    return _page(
        "front_door.html",
        FRONT_DOOR_POLICY,
        auth=services.settings.auth,
        methods=[(info.name, info.title) for info in CATALOGUE.values()],
        default_method=DEFAULT_METHOD,
        builtin_datasets=BUILTIN_DATASETS,
        # The contract's defaults, shown as the placeholders of the fields left empty (an
        # empty field is left out of the config: the contract fills it in, no second copy).
        defaults={
            "temperature": distillation.temperature,
            "teacher_epochs": distillation.teacher_epochs,
            "student_epochs": distillation.student_epochs or "auto",
            "samples": evaluation.samples,
        },
        presets=get_args(EvaluationPreset),
        default_preset=evaluation.preset,
    )


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, services: ServicesDep) -> HTMLResponse:
    """One job: live progress over its event stream, then its verdict, downloads and report."""
    if not is_job_id(job_id):
        raise NotFoundError(
            f"no job {job_id!r}", hint="open a job from the list at / (its id is 32 hex digits)"
        )
    return _page("job.html", JOB_PAGE_POLICY, auth=services.settings.auth, job_id=job_id)


def install_pages(app: FastAPI) -> None:
    """The pages' router and their scripts and styles under /ui/static."""
    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=HERE / "static"), name="ui-static")
