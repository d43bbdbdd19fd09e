"""report.html reads as people write: budgets in 255ths where they are whole grey levels,
durations in s and min, no exponent such as 4e+02, no Python dicts or None."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from core.report.formatting import epsilon_text, number_text, seconds_text
from core.report.html import render_html
from core.report.schema import Report


@pytest.mark.parametrize(
    ("epsilon", "text"),
    [
        (8 / 255, "8/255"),
        (0.0313725, "8/255"),  # as a spec rounds it
        (0.00784314, "2/255"),
        (4 / 255, "4/255"),
        (0.3, "0.3"),
        (0.2, "0.2"),  # 51/255, but a short decimal reads better
        (0.25, "0.25"),
        (1.0, "1"),
        (3.0, "3"),
    ],
)
def test_a_budget_is_in_255ths_where_it_is_a_whole_grey_level(epsilon: float, text: str) -> None:
    assert epsilon_text(epsilon) == text


def test_a_budget_on_a_wider_range_says_both() -> None:
    assert epsilon_text(8.0, width=255.0) == "8/255 of the range (8)"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.42, "0.4 s"), (42.0, "42 s"), (400.0, "6 min 40 s"), (120.2, "2 min"), (3723, "1 h 2 min")],
)
def test_durations_are_in_seconds_and_minutes(seconds: float, text: str) -> None:
    assert seconds_text(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(400.0, "400"), (1234.5, "1,234"), (0.0123, "0.0123"), (2.15, "2.15"), (1e-30, "1×10⁻³⁰")],
)
def test_numbers_have_no_exponent_where_people_read_them(value: float, text: str) -> None:
    assert number_text(value) == text


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return " ".join(parser.parts)


def test_the_page_has_human_numbers(audited_run: tuple[Report, Path]) -> None:
    report = audited_run[0]
    assert report.evaluation is not None
    # A job of 400 s of training on a cifar-like threat model's budgets.
    timings = {**report.timings_s, "student": 400.0}
    evaluation = report.evaluation.model_copy(
        update={"epsilons_linf": [2 / 255, 8 / 255], "seconds": 61.0}
    )
    page = render_html(report.model_copy(update={"timings_s": timings, "evaluation": evaluation}))
    text = _text(page)
    assert "6 min 40 s" in text and "1 min 1 s" in text
    assert "L-inf 2/255, 8/255" in text and "0.0313" not in text and "0.00784" not in text
    assert not re.search(r"\d(\.\d+)?e[+-]\d", text), re.findall(r"\S*\de[+-]\d\S*", text)
    # The job's input is rows of text, not Python reprs.
    job = text[text.index("The job") :]
    assert "{'" not in job and "None" not in job and "[" not in job
    assert f"model: file {report.input['model']['file']}" in job
    shape = "×".join(map(str, report.input["dataset"]["input_shape"]))
    assert f"dataset: input shape {shape}" in job
