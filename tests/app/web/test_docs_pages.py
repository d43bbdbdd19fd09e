"""/docs and /redoc work without internet: every script, style and icon comes from the service."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_page_loads_everything_from_the_service(api: TestClient, page: str) -> None:
    response = api.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "/openapi.json" in html
    # No CDN (FastAPI's default pages load Swagger UI and ReDoc from cdn.jsdelivr.net, and
    # ReDoc's fonts from Google): a machine without internet would show a blank page.
    assert not re.search(r"https?://|//cdn", html)
    assets = set(re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html))
    assert any(asset.endswith(".js") for asset in assets), assets
    for asset in assets:
        fetched = api.get(asset)
        assert fetched.status_code == 200 and len(fetched.content) > 1000, asset
