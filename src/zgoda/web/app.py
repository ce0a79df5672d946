"""The one FastAPI application: the JSON API under /api/v1 and the HTML pages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from zgoda import __version__
from zgoda.core.db import Database
from zgoda.core.settings import Settings, get_settings
from zgoda.core.tasks import configure as configure_tasks
from zgoda.feedback import hooks as feedback_hooks
from zgoda.feedback import public_views as feedback_public_views
from zgoda.feedback import tracking_views as feedback_tracking_views
from zgoda.web import problems
from zgoda.web.context import bindable_input

STATIC_DIR = Path(__file__).resolve().parent / "static"


def create_app(settings: Settings | None = None, database: Database | None = None) -> FastAPI:
    """Build the application; tests pass their own settings and database."""
    from zgoda.accounts import api as accounts_api
    from zgoda.accounts import views as accounts_views
    from zgoda.audiences import api as audiences_api
    from zgoda.audiences import views as audiences_views
    from zgoda.audit import api as audit_api
    from zgoda.audit import views as audit_views
    from zgoda.campaigns import api as campaigns_api
    from zgoda.campaigns import views as campaigns_views
    from zgoda.consent import api as consent_api
    from zgoda.consent import views as consent_views
    from zgoda.contacts import api as contacts_api
    from zgoda.contacts import views as contacts_views
    from zgoda.contacts.connectors import api as connectors_api
    from zgoda.contacts.imports import api as imports_api
    from zgoda.contacts.imports import views as imports_views
    from zgoda.feedback import api as feedback_api
    from zgoda.feedback import views as feedback_views
    from zgoda.web import health

    settings = settings or get_settings()
    app = FastAPI(
        title="Zgoda",
        version=__version__,
        description="Consent-first, white-box marketing automation. Authenticate with "
        "`Authorization: Bearer zgk_...` (a workspace API token).",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        dependencies=[Depends(bindable_input)],
    )
    app.state.settings = settings
    configure_tasks(settings)
    app.state.database = database or Database.from_url(settings.resolved_database_url)
    problems.install(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    mounted: list[tuple[str, APIRouter]] = [("", health.router)]
    api_routers = (
        accounts_api.router,
        audit_api.router,
        consent_api.router,
        contacts_api.router,
        imports_api.router,
        connectors_api.router,
        audiences_api.router,
        campaigns_api.router,
        feedback_api.router,
    )
    page_routers = (
        accounts_views.router,
        audit_views.router,
        consent_views.router,
        contacts_views.router,
        imports_views.router,
        audiences_views.router,
        campaigns_views.router,
        feedback_views.router,
        feedback_public_views.router,
        feedback_hooks.router,
        feedback_tracking_views.router,
    )
    mounted += [("/api/v1", router) for router in api_routers]
    mounted += [("", router) for router in page_routers]
    for prefix, router in mounted:
        app.include_router(router, prefix=prefix)
    app.state.mounted_routers = mounted
    return app


def iter_routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """Every API and page route with its full path (the access test walks these)."""
    for prefix, router in app.state.mounted_routers:
        for route in router.routes:
            if isinstance(route, APIRoute):
                yield prefix + route.path, route
