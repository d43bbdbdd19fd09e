"""The front door in a real browser: Debian's Chromium, driven by Selenium, against the service
as `make run` starts it (`harden serve --embedded`: uvicorn and a worker process, open mode), and
against an API that asks for keys (no worker: its jobs stay queued). Each page's claim is checked
against what the API itself answers."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.expected_conditions import staleness_of

from tests.integration.browser import (
    chromium,
    click_submit,
    fill_submit_form,
    job_page_state,
    start_service,
    wait_until,
)
from tests.integration.conftest import Cluster
from tests.integration.test_embedded import rgb_images_npz
from tests.integration.test_redis_postgres import create_key
from tests.worker.real_pipeline import TINY_EVALUATION, digits_torchscript

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# A job of a few seconds on builtin:digits that still ends in a verdict.
QUICK_FIELDS = {"teacher-epochs": "1", "student-epochs": "3", "samples": "20"}
# A job that runs long enough to show an ETA on any machine: many steps of small batches (it is
# cancelled).
LONG_FIELDS = {"teacher-epochs": "500", "student-epochs": "300", "evaluation": "off"}
SMALL_BATCHES = {"batch_size": 16}


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[WebDriver]:
    with chromium(downloads) as driver:
        yield driver


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained digits classifier (TorchScript), so that the audit's verdict means something."""
    path = tmp_path_factory.mktemp("model") / "digits_mlp.pt"
    path.write_bytes(digits_torchscript())
    return path


