"""The ``harden`` command line.

``harden run`` runs the whole pipeline locally (core only). The service commands (``serve``,
``worker``, ``submit``, ``status``, ``jobs``, ``download``, ``keys``) live in :mod:`cli.service`
and import the web or queue code only when called, so ``harden run`` never loads FastAPI or
Celery. The exit codes are :mod:`cli.gate`'s.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

import typer
from pydantic import ValidationError

from cli import run_cmd, service
from cli.gate import EXIT_CODES_HELP

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Harden image classifiers.",
    epilog=EXIT_CODES_HELP,
    # -h as well as --help, on every command (click passes the names down to subcommands).
    context_settings={"help_option_names": ["-h", "--help"]},
)
run_cmd.register(app)
service.register(app)


def _print_version(value: bool) -> None:
    if value:
        try:
            number = version("harden")
        except PackageNotFoundError:  # run from a checkout that was never installed
            number = "unknown"
        typer.echo(f"harden {number}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print harden's version and exit.",
    ),
) -> None:
    """Harden image classifiers."""


def main() -> None:
    try:
        app()
    except ValidationError as error:
        # Only the service settings (HARDEN_* variables) reach here: options of `harden run` are
        # reported by run_cmd itself. One line per bad setting, not a traceback.
        print(f"harden: invalid configuration ({error.title}):", file=sys.stderr)
        for problem in error.errors():
            where = ".".join(str(part) for part in problem["loc"])
            setting = f"HARDEN_{where.upper()}: " if where else ""
            print(f"  {setting}{problem['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
