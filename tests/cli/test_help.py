"""``harden --version``, ``-h`` beside ``--help`` on every command, and the exit codes in the
help (README: Exit codes)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import click
import typer
from typer.testing import CliRunner

from cli.gate import EXIT_CODES_HELP, EXIT_GATE, EXIT_JOB_FAILED, EXIT_OK, EXIT_USAGE
from cli.main import app

runner = CliRunner()


def command_paths() -> list[list[str]]:
    """Every command and subcommand of ``harden``, as the words that call it."""
    group = typer.main.get_command(app)
    paths: list[list[str]] = [[]]
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        paths.append([name])
        paths.extend([name, sub] for sub in getattr(command, "commands", {}))
    return paths


def test_version_prints_the_installed_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"harden {version('harden')}"


def test_dash_h_is_help_on_every_command() -> None:
    paths = command_paths()
    assert ["jobs"] in paths and ["keys", "create"] in paths and ["run"] in paths
    for path in paths:
        short, long = runner.invoke(app, [*path, "-h"]), runner.invoke(app, [*path, "--help"])
        assert short.exit_code == 0 and long.exit_code == 0, (path, short.output)
        assert short.stdout == long.stdout and "Usage:" in short.stdout, path


def test_the_exit_codes_are_in_the_help_of_harden_run_and_submit() -> None:
    words = " ".join(EXIT_CODES_HELP.split())
    for path in ([], ["run"], ["submit"]):
        text = " ".join(runner.invoke(app, [*path, "--help"]).stdout.split())
        # Rich draws a box around options only: the epilog is plain text.
        assert "Exit codes: 0 done" in text and "3 a --fail-on gate tripped" in text, path
    assert "3 a --fail-on gate tripped" in words


def test_the_readme_lists_every_exit_code() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    codes = sorted({EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_GATE})
    rows = re.findall(r"^\| (\d) \| ", readme, flags=re.MULTILINE)
    assert [int(code) for code in rows] == codes == [0, 1, 2, 3]
    for code in codes:
        assert f"{code} " in EXIT_CODES_HELP


def test_every_option_and_argument_of_every_command_has_help() -> None:
    # harden submit --help listed --teacher-epochs, --batch-size ... with nothing beside them.
    def walk(command: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    commands = list(walk(typer.main.get_command(app), []))
    assert len(commands) > 10
    missing = [
        (" ".join(path), parameter.name)
        for path, command in commands
        for parameter in command.params
        if not (getattr(parameter, "help", None) or "").strip()
    ]
    assert not missing, missing


def test_no_settings_section_is_a_text_option() -> None:
    # A section (certification, corruptions, baseline, a method's own settings) is JSON in
    # --config; as a text option its value could only fail validation.
    from pydantic import BaseModel

    from cli.run_options import _is_section, spec_options
    from core.contract.spec import HardenSpec

    sections = {n for n, f in HardenSpec.model_fields.items() if _is_section(f.annotation)}
    assert {"certification", "corruptions", "baseline", "smoothing", "evaluation"} <= sections
    assert not sections & set(spec_options())
    assert not _is_section(int) and not _is_section(str | None) and _is_section(BaseModel | None)
