"""API keys: created by an operator (``harden-service keys``), checked on every request.

Only a key's sha256 is stored; a key is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.infra.db import ApiKey, make_sessionmaker, utcnow


class ApiKeyStore:
    """Typed access to the ``api_keys`` table."""

    def __init__(self, engine: Engine) -> None:
        self._sessions: sessionmaker[Session] = make_sessionmaker(engine)

    def create(self, name: str) -> str:
        """Create a key called ``name`` and return it; only its sha256 is stored."""
        key = "hk_" + secrets.token_urlsafe(32)
        with self._sessions() as session:
            session.add(ApiKey(name=name, key_hash=hash_api_key(key)))
            session.commit()
        return key

    def owner(self, key: str) -> str | None:
        """The owner name of an active key, or None."""
        with self._sessions() as session:
            row = session.scalars(
                select(ApiKey).where(
                    ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None)
                )
            ).first()
            return row.name if row else None

    def revoke(self, name: str) -> bool:
        """Revoke the active key called ``name``; False when there is none."""
        with self._sessions() as session:
            result = session.execute(
                update(ApiKey)
                .where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            session.commit()
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def all_keys(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        with self._sessions() as session:
            return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def hash_api_key(key: str) -> str:
    """sha256 of a key. A slow password hash (bcrypt, argon2) is not needed: keys are 256-bit
    random tokens, so brute force is out of reach whatever the hash speed, and a plain digest
    lets the lookup use a unique index."""
    return hashlib.sha256(key.encode()).hexdigest()
