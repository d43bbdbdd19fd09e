"""The README runs as pasted, and examples/ci/harden.sh gates on the verdict, against a real
service started as `make run` starts it (`harden serve --embedded`), on a free port.

The README's shell blocks (and its Python blocks, with .venv/bin/python) run in order in one
bash, in a folder laid out like a fresh clone, with no virtualenv on PATH and no HARDEN_*
variable but those the README sets; the only change is the port, 8102 in the README. A block
preceded by ``<!-- skip-test: why -->`` is left out; the skipped ones are few and named here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.infra.api_keys import ApiKeyStore
from app.infra.db import make_engine
from tests.integration.conftest import ROOT, Cluster, base_env
from tests.worker.real_pipeline import QUICK_SPEC, TINY_EVALUATION, digits_torchscript

pytestmark = pytest.mark.integration

README_PORT = "8102"
# Every skipped block, by its reason: long-running commands only.
EXPECTED_SKIPS = {
    "long-running: make run serves until Ctrl-C, make test runs every check",
    "serves until Ctrl-C; the test starts the same command on a free port",
    "minutes: trains an MNIST CNN, then the default evaluation",
}
_BLOCK = re.compile(
    r"(?:<!-- skip-test: (?P<skip>[^\n]*?) -->\n)?```(?P<kind>sh|bash|python)\n(?P<code>.*?)```",
    re.DOTALL,
)


@dataclass(frozen=True)
class Block:
    kind: str
    code: str
    skip: str | None


def readme_blocks() -> list[Block]:
    text = (ROOT / "README.md").read_text()
    return [Block(m["kind"], m["code"], m["skip"]) for m in _BLOCK.finditer(text)]


def fresh_clone(folder: Path) -> Path:
    """``folder`` with every tracked top-level entry of the repository linked in, and .venv
    (which `make` creates in a clone): files the README makes land in ``folder``."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in sorted({path.split("/")[0] for path in tracked} | {".venv"}):
        (folder / name).symlink_to(ROOT / name)
    return folder


def user_shell_env() -> dict[str, str]:
    """A user's shell: no virtualenv activated, no HARDEN_* variable."""
    venv_bin = str(ROOT / ".venv" / "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HARDEN_", "PYTHON", "VIRTUAL_ENV", "PYTEST"))
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    clone = fresh_clone(tmp_path_factory.mktemp("clone"))
    # As `make run` does: .venv/bin/harden serve --embedded (host and port from the Makefile).
    env = base_env(clone) | {"HARDEN_PROGRESS_INTERVAL_S": "0.2"}
    for name in ("HARDEN_ARTIFACT_DIR", "HARDEN_UPLOAD_DIR", "HARDEN_WORK_DIR"):
        env.pop(name)  # the embedded defaults under var/, as make run has them
    cluster = Cluster(env, clone)
    cluster.start_api("--embedded")
    yield cluster
    cluster.stop()


