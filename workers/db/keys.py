"""API keys: created and revoked by the ``keys`` command, looked up by the API.

A key is ``s2f_`` plus 32 random bytes; the database keeps only its SHA-256, which is enough
for a secret of that entropy (no salt or slow hash needed: nothing to brute-force).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from workers.db.models import ApiKey, utcnow

__all__ = [
    "KEY_PREFIX",
    "create_key",
    "find_key",
    "hash_key",
    "list_keys",
    "new_webhook_secret",
    "revoke_key",
]

KEY_PREFIX = "s2f_"
SHOWN_CHARS = 12  # how much of a key `keys list` shows, to tell keys apart


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def create_key(session: Session, name: str, *, admin: bool = False) -> tuple[ApiKey, str]:
    """A new key; the secret is returned here once and never stored. ``admin``: an
    operator's key, which may read /metrics too."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id="key_" + secrets.token_hex(8), name=name, prefix=secret[:SHOWN_CHARS],
                 secret_hash=hash_key(secret), webhook_secret=new_webhook_secret(),
                 created_at=utcnow(), admin=admin)
    session.add(key)
    session.flush()
    return key, secret


def find_key(session: Session, secret: str) -> ApiKey | None:
    """The live key with this secret, or None. The hash is compared in constant time."""
    digest = hash_key(secret)
    key = session.scalars(select(ApiKey).where(ApiKey.secret_hash == digest)).first()
    if key is None or key.revoked_at is not None:
        return None
    # The index found the row; compare again without an early exit, as a matter of form.
    return key if hmac.compare_digest(key.secret_hash, digest) else None


def list_keys(session: Session, *, include_revoked: bool = False) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query))


def revoke_key(session: Session, ident: str) -> ApiKey | None:
    """Revoke by id (``key_...``), name, or the shown prefix; None if no live key matches."""
    live = [key for key in list_keys(session)
            if ident in (key.id, key.name, key.prefix)]
    if not live:
        return None
    if len(live) > 1:
        names = ", ".join(key.id for key in live)
        raise ValueError(f"{ident!r} names {len(live)} keys ({names}); revoke one by its id")
    key = live[0]
    session.execute(update(ApiKey).where(ApiKey.id == key.id).values(revoked_at=utcnow()))
    return key

