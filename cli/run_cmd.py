"""``harden run``: the whole pipeline on this machine, no server."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to ``app``. (Filled in by the foundation work.)"""
