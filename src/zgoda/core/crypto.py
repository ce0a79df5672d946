"""Password hashing, random tokens, keyed hashes and canonical JSON for hash chains."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_password_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password``."""
    return _password_hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches; never raises for a wrong password or a broken hash."""
    try:
        return _password_hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = _password_hasher.hash("zgoda-timing-equaliser")


def burn_password_check(password: str) -> None:
    """Spend the time of one verification, so unknown accounts answer as slowly as known ones."""
    verify_password(_DUMMY_HASH, password)


def new_token(prefix: str = "", nbytes: int = 32) -> str:
    """A URL-safe random token, optionally prefixed (``zgk_...``) so leaked ones are recognisable."""
    return prefix + secrets.token_urlsafe(nbytes)


def sha256_hex(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


def keyed_hash(key: bytes, purpose: str, value: str) -> str:
    """HMAC-SHA256 of ``value`` under ``key``, separated by ``purpose`` so uses never collide."""
    return hmac.new(key, f"{purpose}\x00{value}".encode(), hashlib.sha256).hexdigest()


def constant_time_equal(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode(), right.encode())


def canonical_json(payload: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 text. Used for every chain hash."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
