"""docs/architecture.md's layout tree is the map of the code: every module is in it, and
everything in it exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "app", "worker", "cli", "client")
# Folders listed as one entry: their files are data or generated scripts, not modules to map.
OPAQUE = ("app/infra/migrations/", "core/report/templates/")


def documented_paths() -> set[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    tree = re.search(r"## Layout\n\n```\n(.*?)```", text, flags=re.S)
    assert tree, "docs/architecture.md has no layout tree under '## Layout'"
    paths: set[str] = set()
    stack: list[str] = []
    for line in tree.group(1).splitlines():
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"odd indentation in the tree: {line!r}"
        name = line.split()[0]
        del stack[indent // 2 :]
        path = "".join(stack) + name
        paths.add(path)
        if name.endswith("/"):
            stack.append(name)
    return paths


def code_paths() -> set[str]:
    found: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if path.name == "__init__.py" and package != "client":
                continue
            if relative.startswith(OPAQUE) or "__pycache__" in relative:
                continue
            if package == "client" and path.name == "__init__.py":
                relative = relative.removesuffix("__init__.py")
            found.add(relative)
    return found


def test_every_module_is_in_the_layout_tree() -> None:
    missing = code_paths() - documented_paths()
    assert not missing, f"modules missing from docs/architecture.md's tree: {sorted(missing)}"


def test_everything_in_the_layout_tree_exists() -> None:
    absent = sorted(p for p in documented_paths() if not (ROOT / p).exists())
    assert not absent, f"docs/architecture.md's tree names what is not there: {absent}"
