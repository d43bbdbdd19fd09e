"""Alembic migrations of the job store (packaged with the app so `harden serve` can run them)."""
