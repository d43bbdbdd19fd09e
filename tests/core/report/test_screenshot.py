"""report.html of a real run, rendered by headless Chromium (Debian's /usr/bin/chromium): the
page draws, and the summary (the verdict's colour, the next step's command) is at the top."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from core.report.schema import Report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WIDTH, HEIGHT = 1200, 3000
# The next step's command block's background (report.html.j2's CSS: pre).
COMMAND_BACKGROUND = (0xF4, 0xF4, 0xF4)
# The verdict box's background per label (report.html.j2's CSS).
VERDICT_BACKGROUND = {
    "masked": (0xFD, 0xEC, 0xEA),
    "real gain": (0xEA, 0xFA, 0xF1),
    "no measurable gain": (0xFE, 0xF5, 0xE7),
}


def screenshot(page: Path, png: Path, profile: Path) -> None:
    """Chromium's screenshot of ``page`` into ``png`` (a WIDTH x HEIGHT window), offline."""
    subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
            f"--screenshot={png}", page.resolve().as_uri(),
        ],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_chromium_renders_the_report_with_its_summary_on_top(
    audited_run: tuple[Report, Path], tmp_path: Path
) -> None:
    report, out = audited_run
    png = tmp_path / "report.png"
    screenshot(out / "report.html", png, tmp_path / "profile")
    image = Image.open(png).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    # Not blank: text, tables and plots leave a fair share of the page not white.
    pixels = image.resize((WIDTH // 4, HEIGHT // 4)).getdata()
    inked = sum(1 for r, g, b in pixels if min(r, g, b) < 200)
    assert inked / len(pixels) > 0.02
    # The verdict's box and the next step's command are in the first screenful.
    assert report.verdict is not None
    top = image.crop((0, 0, WIDTH, 1000))
    pixels = {colour: count for count, colour in top.getcolors(maxcolors=WIDTH * 1000) or []}
    assert pixels.get(VERDICT_BACKGROUND[report.verdict.label], 0) > 20_000  # a box, not a dot
    assert pixels.get(COMMAND_BACKGROUND, 0) > 20_000
    # And the plots, well below it, are drawn (their PNGs decoded: many distinct colours).
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 200
