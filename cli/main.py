"""The ``harden`` command line.

``harden run`` runs the whole pipeline locally (core only). The service commands (``serve``,
``worker``, ``submit``, ``status``, ``download``, ``keys``) live in :mod:`cli.service` and import
the web or queue code only when called, so ``harden run`` never loads FastAPI or Celery.
"""

from __future__ import annotations

import typer

from cli import run_cmd, service

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Harden image classifiers.")
run_cmd.register(app)
service.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
