"""Turning errors into answers: RFC 9457 problem JSON for the API, an HTML page elsewhere.

No handler ever shows a stack trace; unexpected errors are logged with an id the user sees.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from zgoda.core.errors import (
    AuthenticationFailed,
    AuthenticationRequired,
    Conflict,
    CsrfFailed,
    InvalidInput,
    NotFound,
    PermissionDenied,
    RateLimited,
    ZgodaError,
)
from zgoda.web.templating import render

log = logging.getLogger("zgoda.web")

STATUS_OF: list[tuple[type[ZgodaError], int]] = [
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (AuthenticationRequired, 401),
    (AuthenticationFailed, 401),
    (PermissionDenied, 403),
    (CsrfFailed, 403),
    (RateLimited, 429),
]


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/health"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def error_page(
    request: Request, status: int, title: str, detail: str, *, errors: list[dict[str, Any]] | None = None
) -> Response:
    return render(request, "error.html", None, status_code=status, title=title, detail=detail, errors=errors or [])


def _status_for(error: ZgodaError) -> int:
    for cls, status in STATUS_OF:
        if isinstance(error, cls):
            return status
    return 400


async def handle_domain_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ZgodaError)
    status = _status_for(error)
    headers: dict[str, str] = {}
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after_seconds)
    errors = [{"field": error.field, "message": error.detail}] if error.field else None
    if wants_json(request):
        if isinstance(error, AuthenticationRequired):
            headers["WWW-Authenticate"] = "Bearer"
        return problem(status, error.title, error.detail, errors=errors, headers=headers)
    if isinstance(error, AuthenticationRequired):
        from zgoda.web.context import SessionExpired

        target = "/login?next=" + quote(request.url.path)
        if isinstance(error, SessionExpired):
            target += "&expired=1"
        return RedirectResponse(target, status_code=303)
    response = error_page(request, status, error.title, error.detail, errors=errors)
    response.headers.update(headers)
    return response


def _field_name(location: tuple[Any, ...]) -> str:
    parts = [str(part) for part in location if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def handle_validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    errors = []
    for item in error.errors():
        kind = item.get("type", "")
        if kind == "json_invalid":
            message = "Malformed JSON: " + str(item.get("ctx", {}).get("error", "cannot be parsed"))
        elif kind == "extra_forbidden":
            message = "Unknown field."
        else:
            message = str(item.get("msg", "Invalid value."))
        errors.append({"field": _field_name(tuple(item.get("loc", ()))), "message": message})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    if wants_json(request):
        return problem(422, "Invalid input", detail, errors=errors)
    return error_page(request, 422, "Invalid input", detail, errors=errors)


async def handle_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    title = {404: "Not found", 405: "Method not allowed"}.get(error.status_code, "Request failed")
    detail = str(error.detail) if error.detail else title
    if error.status_code == 404:
        detail = "There is nothing at this address."
    if wants_json(request):
        return problem(error.status_code, title, detail, headers=getattr(error, "headers", None))
    return error_page(request, error.status_code, title, detail)


async def handle_unexpected(request: Request, error: Exception) -> Response:
    incident = secrets.token_hex(6)
    log.exception("unexpected error %s on %s %s", incident, request.method, request.url.path, exc_info=error)
    detail = f"Something went wrong on our side. Nothing was saved. Incident {incident}."
    if wants_json(request):
        return problem(500, "Internal error", detail)
    return error_page(request, 500, "Internal error", detail)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ZgodaError, handle_domain_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
    app.add_exception_handler(Exception, handle_unexpected)
