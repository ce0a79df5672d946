"""Liveness and database reachability, for load balancers and the test harness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from zgoda import __version__
from zgoda.web.context import public

router = APIRouter()


@router.get("/health", tags=["health"])
@public("load balancers probe it without credentials")
def health(request: Request) -> JSONResponse:
    """``200`` with ``database: ok`` when the database answers, ``503`` otherwise."""
    try:
        with request.app.state.database.transaction() as session:
            session.execute(text("SELECT 1"))
        database = "ok"
    except Exception:  # noqa: BLE001 - any failure means "not healthy"
        database = "unreachable"
    status = 200 if database == "ok" else 503
    return JSONResponse(
        {"status": "ok" if status == 200 else "degraded", "database": database, "version": __version__},
        status_code=status,
    )
