"""Jinja2 for the HTML pages: every domain's ``templates/`` folder, autoescaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

from zgoda.web.navigation import sections_for

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DIRS = [PACKAGE_ROOT / "web" / "templates", *sorted(PACKAGE_ROOT.glob("*/templates"))]

_environment = Environment(
    loader=ChoiceLoader([FileSystemLoader(str(path)) for path in dict.fromkeys(TEMPLATE_DIRS)]),
    autoescape=select_autoescape(["html", "xml"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates = Jinja2Templates(env=_environment)


def render(
    request: Request, name: str, context: Any = None, *, status_code: int = 200, **variables: Any
) -> HTMLResponse:
    """Render a page with the request context (user, workspace, switcher, CSRF token) available."""
    page: dict[str, Any] = {"ctx": context, **variables}
    if context is not None and getattr(context, "workspace", None) is not None:
        page.setdefault("sections", sections_for(context))
    return templates.TemplateResponse(request, name, page, status_code=status_code)
