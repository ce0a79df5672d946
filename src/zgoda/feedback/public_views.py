"""Subject-facing pages: one-click unsubscribe (RFC 8058), the unsubscribe page, the preference centre, and
the confirmation page of consent requests (double opt-in, re-permission).

No login, no cookies: the signed token in the address is the credential. A ``GET`` never changes
anything (mail scanners follow links); the one-click ``POST`` answers 200 with no redirect.
Texts are in Polish and English (the workspace's language, or ``?lang=en``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from zgoda.core.crypto import constant_time_equal, keyed_hash
from zgoda.core.errors import CsrfFailed, NotFound
from zgoda.core.settings import Settings
from zgoda.feedback import subject as subjects
from zgoda.web.context import client_ip, get_session, get_settings_dep, public, request_form
from zgoda.web.templating import templates

router = APIRouter(tags=["subjects"], include_in_schema=False)

TEXTS: dict[str, dict[str, str]] = {
    "pl": {
        "unsubscribe_title": "Wypisz się",
        "unsubscribe_lead": "Nie chcesz dostawać wiadomości w celu „{purpose}” od {controller}?",
        "unsubscribe_button": "Wypisz mnie",
        "unsubscribed_title": "Wypisano",
        "unsubscribed_lead": "Nie dostaniesz już wiadomości w celu „{purpose}” od {controller}. Zgodę wycofano {when}.",
        "preferences_link": "Zarządzaj wszystkimi zgodami",
        "preferences_title": "Twoje zgody",
        "preferences_lead": "Wybierz, jakie wiadomości e-mail chcesz dostawać od {controller}.",
        "save": "Zapisz",
        "saved": "Zapisano. Nowe zgody: {granted}. Wycofane: {withdrawn}.",
        "none": "brak",
        "invalid_title": "Link jest nieprawidłowy",
        "invalid_lead": "Ten link nie działa. Skopiuj cały adres z wiadomości albo napisz do nadawcy.",
        "address": "Adres",
        "confirm_title": "Potwierdź zgodę",
        "confirm_lead": "{controller} prosi o Twoją zgodę w celu: {purpose}. Oto jej pełna treść:",
        "notice_version": "wersja {version}",
        "agree_button": "Tak, zgadzam się",
        "confirm_ignore": "Jeśli się nie zgadzasz, zamknij tę stronę: nic się nie zmieni.",
        "confirmed_lead": "Dziękujemy. Zgodę w celu „{purpose}” dla {controller} zapisano {when}. "
        "Możesz ją wycofać w każdej chwili linkiem w stopce każdej wiadomości.",
        "already_confirmed": "Zgoda w celu „{purpose}” dla {controller} jest już zapisana. Nic więcej nie trzeba.",
        "confirm_expired": "Ten link wygasł. Jeśli chcesz dostawać wiadomości w celu „{purpose}” od {controller}, "
        "zapisz się ponownie albo poczekaj na nową prośbę.",
    },
    "en": {
        "unsubscribe_title": "Unsubscribe",
        "unsubscribe_lead": "Do you no longer want messages for “{purpose}” from {controller}?",
        "unsubscribe_button": "Unsubscribe me",
        "unsubscribed_title": "Unsubscribed",
        "unsubscribed_lead": (
            "You will get no more messages for “{purpose}” from {controller}. Consent withdrawn {when}."
        ),
        "preferences_link": "Manage all your consents",
        "preferences_title": "Your consents",
        "preferences_lead": "Choose which emails you want to receive from {controller}.",
        "save": "Save",
        "saved": "Saved. Granted: {granted}. Withdrawn: {withdrawn}.",
        "none": "none",
        "invalid_title": "This link is not valid",
        "invalid_lead": "This link does not work. Copy the whole address from the message, or write to the sender.",
        "address": "Address",
        "confirm_title": "Confirm your consent",
        "confirm_lead": "{controller} asks for your consent to: {purpose}. Its full text:",
        "notice_version": "version {version}",
        "agree_button": "Yes, I agree",
        "confirm_ignore": "If you do not agree, close this page: nothing changes.",
        "confirmed_lead": "Thank you. Your consent to “{purpose}” for {controller} was recorded {when}. "
        "You can withdraw it at any time with the link in every message's footer.",
        "already_confirmed": "Your consent to “{purpose}” for {controller} is already recorded. Nothing more to do.",
        "confirm_expired": "This link has expired. If you want messages for “{purpose}” from {controller}, "
        "sign up again or wait for a new request.",
    },
}


def _language(request: Request, default: str) -> str:
    asked = request.query_params.get("lang")
    if asked in TEXTS:
        return asked
    return default if default in TEXTS else "pl"


def _page(request: Request, name: str, language: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request, f"subject/{name}", {"t": TEXTS[language], "lang": language, **values}, status_code=status_code
    )


def _resolve(request: Request, session: Session, settings: Settings, token: str) -> subjects.Subject | HTMLResponse:
    try:
        return subjects.resolve(session, settings.resolved_secret_key(), token)
    except NotFound:
        return _page(request, "invalid.html", _language(request, "pl"), status_code=404)


def _form_token(settings: Settings, token: str, use: str = "preferences-form") -> str:
    return keyed_hash(settings.resolved_secret_key(), use, token)


def _preferences(
    request: Request,
    session: Session,
    settings: Settings,
    subject: subjects.Subject,
    token: str,
    *,
    saved: dict[str, list[str]] | None,
) -> HTMLResponse:
    language = _language(request, subject.workspace.locale)
    return _page(
        request,
        "preferences.html",
        language,
        subject=subject,
        token=token,
        form_token=_form_token(settings, token),
        choices=subjects.choices(subject, session, language),
        controller=subjects.controller_name(subject.workspace),
        saved=saved,
    )


@router.get("/u/{token}", response_class=HTMLResponse)
@public("the unsubscribe link in every message's footer; the signed token is the credential")
def unsubscribe_page(
    request: Request,
    token: str,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """One button that unsubscribes; a GET changes nothing."""
    subject = _resolve(request, session, settings, token)
    if isinstance(subject, HTMLResponse):
        return subject
    language = _language(request, subject.workspace.locale)
    return _page(
        request,
        "unsubscribe.html",
        language,
        subject=subject,
        token=token,
        controller=subjects.controller_name(subject.workspace),
        email=subject.contact.email,
    )


@router.post("/u/{token}")
@public("RFC 8058 one-click unsubscribe: mail providers POST without cookies or credentials")
def unsubscribe(
    request: Request,
    token: str,
    form: FormData = Depends(request_form),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """``List-Unsubscribe=One-Click`` from a mail provider (200, plain), or the page's button (a page)."""
    one_click = form.get("List-Unsubscribe") == "One-Click"
    subject = _resolve(request, session, settings, token)
    if isinstance(subject, HTMLResponse):
        return PlainTextResponse("This link is not valid.\n", status_code=404) if one_click else subject
    subjects.unsubscribe(
        subject, session, one_click=one_click, user_agent=request.headers.get("user-agent"), ip=client_ip(request)
    )
    if one_click:
        return PlainTextResponse("Unsubscribed.\n")
    language = _language(request, subject.workspace.locale)
    from zgoda.core.clock import utcnow

    return _page(
        request,
        "unsubscribed.html",
        language,
        subject=subject,
        token=token,
        controller=subjects.controller_name(subject.workspace),
        when=utcnow().strftime("%Y-%m-%d %H:%M UTC"),
    )


