"""Domain errors. They know nothing of HTTP: the web layer maps them to responses."""

from __future__ import annotations


class ZgodaError(Exception):
    """Base of every error a user can cause; ``detail`` is shown to them as is."""

    title = "Request failed"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidInput(ZgodaError):
    title = "Invalid input"


class NotFound(ZgodaError):
    title = "Not found"


class Conflict(ZgodaError):
    title = "Conflict"


class AuthenticationRequired(ZgodaError):
    title = "Sign-in required"


class AuthenticationFailed(ZgodaError):
    title = "Sign-in failed"


class PermissionDenied(ZgodaError):
    title = "Not allowed"


class CsrfFailed(ZgodaError):
    title = "Security token missing or wrong"


class RateLimited(ZgodaError):
    title = "Too many attempts"

    def __init__(self, detail: str, *, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds


class TenancyError(RuntimeError):
    """A programming error: tenant data touched without a workspace in scope."""