def test_the_makefile_passes_the_port_to_harden_serve():
    dry_run = subprocess.run(
        ["make", "-n", "run", f"PORT={README_PORT}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f".venv/bin/harden serve --embedded --host 127.0.0.1 --port {README_PORT}" in dry_run


def test_the_readme_runs_as_pasted(service: Cluster):
    blocks = readme_blocks()
    skipped = {block.skip for block in blocks if block.skip}
    assert skipped == EXPECTED_SKIPS
    assert len(skipped) <= 4 and len(blocks) >= 7
    port = service.url.rsplit(":", 1)[1]
    script = ["set -euo pipefail"]
    for block in blocks:
        if block.skip:
            continue
        code = block.code.replace(f"127.0.0.1:{README_PORT}", f"127.0.0.1:{port}")
        if block.kind == "python":
            code = f".venv/bin/python - <<'PYTHON_BLOCK'\n{code}PYTHON_BLOCK\n"
        script.append(code)
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=service.workdir,
        env=user_shell_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    clone = service.workdir
    assert (clone / "model.onnx").stat().st_size > 0
    assert "<html" in (clone / "report.html").read_text().lower()
    for folder in ("out", "out-curl", "out-python"):
        assert {p.name for p in (clone / folder).iterdir()} >= {"model.onnx", "report.json"}
    assert '"state": "succeeded"' in result.stdout  # curl GET /jobs/$JOB and harden status
    # The key the README made is in the service's own database (var/harden.db of the clone).
    keys = ApiKeyStore(make_engine(f"sqlite:///{clone}/var/harden.db")).all_keys()
    assert "ci-pipeline" in [key.name for key in keys]
    assert re.search(r"harden: exit [03]; verdict", result.stdout), result.stdout[-2000:]


@pytest.mark.parametrize(
    ("temperature", "label", "exit_code"), [(100, "masked", 3), (1, "no measurable gain", 0)]
)
def test_the_ci_script_fails_on_a_masked_verdict(
    service: Cluster, tmp_path: Path, temperature: int, label: str, exit_code: int
):
    model = tmp_path / "model.pt"
    model.write_bytes(digits_torchscript())
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(QUICK_SPEC | {"temperature": temperature, "evaluation": TINY_EVALUATION})
    )
    out = tmp_path / "harden-out"
    result = subprocess.run(
        ["bash", str(ROOT / "examples" / "ci" / "harden.sh"), str(model)],
        cwd=tmp_path,
        env=user_shell_env()
        | {
            "HARDEN_URL": service.url,
            "HARDEN_CONFIG": str(config),
            "HARDEN_DATASET": "builtin:digits",
            "HARDEN_OUT": str(out),
            "GITHUB_ACTIONS": "true",
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads((out / "report.json").read_text())
    # The exit code follows the verdict the job reached, and the files are there either way.
    assert report["verdict"]["label"] == label, report["verdict"]
    assert result.returncode == exit_code, (result.stdout, result.stderr[-3000:])
    assert (out / "model.onnx").stat().st_size > 0 and (out / "report.html").exists()
    assert f"verdict {label}:" in result.stdout
    assert f"exit {exit_code}" in (tmp_path / "summary.md").read_text()
    assert ("::error title=harden::" in result.stdout) == (exit_code == 3)
    # The findings for code scanning: a masked verdict is an alert, and so is the tripped gate.
    sarif = json.loads((out / "harden.sarif").read_text())
    rules = {r["ruleId"] for r in sarif["runs"][0]["results"]}
    assert ("HARDEN001" in rules and "HARDEN002" in rules) == (label == "masked")


def test_the_github_workflow_runs_the_script_on_push():
    import yaml

    workflow = yaml.safe_load((ROOT / "examples" / "ci" / "github-actions.yml").read_text())
    # PyYAML reads the key `on` as the boolean True (YAML 1.1).
    assert "push" in workflow[True]
    steps = workflow["jobs"]["harden"]["steps"]
    gate = next(step for step in steps if "examples/ci/harden.sh" in step.get("run", ""))
    # It gates on the verdict and on a regression against the champion its spec names.
    assert gate["env"]["HARDEN_FAIL_ON"].split(",") == ["masked", "regression=2"]
    assert gate["env"]["HARDEN_CONFIG"] == "harden.json"
    assert (
        '{"baseline": {"mlflow_model"'
        in (ROOT / "examples" / "ci" / "github-actions.yml").read_text()
    )
    assert gate["env"]["HARDEN_API_KEY"] == "${{ secrets.HARDEN_API_KEY }}"
    upload = steps[-1]
    assert upload["uses"].startswith("actions/upload-artifact") and upload["if"] == "always()"
    assert upload["with"]["path"].rstrip("/") == gate["env"]["HARDEN_OUT"]
    # The SARIF harden.sh writes goes to code scanning, which needs the permission to take it.
    sarif = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload"))
    assert sarif["with"]["sarif_file"] == f"{gate['env']['HARDEN_OUT']}/harden.sarif"
    assert sarif["if"].startswith("always()")
    assert workflow["jobs"]["harden"]["permissions"]["security-events"] == "write"
