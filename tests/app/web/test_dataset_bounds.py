"""Datasets bounded in work at upload, through the real app (issue 25): an archive bomb, images
past the pixel bounds and malformed .npy headers are a 422 naming the limit or the array, on
POST /harden and POST /datasets alike, and leave nothing behind."""

from __future__ import annotations

import pytest

from tests.app.conftest import onnx_model_bytes
from tests.app.web.test_submit import assert_nothing_left, assert_problem, post
from tests.core.archive_files import image_zip, malformed_npz, png_claiming, tar_bomb

GIB = 1024**3


def _submit(api, auth, data: bytes):  # type: ignore[no-untyped-def]
    return post(api, auth, onnx_model_bytes(), dataset=data)


def _register(api, auth, data: bytes):  # type: ignore[no-untyped-def]
    return api.post("/datasets", files={"dataset": ("data", data)}, headers=auth)


ROUTES = {"POST /harden": _submit, "POST /datasets": _register}


def _folder(image: bytes, per_class: int = 2) -> bytes:
    return image_zip({f"{c}/{i}.png": image for c in "ab" for i in range(per_class)})


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_tar_bz2_bomb_is_refused_naming_the_limit(route, api, auth, store, settings):
    # 8 GiB of zeros after the tar's last entry, in a few tens of KB.
    bomb = tar_bomb("bz2", 8 * GIB)
    body = assert_problem(ROUTES[route](api, auth, bomb), 422, "invalid_dataset")
    assert "decompression bomb" in body["detail"] and "100 times its size" in body["detail"]
    assert body["limit_bytes"] < 100 * 1024**2 and "PNG or JPEG" in body["hint"]
    assert_nothing_left(store, settings)


@pytest.mark.parametrize("side", [12_000, 20_000])  # 20000: past Pillow's own bomb error
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_images_past_the_pixel_bound_are_refused_at_upload(route, side, api, auth, store, settings):
    dataset = _folder(png_claiming(side, side))
    assert len(dataset) < 4000
    body = assert_problem(ROUTES[route](api, auth, dataset), 422, "invalid_dataset")
    assert "16,777,216 pixels per image" in body["detail"]
    assert body["limit_pixels"] == 4096 * 4096 and "4096x4096" in body["hint"]
    assert_nothing_left(store, settings)


def test_a_dataset_past_the_pixel_bound_is_refused_at_upload(api, auth, store, settings):
    dataset = _folder(png_claiming(4096, 4096), per_class=15)
    body = assert_problem(_submit(api, auth, dataset), 422, "invalid_dataset")
    assert "500,000,000 pixels, the limit per dataset" in body["detail"]
    assert_nothing_left(store, settings)


def test_images_inside_the_bounds_are_accepted(api, auth):
    response = _submit(api, auth, _folder(png_claiming(64, 64)))
    assert response.status_code == 202, response.text


MALFORMED = malformed_npz()


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_malformed_npy_header_is_422_not_500(route, case, api, auth, store, settings):
    body = assert_problem(ROUTES[route](api, auth, MALFORMED[case]), 422, "invalid_dataset")
    assert "x" in body["detail"] and body["hint"]
    assert_nothing_left(store, settings)
