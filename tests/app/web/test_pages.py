"""The front door's pages as the server renders them (tests/integration/test_front_door.py
drives them in a real browser): what they list comes from the contract, they ask for a key only
when the service does, and their policy lets no inline script run."""

from __future__ import annotations

from html.parser import HTMLParser

from fastapi.testclient import TestClient

from app.infra.settings import Settings
from app.web.main import create_app
from core.contract.methods import CATALOGUE, DEFAULT_METHOD
from core.names import BUILTIN_DATASETS


class _Elements(HTMLParser):
    """Start tags with their attributes, and whether any script has a body."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_script = False
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True


def parse(html: str) -> _Elements:
    elements = _Elements()
    elements.feed(html)
    return elements


def policy(response) -> dict[str, str]:
    header = response.headers["content-security-policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


def test_the_front_door_is_at_the_root_and_links_the_api_docs(api: TestClient):
    response = api.get("/", follow_redirects=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    elements = parse(response.text)
    links = {attrs.get("href") for tag, attrs in elements.tags if tag == "a"}
    assert "/docs" in links
    assert api.get("/docs").status_code == 200  # still there
    # Not an API operation: the OpenAPI document lists none at / or /ui/...
    paths = api.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(path.startswith("/ui") for path in paths)


def test_the_form_offers_the_contracts_methods_and_builtin_datasets(api: TestClient):
    elements = parse(api.get("/").text)
    options: dict[str, list[str]] = {}
    current = None
    for tag, attrs in elements.tags:
        if tag == "select":
            current = attrs.get("id")
        elif tag == "option" and current:
            options.setdefault(current, []).append(attrs.get("value") or "")
    assert options["method"] == list(CATALOGUE)
    selected = [a.get("value") for t, a in elements.tags if t == "option" and "selected" in a]
    assert DEFAULT_METHOD in selected
    assert options["builtin-dataset"] == list(BUILTIN_DATASETS)
    # The file parts are the ones POST /harden takes.
    file_inputs = {
        a.get("name") for t, a in elements.tags if t == "input" and a.get("type") == "file"
    }
    assert file_inputs == {"model", "dataset"}


def test_the_pages_say_whether_the_service_asks_for_a_key(api: TestClient, settings: Settings):
    def auth_of(client: TestClient, path: str) -> str | None:
        body = [a for t, a in parse(client.get(path).text).tags if t == "body"]
        return body[0].get("data-auth")

    job_page = "/ui/jobs/" + "0" * 32
    assert auth_of(api, "/") == "keys" and auth_of(api, job_page) == "keys"
    with TestClient(create_app(settings.model_copy(update={"auth": "open"}))) as open_api:
        assert auth_of(open_api, "/") == "open" and auth_of(open_api, job_page) == "open"


def test_no_inline_script_and_a_policy_that_allows_none(api: TestClient):
    for path in ("/", "/ui/jobs/" + "a" * 32):
        response = api.get(path)
        elements = parse(response.text)
        assert not elements.inline_script
        assert not any(name.startswith("on") for _, attrs in elements.tags for name in attrs), (
            "an inline event handler"
        )
        rules = policy(response)
        assert rules["script-src"] == "'self'" and rules["default-src"] == "'none'"
        assert rules["frame-ancestors"] == "'none'" and rules["connect-src"] == "'self'"
        # Every script and style sheet the page names is served.
        assets = [(attrs["src"], "javascript") for tag, attrs in elements.tags if tag == "script"]
        assets += [
            (attrs["href"], "css")
            for tag, attrs in elements.tags
            if tag == "link" and attrs.get("rel") == "stylesheet"
        ]
        assert len(assets) >= 3  # api.js, the page's script, style.css
        for asset, kind in assets:
            served = api.get(asset)
            assert served.status_code == 200, asset
            assert kind in served.headers["content-type"]


def test_the_job_page_refuses_what_is_not_a_job_id(api: TestClient):
    response = api.get("/ui/jobs/..%2Fsecret")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["hint"]
