"""Platform keys kept in the database, so every worker on every machine shares them.

The address-hash key is one: suppression lists store a keyed hash of each address, and that hash
must stay the same for as long as the list exists, whatever happens to ``ZGODA_SECRET_KEY``.
The migration that creates the table creates the key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from zgoda.core.db import Base

ADDRESS_HASH_KEY = "address_hash"
_cache: dict[tuple[str, str], bytes] = {}
_lock = threading.Lock()


class PlatformKey(Base):
    """A named random key of the platform (hex)."""

    __tablename__ = "platform_keys"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))


def platform_key(session: Session, name: str) -> bytes:
    """The key ``name``, created on first use if the migration did not (cached per database)."""
    cache_key = (str(session.get_bind().engine.url), name)
    key = _cache.get(cache_key)
    if key is not None:
        return key
    with _lock:
        value = session.scalar(select(PlatformKey.value).where(PlatformKey.name == name))
        if value is None:
            value = secrets.token_hex(32)
            session.add(PlatformKey(name=name, value=value))
            session.flush()
        key = bytes.fromhex(value)
        _cache[cache_key] = key
    return key


def address_hasher(session: Session) -> Callable[[str], str]:
    """A function giving the keyed hash (hex HMAC-SHA256) of a normalised email address."""
    key = platform_key(session, ADDRESS_HASH_KEY)

    def address_hash(address: str) -> str:
        return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()

    return address_hash
