"""Screenshots of the front door for docs/screenshots/ (`make screenshots`).

Starts the service as `make run` does (`harden serve --embedded`, in a temporary folder, on a
free port), submits jobs through the form in Debian's headless Chromium (a trained digits
classifier on builtin:digits, a job that fails on a mismatched dataset, a long one still
running), and saves:

* docs/screenshots/front-door.png: `/` with the three jobs and the submit form;
* docs/screenshots/job.png: the finished job's page (verdict, downloads, the report's top);
* docs/screenshots/report.png: that job's report.html, the whole page.

About a minute on a 2-core machine. Run from the repository root:
`PYTHONPATH=. .venv/bin/python docs/screenshots.py [OUT_FOLDER]`.
"""

from __future__ import annotations

import io
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.integration.browser import (
    chromium,
    click_submit,
    fill_submit_form,
    job_page_state,
    start_service,
    wait_until,
)
from tests.integration.test_embedded import rgb_images_npz
from tests.worker.real_pipeline import digits_torchscript

ROOT = Path(__file__).resolve().parents[1]
WINDOW = (1400, 1000)
# A job short enough to wait for that still runs every attack family of the default audit.
FINISHED_JOB = {
    "teacher-epochs": "2",
    "student-epochs": "10",
    "samples": "100",
}
# A job still running when the list is shot, with an ETA of some seconds at least.
LONG_JOB = {"teacher-epochs": "500", "student-epochs": "500", "samples": "200"}
SMALL_BATCHES = {"batch_size": 16}  # many steps of a small model: minutes on any machine
ETA_SHOWN = re.compile(r"about (\d+ min|\d{2,} s) left")


def submit(driver: WebDriver, url: str, model: Path, **form: object) -> str:
    """Submit through the form at ``url``; the id of the job whose page it opens."""
    driver.get(url + "/")
    fill_submit_form(driver, model, **form)  # type: ignore[arg-type]
    return click_submit(driver)


def save(driver: WebDriver, path: Path) -> None:
    """The window as a PNG of 256 colours (a third of the size, no visible loss on these pages)."""
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def full_page(driver: WebDriver, path: Path, width: int) -> None:
    """A screenshot of the whole page: the window made as tall as the document."""
    driver.set_window_size(width, 800)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, int(height) + 140)  # the window's frame is not viewport
    save(driver, path)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="harden-screenshots-") as folder:
        work = Path(folder)
        model = work / "digits_mlp.pt"
        model.write_bytes(digits_torchscript())
        mismatched = work / "rgb_images.npz"
        mismatched.write_bytes(rgb_images_npz())
        service = start_service(work)
        try:
            with chromium(size=WINDOW) as driver:
                submit(driver, service.url, model, dataset_file=mismatched)
                wait_until(driver, lambda d: job_page_state(d) == "failed", 120, "the failed job")
                started = time.monotonic()
                job_id = submit(
                    driver,
                    service.url,
                    model,
                    builtin_dataset="builtin:digits",
                    fields=FINISHED_JOB,
                )
                wait_until(
                    driver, lambda d: job_page_state(d) == "succeeded", 900, "the finished job"
                )
                wait_until(
                    driver,
                    lambda d: d.find_element(By.ID, "report").get_attribute("srcdoc"),
                    30,
                    "the report",
                )
                print(f"job {job_id} finished in {time.monotonic() - started:.0f} s")
                time.sleep(1)  # the frame's plots
                save(driver, out / "job.png")

                long_id = submit(
                    driver,
                    service.url,
                    model,
                    builtin_dataset="builtin:digits",
                    fields=LONG_JOB,
                    config=SMALL_BATCHES,
                )
                wait_until(
                    driver,
                    lambda d: ETA_SHOWN.search(d.find_element(By.ID, "progress-text").text),
                    120,
                    "the running job's ETA",
                )
                driver.get(service.url + "/")
                wait_until(
                    driver,
                    lambda d: "left" in d.find_element(By.ID, "jobs").text,
                    30,
                    "the running job's ETA in the list",
                )
                driver.set_window_size(WINDOW[0], WINDOW[1] + 150)  # the whole form
                save(driver, out / "front-door.png")
                httpx.post(f"{service.url}/jobs/{long_id}/cancel", timeout=10)

                report = work / "report.html"
                report.write_bytes(
                    httpx.get(f"{service.url}/jobs/{job_id}/report.html", timeout=30).content
                )
                driver.get(report.as_uri())
                full_page(driver, out / "report.png", width=1200)
        finally:
            service.stop()
    for name in ("front-door.png", "job.png", "report.png"):
        print(out / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