@pytest.fixture(scope="module")
def open_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_service(tmp_path_factory.mktemp("open"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def keyed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_service(tmp_path_factory.mktemp("keyed"), embedded=False, HARDEN_AUTH="keys")
    yield cluster
    cluster.stop()


def text_of(driver: WebDriver, css: str) -> str:
    """An element's text content, whitespace as one space (CSS may clamp or transform it)."""
    content = driver.find_element(By.CSS_SELECTOR, css).get_attribute("textContent") or ""
    return " ".join(content.split())


def words(text: str | None) -> str:
    return " ".join((text or "").split())


def jobs_listed(driver: WebDriver) -> None:
    wait_until(
        driver,
        lambda d: d.find_element(By.ID, "jobs-status").text not in ("", "Loading…"),
        20,
        "the jobs list",
    )


def open_front_door(driver: WebDriver, url: str) -> None:
    driver.get(url + "/")
    jobs_listed(driver)


def click_and_reload(driver: WebDriver, css: str) -> None:
    """Click what reloads the front door (the key panel's buttons), wait for the new page."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, css).click()
    wait_until(driver, staleness_of(page), 20, "the page to reload")
    jobs_listed(driver)


def test_a_job_submitted_through_the_form_runs_live_and_shows_its_report(
    open_service: Cluster, browser: WebDriver, downloads: Path, model: Path
):
    url = open_service.url
    open_front_door(browser, url)
    assert not browser.find_element(By.ID, "key-panel").is_displayed()  # open mode: no key
    sent = fill_submit_form(
        browser,
        model,
        builtin_dataset="builtin:digits",
        fields=QUICK_FIELDS,
        config={"evaluation": TINY_EVALUATION},
    )
    # The fields wrote themselves into the JSON that is sent.
    assert sent["dataset"] == "builtin:digits"
    assert sent["distillation"] == {"teacher_epochs": 1, "student_epochs": 3}
    job_id = click_submit(browser)
    wait_until(browser, lambda d: job_page_state(d) == "succeeded", 120, "the job to succeed")

    job = httpx.get(f"{url}/jobs/{job_id}").json()
    assert job["state"] == "succeeded"
    assert job["spec"]["distillation"]["teacher_epochs"] == 1
    assert job["spec"]["evaluation"]["attacks"] == TINY_EVALUATION["attacks"]
    # Followed over the event stream: the whole job, then its progress events, then the end.
    live = browser.find_element(By.ID, "live").text
    updates = int(re.search(r"(\d+) live update", live).group(1))  # type: ignore[union-attr]
    assert updates >= 2, live
    assert browser.find_element(By.ID, "progress-text").text.startswith("100%")
    assert text_of(browser, "#verdict .verdict-label") == job["verdict"]["label"]
    assert words(job["verdict"]["headline"]) in text_of(browser, "#verdict")

    # The report: report.html as the API serves it, in a frame that runs no script.
    report = wait_until(
        browser, lambda d: d.find_element(By.ID, "report").get_attribute("srcdoc"), 30, "report"
    )
    assert report == httpx.get(f"{url}/jobs/{job_id}/report.html").text
    frame = browser.find_element(By.ID, "report")
    assert frame.get_attribute("sandbox") == ""
    browser.switch_to.frame(frame)
    try:
        assert job["verdict"]["label"] in browser.find_element(By.TAG_NAME, "body").text.lower()
    finally:
        browser.switch_to.default_content()

    # A download is the artifact itself.
    browser.find_element(By.CSS_SELECTOR, "button[data-artifact='report.json']").click()
    saved = downloads / "report.json"
    wait_until(browser, lambda d: saved.exists() and saved.stat().st_size, 30, "the download")
    sha256 = hashlib.sha256(saved.read_bytes()).hexdigest()
    assert sha256 == job["artifacts"]["report.json"]["sha256"]

    # The list shows it with its verdict.
    open_front_door(browser, url)
    row = f"tr[data-job-id='{job_id}']"
    assert browser.find_element(By.CSS_SELECTOR, row).get_attribute("data-state") == "succeeded"
    assert text_of(browser, f"{row} .verdict-label") == job["verdict"]["label"]


def test_a_failed_job_shows_its_reason(
    open_service: Cluster, browser: WebDriver, model: Path, tmp_path: Path
):
    # Three-channel images for a one-channel model: only the worker, which loads the model,
    # can tell, and the job fails in its load stage.
    dataset = tmp_path / "rgb.npz"
    dataset.write_bytes(rgb_images_npz())
    open_front_door(browser, open_service.url)
    sent = fill_submit_form(browser, model, dataset_file=dataset)
    assert sent["dataset"] == "upload"
    job_id = click_submit(browser)
    wait_until(browser, lambda d: job_page_state(d) == "failed", 90, "the job to fail")

    error = httpx.get(f"{open_service.url}/jobs/{job_id}").json()["error"]
    assert error["code"] == "model_dataset_mismatch"
    assert text_of(browser, "#error .problem-detail") == words(error["message"])
    assert text_of(browser, "#error .problem-hint") == "How to fix it: " + words(error["hint"])
    assert browser.find_element(By.ID, "error").is_displayed()

    open_front_door(browser, open_service.url)
    row = f"tr[data-job-id='{job_id}']"
    assert browser.find_element(By.CSS_SELECTOR, row).get_attribute("data-state") == "failed"
    assert text_of(browser, f"{row} .reason strong") == words(error["message"])


def test_a_refused_submission_shows_the_problem_and_its_hint(
    open_service: Cluster, browser: WebDriver, model: Path
):
    config = {"dataset": "builtin:digits", "distillation": {"temperature": 0}}
    with model.open("rb") as upload:
        expected = httpx.post(
            f"{open_service.url}/harden",
            files={"model": upload},
            data={"config": '{"dataset": "builtin:digits", "distillation": {"temperature": 0}}'},
        )
    assert expected.status_code == 422
    problem = expected.json()
    open_front_door(browser, open_service.url)
    fill_submit_form(browser, model, config=config)
    browser.find_element(By.ID, "submit").click()
    shown = wait_until(
        browser,
        lambda d: (
            d.find_element(By.ID, "submit-problem").is_displayed()
            and d.find_element(By.ID, "submit-problem")
        ),
        20,
        "the refusal",
    )
    assert browser.current_url == open_service.url + "/"  # no job page: no job
    assert shown.get_attribute("data-code") == problem["code"]
    assert text_of(browser, "#submit-problem .problem-detail") == words(problem["detail"])
    assert text_of(browser, "#submit-problem .problem-hint") == "How to fix it: " + words(
        problem["hint"]
    )
    fields = text_of(browser, "#submit-problem .problem-fields")
    assert all(error["field"] in fields for error in problem["errors"])


def test_a_running_job_shows_its_eta_and_stops_when_cancelled(
    open_service: Cluster, browser: WebDriver, model: Path
):
    open_front_door(browser, open_service.url)
    fill_submit_form(
        browser, model, builtin_dataset="builtin:digits", fields=LONG_FIELDS, config=SMALL_BATCHES
    )
    job_id = click_submit(browser)
    eta = wait_until(
        browser,
        lambda d: re.search(
            r"about \d+ (h|min|s)\b.* left", d.find_element(By.ID, "progress-text").text
        ),
        90,
        "an ETA",
    )
    running = httpx.get(f"{open_service.url}/jobs/{job_id}").json()
    assert running["state"] == "running" and running["eta_s"] is not None, (eta, running)
    browser.find_element(By.ID, "cancel").click()
    wait_until(browser, lambda d: job_page_state(d) == "cancelled", 60, "the job to stop")
    job = httpx.get(f"{open_service.url}/jobs/{job_id}").json()
    assert job["state"] == "cancelled"
    assert text_of(browser, "#error .problem-detail") == words(job["error"]["message"])
    assert not browser.find_element(By.ID, "cancel").is_displayed()


def test_a_key_entered_once_is_kept_for_the_tab_and_sent(
    keyed_api: Cluster, browser: WebDriver, model: Path
):
    url = keyed_api.url
    key = create_key(keyed_api, "browser")
    refusals = {
        name: httpx.get(f"{url}/jobs", headers=headers).json()
        for name, headers in (("none", {}), ("wrong", {"Authorization": "Bearer not-a-key"}))
    }

    # No key yet: the page asks for one and says why the API refused.
    open_front_door(browser, url)
    assert browser.find_element(By.ID, "api-key").is_displayed()
    assert text_of(browser, "#auth-problem .problem-detail") == refusals["none"]["detail"]
    assert refusals["none"]["hint"] in text_of(browser, "#auth-problem .problem-hint")

    def use_key(value: str) -> None:
        browser.find_element(By.ID, "api-key").send_keys(value)
        click_and_reload(browser, "#key-form button[type=submit]")

    use_key("not-a-key")
    assert text_of(browser, "#auth-problem .problem-detail") == refusals["wrong"]["detail"]
    click_and_reload(browser, "#key-forget")
    assert browser.execute_script("return sessionStorage.getItem('harden.apiKey')") is None
    use_key(key)
    assert browser.execute_script("return sessionStorage.getItem('harden.apiKey')") == key
    assert not browser.find_element(By.ID, "auth-problem").is_displayed()
    assert browser.find_element(By.ID, "jobs-status").text.startswith("No jobs yet")

    # The key goes with the upload, the event stream and the cancel (no worker: it stays queued).
    fill_submit_form(browser, model, builtin_dataset="builtin:digits")
    job_id = click_submit(browser)
    assert httpx.get(f"{url}/jobs/{job_id}").status_code == 401
    wait_until(browser, lambda d: job_page_state(d) == "queued", 20, "the job's first event")
    assert "1 update" in browser.find_element(By.ID, "live").text
    browser.find_element(By.ID, "cancel").click()
    wait_until(browser, lambda d: job_page_state(d) == "cancelled", 20, "the cancel")
    job = httpx.get(f"{url}/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}).json()
    assert job["state"] == "cancelled"
    assert text_of(browser, "#error .problem-detail") == words(job["error"]["message"])

    open_front_door(browser, url)
    row = f"tr[data-job-id='{job_id}']"
    assert browser.find_element(By.CSS_SELECTOR, row).get_attribute("data-state") == "cancelled"
    assert key not in keyed_api.log("api")  # it travelled in headers, never in a URL
