"""Common corruptions (core.audit.corruptions): each deterministic per seed, in range, shape kept,
stronger with severity, for grayscale and colour; the section in a real job's report."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from core.audit.corruptions import (
    COLOUR,
    GRAYSCALE,
    brightness,
    corrupt,
    corruption_robustness,
    pixelate,
)
from core.audit.schema import Verdict
from core.audit.verdict import with_corruptions
from core.contract.corruptions import CorruptionsSpec
from core.contract.spec import HardenSpec
from core.errors import JobCancelledError
from core.pipeline import run
from core.report.schema import Report
from tests.core.model_files import digits, write_model


def _images(channels: int, size: int) -> torch.Tensor:
    # Smooth images with structure (a bright blob on a dark field, as digits are), in [0, 16]
    # like builtin:digits, so blur and pixelation have edges to change.
    axis = torch.linspace(-1, 1, size)
    blob = torch.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) * 4)
    shift = torch.rand(6, channels, 1, 1, generator=torch.Generator().manual_seed(0))
    return 16 * (0.8 * blob * (0.5 + 0.5 * shift))


CASES = [(name, 1, 28) for name in GRAYSCALE] + [(name, 1, 8) for name in GRAYSCALE]
CASES += [(name, 3, 32) for name in COLOUR]


@pytest.mark.parametrize(("name", "channels", "size"), CASES)
def test_a_corruption_is_seeded_in_range_shape_kept_and_grows_with_severity(
    name: str, channels: int, size: int
) -> None:
    x = _images(channels, size)
    change = []
    for severity in range(1, 6):
        out = corrupt(x, name, severity, seed=7, input_range=(0.0, 16.0))
        assert torch.equal(out, corrupt(x, name, severity, seed=7, input_range=(0.0, 16.0)))
        assert out.shape == x.shape and out.dtype == x.dtype
        assert float(out.min()) >= 0.0 and float(out.max()) <= 16.0
        change.append(float((out - x).abs().mean()))
    assert change[4] > change[0] >= 0.0, change  # severity 5 changes the images more than 1
    random = name not in {"contrast", "brightness", "gaussian_blur", "pixelate", "scale"}
    if random:  # another seed, other noise
        other = corrupt(x, name, 5, seed=8, input_range=(0.0, 16.0))
        assert not torch.equal(other, corrupt(x, name, 5, seed=7, input_range=(0.0, 16.0)))


def test_the_section_is_in_a_real_jobs_report_and_its_numbers_agree(tmp_path: Path) -> None:
    spec = HardenSpec.model_validate(
        {
            "dataset": "builtin:digits",
            "temperature": 20.0,
            "teacher_epochs": 0,
            "student_epochs": 2,
            "batch_size": 64,
            "evaluation": {"enabled": False},
            "corruptions": {"samples": 120, "severities": [1, 3, 5]},
        }
    )
    result = run(spec, write_model("torchscript", tmp_path), None, tmp_path / "out", device="cpu")
    report = Report.model_validate_json(result.artifacts["report.json"].read_text())
    section = report.corruptions
    assert section is not None and section.family == "grayscale" and section.samples == 120
    assert "corruptions" in report.timings_s
    assert {row.corruption for row in section.per_corruption} == set(GRAYSCALE)
    assert len(section.accuracies) == len(GRAYSCALE) * 3
    for model in ("uploaded", "student"):
        mean = sum(getattr(row, model) for row in section.accuracies) / len(section.accuracies)
        assert math.isclose(section.mean_corruption_accuracy[model], mean, abs_tol=1e-6)
    up, st = (section.mean_corruption_accuracy[m] for m in ("uploaded", "student"))
    assert math.isclose(section.drop_points, 100 * (up - st), abs_tol=1e-4)
    assert section.relative_change is not None
    assert math.isclose(section.relative_change, (st - up) / up, abs_tol=1e-6)
    # The trained MLP sees its clean digits best: corruption costs it accuracy on average.
    assert section.clean["uploaded"] > up
    assert "Common corruptions" in result.artifacts["report.html"].read_text()


def test_the_headline_names_the_corruptions_only_beyond_margin_and_noise() -> None:
    data = digits()
    x, y = data.x_test[:200], data.y_test[:200]
    torch.manual_seed(0)
    good = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    optimizer = torch.optim.Adam(good.parameters(), lr=0.05)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(good(data.x_train / 16), data.y_train).backward()
        optimizer.step()

    class Scale(torch.nn.Module):  # the digits' range [0, 16] to the model's [0, 1]
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return inputs / 16

    class Constant(torch.nn.Module):  # always the first test label: far weaker everywhere
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(torch.full((len(inputs),), int(y[0])), 10).float()

    settings = CorruptionsSpec(names=["contrast", "rotate"], severities=[1, 2], margin=5.0)
    scaled = torch.nn.Sequential(Scale(), good)
    cpu = torch.device("cpu")
    worse = corruption_robustness(
        scaled, Constant(), x, y, settings, input_range=(0.0, 16.0), device=cpu
    )
    same = corruption_robustness(
        scaled, scaled, x, y, settings, input_range=(0.0, 16.0), device=cpu
    )
    assert worse.weaker_under == ["contrast", "rotate"] and same.weaker_under == []
    assert same.drop_points == 0.0 and same.noise_points == 0.0
    verdict = Verdict(label="real gain", headline="Robust to the threat model.", evidence=[],
                      paper_attacks_gain=False)  # fmt: skip
    assert "Weaker under contrast/rotate" in with_corruptions(verdict, worse).headline
    assert with_corruptions(verdict, same).headline == verdict.headline


def test_colour_brightness_shifts_hsv_value_as_cifar_10_c_does() -> None:
    # Checked against the standard library's HSV conversion, pixel by pixel.
    import colorsys

    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x[0, :, 0, 0] = 0.0  # black: V = 0, becomes grey
    out = brightness(x, 5, torch.Generator())
    for n, i, j in ((0, 0, 0), (0, 1, 2), (1, 3, 3), (1, 0, 1)):
        h, s, v = colorsys.rgb_to_hsv(*x[n, :, i, j].tolist())
        expected = colorsys.hsv_to_rgb(h, s, min(1.0, v + 0.3))
        assert out[n, :, i, j].tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_pixelate_is_pil_box_down_then_box_up(severity: int) -> None:
    # CIFAR-10-C's pixelate is PIL's BOX resize down by the severity's factor and back up;
    # PIL rounds to uint8 after each step, so within one level of 255.
    import numpy as np
    from PIL import Image

    image = (np.random.default_rng(severity).random((32, 32, 3)) * 255).astype(np.uint8)
    side = int(32 * (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1])
    pil = Image.fromarray(image).resize((side, side), Image.BOX).resize((32, 32), Image.BOX)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].to(torch.float64) / 255
    ours = pixelate(x, severity, torch.Generator())[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(ours - np.asarray(pil)).max() <= 1.0 + 1e-9


def test_progress_counts_cells_and_a_cancel_stops_between_them() -> None:
    data = digits()
    x, y = data.x_test[:50], data.y_test[:50]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    settings = CorruptionsSpec(names=["contrast", "rotate"], severities=[1, 2, 3])
    cpu = torch.device("cpu")
    calls: list[tuple[str, int, int]] = []
    corruption_robustness(
        model, model, x, y, settings, input_range=(0.0, 16.0), device=cpu,
        on_progress=lambda stage, done, total: calls.append((stage, done, total)),
    )  # fmt: skip
    assert calls == [("corruptions", done, 6) for done in range(1, 7)]
    polls: list[int] = []

    def cancel_at_the_third_cell() -> bool:
        polls.append(1)
        return len(polls) == 3

    with pytest.raises(JobCancelledError):
        corruption_robustness(
            model, model, x, y, settings, input_range=(0.0, 16.0), device=cpu,
            should_cancel=cancel_at_the_third_cell,
        )  # fmt: skip
    assert len(polls) == 3