@router.get("/preferences/{token}", response_class=HTMLResponse)
@public("the preference centre linked from every message; the signed token is the credential")
def preferences_page(
    request: Request,
    token: str,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """The subject's email consents, each with the notice that explains it."""
    subject = _resolve(request, session, settings, token)
    if isinstance(subject, HTMLResponse):
        return subject
    return _preferences(request, session, settings, subject, token, saved=None)


@router.post("/preferences/{token}", response_class=HTMLResponse)
@public("the preference centre's form; the signed token and a form token bound to it authenticate it")
def preferences_save(
    request: Request,
    token: str,
    form: FormData = Depends(request_form),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """Record the changes as grants and withdrawals with the method ``preference_centre``."""
    subject = _resolve(request, session, settings, token)
    if isinstance(subject, HTMLResponse):
        return subject
    if not constant_time_equal(str(form.get("form_token") or ""), _form_token(settings, token)):
        raise CsrfFailed("This form has expired. Open the link from the message again.")
    language = _language(request, subject.workspace.locale)
    wanted = {int(value) for value in form.getlist("purpose") if isinstance(value, str) and value.isdigit()}
    changed = subjects.save_preferences(
        subject,
        session,
        wanted=wanted,
        language=language,
        user_agent=request.headers.get("user-agent"),
        ip=client_ip(request),
        page_url=str(request.url),
    )
    return _preferences(request, session, settings, subject, token, saved=changed)


def _consent_request(
    request: Request, session: Session, settings: Settings, token: str
) -> subjects.ConsentRequest | HTMLResponse:
    try:
        return subjects.consent_request(session, settings.resolved_secret_key(), token)
    except NotFound:
        return _page(request, "invalid.html", _language(request, "pl"), status_code=404)


def _confirm_page(
    request: Request, settings: Settings, asked: subjects.ConsentRequest, token: str, *, recorded: str | None
) -> HTMLResponse:
    return _page(
        request,
        "confirm.html",
        _language(request, asked.campaign.language),
        status_code=410 if asked.expired and not asked.answered else 200,
        asked=asked,
        token=token,
        form_token=_form_token(settings, token, "consent-request-form"),
        controller=subjects.controller_name(asked.subject.workspace),
        recorded=recorded,
    )


@router.get("/confirm/{token}", response_class=HTMLResponse)
@public("the confirmation link of a consent request (double opt-in, re-permission); the signed token is the credential")
def confirm_page(
    request: Request,
    token: str,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """The notice asked about, in full, and one button that agrees; a GET changes nothing (scanners follow links)."""
    asked = _consent_request(request, session, settings, token)
    if isinstance(asked, HTMLResponse):
        return asked
    return _confirm_page(request, settings, asked, token, recorded=None)


@router.post("/confirm/{token}", response_class=HTMLResponse)
@public("the consent request page's button; the signed token and a form token bound to it authenticate it")
def confirm(
    request: Request,
    token: str,
    form: FormData = Depends(request_form),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Response:
    """Record the consent (confirm, refresh or grant, method ``double_opt_in``) with the page's evidence."""
    asked = _consent_request(request, session, settings, token)
    if isinstance(asked, HTMLResponse):
        return asked
    if not constant_time_equal(str(form.get("form_token") or ""), _form_token(settings, token, "consent-request-form")):
        raise CsrfFailed("This form has expired. Open the link from the message again.")
    event = subjects.give_consent(
        asked, session, user_agent=request.headers.get("user-agent"), ip=client_ip(request), page_url=str(request.url)
    )
    recorded = None if event is None else event.occurred_at.strftime("%Y-%m-%d %H:%M UTC")
    return _confirm_page(request, settings, asked, token, recorded=recorded)
