"""Service commands: serve, worker, submit, status, download, keys."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the service commands to ``app``. (Filled in by the service work.)"""
