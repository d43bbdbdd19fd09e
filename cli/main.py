"""The ``harden`` command line.

``harden run`` runs the whole pipeline locally (core only). The service commands (``serve``,
``worker``, ``submit``, ``status``, ``download``, ``keys``) live in :mod:`cli.service` and import
the web or queue code only when called, so ``harden run`` never loads FastAPI or Celery.
"""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError

from cli import run_cmd, service

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Harden image classifiers.")
run_cmd.register(app)
service.register(app)


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
