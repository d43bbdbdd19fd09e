"""POST /harden refuses, through the real app, what the job contract now refuses (issue 25):
numbers and switches of the wrong JSON type, and dot segments in an s3:// dataset key."""

from __future__ import annotations

import pytest

from tests.app.conftest import onnx_model_bytes
from tests.app.web.test_submit import CONFIG, assert_nothing_left, assert_problem, post


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("student_epochs", "2", "config.distillation.student_epochs"),
        ("student_epochs", True, "config.distillation.student_epochs"),
        ("temperature", "100", "config.distillation.temperature"),
        ("distillation", {"temperature": "100"}, "config.distillation.temperature"),
        ("batch_size", 64.0, "config.batch_size"),
        ("evaluation", {"enabled": 0}, "config.evaluation.enabled"),
        ("evaluation", {"samples": "100"}, "config.evaluation.samples"),
        ("robust", {"fast": "true"}, "config.robust.fast"),
        ("input_range", ["0", "1"], "config.input_range.0"),
    ],
)
def test_numbers_and_switches_of_the_wrong_type_are_refused(
    field, value, where, api, auth, store, settings
):
    config = CONFIG | {field: value}
    body = assert_problem(post(api, auth, onnx_model_bytes(), config), 422, "invalid_spec")
    # A union's field is named per member (config.evaluation.samples.constrained-int).
    fields = [error["field"] for error in body["errors"]]
    assert any(f == where or f.startswith(where + ".") for f in fields), fields
    assert_nothing_left(store, settings)


def test_json_integers_are_accepted_for_float_fields(api, auth):
    config = CONFIG | {"temperature": 20, "learning_rate": 1, "input_range": [0, 1]}
    response = post(api, auth, onnx_model_bytes(), config)
    assert response.status_code == 202, response.text
    assert response.json()["spec"]["distillation"]["temperature"] == 20.0


@pytest.mark.parametrize(
    "ref", ["s3://bucket/../../key.npz", "s3://bucket/./key.npz", "s3://bucket/a//key.npz"]
)
def test_dot_segments_in_an_s3_key_are_refused(ref, api, auth, store, settings):
    config = CONFIG | {"dataset": ref}
    body = assert_problem(post(api, auth, onnx_model_bytes(), config), 422, "invalid_spec")
    assert "segments" in body["detail"] + str(body["errors"])
    assert_nothing_left(store, settings)


def test_the_flat_distillation_form_is_accepted_with_a_warning(api, auth):
    base = {"dataset": "builtin:digits", "evaluation": {"enabled": False}}
    flat = post(api, auth, onnx_model_bytes(), base | {"temperature": 20})
    assert flat.status_code == 202, flat.text
    assert flat.json()["spec"]["distillation"]["temperature"] == 20.0
    assert flat.headers["Warning"] == (
        '299 harden "temperature at the top level is deprecated: give it as '
        'distillation.temperature"'
    )
    nested = post(api, auth, onnx_model_bytes(), base | {"distillation": {"temperature": 20}})
    assert nested.status_code == 202 and "Warning" not in nested.headers
