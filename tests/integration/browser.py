"""Debian's Chromium driven by Selenium through /usr/bin/chromedriver (no browser download), and
the service as `make run` starts it, for the front door's tests and docs/screenshots.py."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.integration.conftest import Cluster, base_env

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Headless, and nothing that reaches out on its own (updates, sync, field trials, QUIC probes).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


@contextmanager
def chromium(
    downloads: Path | None = None, size: tuple[int, int] = (1400, 1000)
) -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile (removed afterwards); files it downloads land
    in ``downloads``."""
    profile = tempfile.mkdtemp(prefix="harden-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    if downloads is not None:
        options.add_experimental_option(
            "prefs",
            {"download.default_directory": str(downloads), "download.prompt_for_download": False},
        )
    # The driver's path given: Selenium Manager (which would download one) never runs.
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def start_service(workdir: Path, *, embedded: bool = True, **settings: str) -> Cluster:
    """`harden serve --embedded` in ``workdir`` (its var/ holds the SQLite files and artifacts)
    on a free port, or without ``embedded`` the same API with no worker (jobs stay queued);
    ``settings``: HARDEN_* variables, e.g. HARDEN_AUTH="keys"."""
    env = base_env(workdir)  # the embedded defaults: no database, broker or folder settings
    for name in ("HARDEN_ARTIFACT_DIR", "HARDEN_UPLOAD_DIR", "HARDEN_WORK_DIR"):
        env.pop(name)
    (workdir / "var").mkdir(exist_ok=True)
    cluster = Cluster(env | settings, workdir)
    cluster.start_api(*(["--embedded"] if embedded else []))
    return cluster


def wait_until(
    driver: WebDriver, condition: Callable[[WebDriver], Any], timeout_s: float, what: str
) -> Any:
    """``condition``'s first truthy value; on a timeout, says what was awaited, where, and what
    the page showed."""
    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(condition)
    except TimeoutException:
        shown = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(
            f"timed out after {timeout_s} s waiting for {what} at {driver.current_url}; the "
            f"page showed:\n{shown}"
        ) from None


def fill_submit_form(
    driver: WebDriver,
    model: Path,
    *,
    builtin_dataset: str | None = None,
    dataset_file: Path | None = None,
    fields: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fill the front door's form as a user would: the files, the dataset, the setting
    ``fields`` (by element id: a select's value or an input's text), then ``config`` merged
    into the JSON box. Returns the config the form will send; the caller clicks Submit."""
    driver.find_element(By.ID, "model").send_keys(str(model))
    if dataset_file is not None:
        driver.find_element(By.ID, "dataset-file").send_keys(str(dataset_file))
    if builtin_dataset is not None:
        Select(driver.find_element(By.ID, "builtin-dataset")).select_by_value(builtin_dataset)
    for element_id, value in (fields or {}).items():
        element = driver.find_element(By.ID, element_id)
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)
    box = driver.find_element(By.ID, "config")
    sent: dict[str, Any] = json.loads(box.get_property("value"))
    if config:
        sent = _merged(sent, config)
        box.clear()
        box.send_keys(json.dumps(sent))
    return sent


def _merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for name, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = _merged(merged[name], value)
        else:
            merged[name] = value
    return merged


def click_submit(driver: WebDriver) -> str:
    """Click the form's Submit and wait for the job page it opens; the job's id."""
    driver.find_element(By.ID, "submit").click()
    wait_until(driver, lambda d: "/ui/jobs/" in d.current_url, 30, "the job page")
    return str(driver.current_url).rsplit("/", 1)[1]


def job_page_state(driver: WebDriver) -> str:
    """The state the job page shows (its data-state: what the page last heard of the job)."""
    return driver.find_element(By.ID, "job").get_attribute("data-state") or ""
