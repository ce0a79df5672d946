"""Segment definitions: validated JSON filters compiled into one SQL condition on contacts.

A definition is ``{"match": "all" | "any", "rules": [rule, ...]}``. Rules (docs/audiences.md):

- ``{"field": "email" | "phone" | "first_name" | "last_name", "op": OP, "value": "..."}``
- ``{"field": "attribute", "key": "city", "op": OP, "value": "..."}`` (``in`` takes a list)
- ``{"field": "list", "op": "in" | "not_in", "list_id": 3}``
- ``{"field": "source", "op": "is" | "is_not", "source_id": 2}``
- ``{"field": "consent", "purpose": "email_marketing", "op": "is" | "is_not", "value": STATUS}``
- ``{"field": "activity", "event": "sent" | "opened" | "clicked", "op": "within_days" | "not_within_days",
  "days": 90}``
- ``{"field": "created", "op": "within_days" | "before_days", "days": 30}``

OP for text fields: ``eq``, ``ne``, ``contains``, ``starts_with``, ``ends_with``, ``in``, ``exists``,
``not_exists``. Comparisons are case-insensitive. Everything is checked before it is saved, with an
error naming the rule (``rules[2].op``), so a saved segment always compiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, not_, or_, select, true
from sqlalchemy.orm import Session

from zgoda.audiences.models import ContactList, ListMember
from zgoda.campaigns.models import Send, SendStatus
from zgoda.consent.models import ConsentState, ConsentStatus, Purpose, Source
from zgoda.contacts.models import Contact
from zgoda.core.clock import utcnow
from zgoda.core.errors import InvalidInput
from zgoda.core.tenancy import get_scoped
from zgoda.feedback.models import SendEvent

TEXT_FIELDS = {"email": Contact.email, "phone": Contact.phone, "first_name": Contact.first_name}
TEXT_FIELDS["last_name"] = Contact.last_name
TEXT_OPS = ("eq", "ne", "contains", "starts_with", "ends_with", "in", "exists", "not_exists")
ACTIVITY_EVENTS = ("sent", "opened", "clicked", "bounced", "unsubscribed")
CONSENT_VALUES = tuple(status.value for status in ConsentStatus)
MAX_RULES = 50
MAX_DAYS = 3650


@dataclass(frozen=True)
class Definition:
    """A checked definition, ready to compile."""

    match: str
    rules: tuple[dict[str, Any], ...]

    def as_json(self) -> dict[str, Any]:
        return {"match": self.match, "rules": [dict(rule) for rule in self.rules]}


def check_definition(session: Session, raw: Any) -> Definition:
    """Validate a definition against this workspace (its lists, sources, purposes); errors name the rule."""
    if not isinstance(raw, dict):
        raise InvalidInput("A segment definition is an object with 'match' and 'rules'.", field="definition")
    unknown = sorted(set(raw) - {"match", "rules"})
    if unknown:
        raise InvalidInput(f"Unknown key '{unknown[0]}' in the definition.", field=f"definition.{unknown[0]}")
    match = raw.get("match", "all")
    if match not in ("all", "any"):
        raise InvalidInput("'match' is 'all' or 'any'.", field="definition.match")
    rules = raw.get("rules")
    if not isinstance(rules, list) or not rules:
        raise InvalidInput("A segment needs at least one rule.", field="definition.rules")
    if len(rules) > MAX_RULES:
        raise InvalidInput(f"A segment has at most {MAX_RULES} rules.", field="definition.rules")
    checked = tuple(_check_rule(session, rule, f"definition.rules[{index}]") for index, rule in enumerate(rules))
    return Definition(match=match, rules=checked)


def _text_value(rule: dict[str, Any], where: str, op: str) -> Any:
    if op in ("exists", "not_exists"):
        return None
    value = rule.get("value")
    if op == "in":
        if not isinstance(value, list) or not value or not all(isinstance(v, str | int | float) for v in value):
            raise InvalidInput("'in' takes a non-empty list of values.", field=f"{where}.value")
        return [str(v) for v in value]
    if not isinstance(value, str | int | float) or isinstance(value, bool) or str(value) == "":
        raise InvalidInput(f"'{op}' takes a non-empty text value.", field=f"{where}.value")
    return str(value)


def _days(rule: dict[str, Any], where: str) -> int:
    days = rule.get("days")
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"'days' is a whole number from 1 to {MAX_DAYS}.", field=f"{where}.days")
    return days


def _check_rule(session: Session, rule: Any, where: str) -> dict[str, Any]:
    if not isinstance(rule, dict):
        raise InvalidInput("A rule is an object with a 'field'.", field=where)
    kind = rule.get("field")
    op = rule.get("op")
    if kind in TEXT_FIELDS or kind == "attribute":
        if op not in TEXT_OPS:
            raise InvalidInput(f"Unknown op '{op}'; one of {', '.join(TEXT_OPS)}.", field=f"{where}.op")
        checked: dict[str, Any] = {"field": kind, "op": op}
        if kind == "attribute":
            key = rule.get("key")
            if not isinstance(key, str) or not key.strip() or len(key) > 64:
                raise InvalidInput("An attribute rule names its 'key'.", field=f"{where}.key")
            checked["key"] = key.strip()
        value = _text_value(rule, where, op)
        if value is not None:
            checked["value"] = value
        return checked
    if kind == "list":
        if op not in ("in", "not_in"):
            raise InvalidInput("A list rule's op is 'in' or 'not_in'.", field=f"{where}.op")
        list_id = rule.get("list_id")
        if not isinstance(list_id, int) or get_scoped(session, ContactList, list_id) is None:
            raise InvalidInput(f"There is no list {list_id!r} in this workspace.", field=f"{where}.list_id")
        return {"field": kind, "op": op, "list_id": list_id}
    if kind == "source":
        if op not in ("is", "is_not"):
            raise InvalidInput("A source rule's op is 'is' or 'is_not'.", field=f"{where}.op")
        source_id = rule.get("source_id")
        if not isinstance(source_id, int) or get_scoped(session, Source, source_id) is None:
            raise InvalidInput(f"There is no source {source_id!r} in this workspace.", field=f"{where}.source_id")
        return {"field": kind, "op": op, "source_id": source_id}
    if kind == "consent":
        if op not in ("is", "is_not"):
            raise InvalidInput("A consent rule's op is 'is' or 'is_not'.", field=f"{where}.op")
        key = rule.get("purpose")
        if not isinstance(key, str) or session.scalar(select(Purpose.id).where(Purpose.key == key)) is None:
            raise InvalidInput(f"There is no purpose {key!r} in this workspace.", field=f"{where}.purpose")
        value = rule.get("value")
        if value not in CONSENT_VALUES:
            raise InvalidInput(f"Consent is one of {', '.join(CONSENT_VALUES)}.", field=f"{where}.value")
        return {"field": kind, "op": op, "purpose": key, "value": value}
    if kind == "activity":
        if op not in ("within_days", "not_within_days"):
            raise InvalidInput("An activity rule's op is 'within_days' or 'not_within_days'.", field=f"{where}.op")
        event = rule.get("event")
        if event not in ACTIVITY_EVENTS:
            raise InvalidInput(f"Activity is one of {', '.join(ACTIVITY_EVENTS)}.", field=f"{where}.event")
        return {"field": kind, "op": op, "event": event, "days": _days(rule, where)}
    if kind == "created":
        if op not in ("within_days", "before_days"):
            raise InvalidInput("A created rule's op is 'within_days' or 'before_days'.", field=f"{where}.op")
        return {"field": kind, "op": op, "days": _days(rule, where)}
    raise InvalidInput(
        f"Unknown field {kind!r}; one of {', '.join([*TEXT_FIELDS, 'attribute', 'list', 'source', 'consent'])}, "
        "activity, created.",
        field=f"{where}.field",
    )


def _text_condition(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "exists":
        return and_(column.is_not(None), column != "")
    if op == "not_exists":
        return or_(column.is_(None), column == "")
    lowered = func.lower(column)
    if op == "eq":
        return lowered == str(value).lower()
    if op == "ne":
        return or_(column.is_(None), lowered != str(value).lower())
    if op == "in":
        return lowered.in_([v.lower() for v in value])
    escaped = str(value).lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = {"contains": f"%{escaped}%", "starts_with": f"{escaped}%", "ends_with": f"%{escaped}"}[op]
    return lowered.like(pattern, escape="\\")


def compile_definition(session: Session, definition: Definition) -> ColumnElement[bool]:
    """The definition as one condition on ``Contact`` (use it in any query over contacts)."""
    now = utcnow()
    purpose_ids: dict[str, int] = dict(session.execute(select(Purpose.key, Purpose.id)).all())
    conditions: list[ColumnElement[bool]] = []
    for rule in definition.rules:
        kind, op = rule["field"], rule["op"]
        if kind in TEXT_FIELDS:
            conditions.append(_text_condition(TEXT_FIELDS[kind], op, rule.get("value")))
        elif kind == "attribute":
            conditions.append(_text_condition(Contact.attributes[rule["key"]].as_string(), op, rule.get("value")))
        elif kind == "list":
            member = exists().where(ListMember.list_id == rule["list_id"], ListMember.contact_id == Contact.id)
            conditions.append(member if op == "in" else not_(member))
        elif kind == "source":
            same = Contact.source_id == rule["source_id"]
            conditions.append(same if op == "is" else or_(Contact.source_id.is_(None), not_(same)))
        elif kind == "consent":
            conditions.append(_consent_condition(purpose_ids.get(rule["purpose"]), op, rule["value"], now))
        elif kind == "activity":
            since = now - timedelta(days=rule["days"])
            happened = _activity(rule["event"], since)
            conditions.append(happened if op == "within_days" else not_(happened))
        elif kind == "created":
            since = now - timedelta(days=rule["days"])
            conditions.append(Contact.created_at >= since if op == "within_days" else Contact.created_at < since)
    if not conditions:
        return false()
    return and_(true(), *conditions) if definition.match == "all" else or_(false(), *conditions)


def _consent_condition(purpose_id: int | None, op: str, value: str, now: Any) -> ColumnElement[bool]:
    if purpose_id is None:  # the purpose was deleted since: nobody has a state for it
        matches: ColumnElement[bool] = true() if value == ConsentStatus.NONE else false()
        return matches if op == "is" else not_(matches)
    state = (ConsentState.contact_id == Contact.id, ConsentState.purpose_id == purpose_id)
    condition: ColumnElement[bool]
    if value == ConsentStatus.GRANTED:
        condition = exists().where(
            *state,
            ConsentState.status == ConsentStatus.GRANTED,
            or_(ConsentState.expires_at.is_(None), ConsentState.expires_at > now),
        )
    elif value == ConsentStatus.EXPIRED:
        condition = exists().where(
            *state,
            or_(
                ConsentState.status == ConsentStatus.EXPIRED,
                and_(ConsentState.status == ConsentStatus.GRANTED, ConsentState.expires_at <= now),
            ),
        )
    elif value == ConsentStatus.NONE:
        condition = not_(exists().where(*state, ConsentState.status != ConsentStatus.NONE))
    else:
        condition = exists().where(*state, ConsentState.status == value)
    return condition if op == "is" else not_(condition)


def _activity(event: str, since: Any) -> ColumnElement[bool]:
    if event == "sent":
        return exists().where(Send.contact_id == Contact.id, Send.status == SendStatus.SENT, Send.sent_at >= since)
    kind = {"opened": "open", "clicked": "click", "bounced": "bounce", "unsubscribed": "unsubscribe"}[event]
    return exists().where(SendEvent.contact_id == Contact.id, SendEvent.kind == kind, SendEvent.occurred_at >= since)
