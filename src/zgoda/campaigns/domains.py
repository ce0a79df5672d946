"""Sending domains and their DKIM keys.

The private key is stored encrypted (Fernet, with a key derived from ``ZGODA_SECRET_KEY``), in the
database rather than a file so every worker on every machine can sign. Losing the secret key loses
the DKIM keys too: a new key and a new DNS record fix that (docs/delivery.md).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from zgoda.audit import service as audit
from zgoda.campaigns.models import SendingDomain
from zgoda.core.errors import Conflict, InvalidInput, NotFound
from zgoda.core.tenancy import get_scoped
from zgoda.delivery.dkim import DkimSigner, dns_record, generate_key

DOMAIN_PATTERN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def _fernet(secret: bytes) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"zgoda.dkim-keys\0" + secret).digest()))


def _check_domain(domain: str) -> str:
    domain = domain.strip().lower().rstrip(".")
    if not DOMAIN_PATTERN.match(domain):
        raise InvalidInput(f"'{domain}' is not a domain name.", field="domain")
    return domain


def selector_for(moment: datetime) -> str:
    """A dated selector (``zgoda202611``), so a rotated key gets a new DNS name."""
    return f"zgoda{moment:%Y%m}"


def add_sending_domain(session: Session, *, domain: str, secret: bytes, selector: str | None = None) -> SendingDomain:
    """A sending domain with a new 2048-bit DKIM key; publish :func:`dns_txt` before sending from it."""
    from zgoda.core.clock import utcnow

    domain = _check_domain(domain)
    if session.scalar(select(SendingDomain.id).where(SendingDomain.domain == domain)) is not None:
        raise Conflict(f"The sending domain {domain} is already set up.", field="domain")
    key = generate_key()
    record = SendingDomain(
        domain=domain,
        selector=selector or selector_for(utcnow()),
        private_key=_fernet(secret).encrypt(key.private_key_pem).decode(),
        public_key=key.public_key_b64,
    )
    session.add(record)
    session.flush()
    audit.record(
        session,
        action="sending_domain.create",
        object_type="sending_domain",
        object_id=record.id,
        summary={"domain": domain, "selector": record.selector},
    )
    return record


def list_sending_domains(session: Session) -> Sequence[SendingDomain]:
    return session.scalars(select(SendingDomain).order_by(SendingDomain.domain)).all()


def get_sending_domain(session: Session, *, domain_id: int) -> SendingDomain:
    record = get_scoped(session, SendingDomain, domain_id)
    if record is None:
        raise NotFound(f"There is no sending domain {domain_id} in this workspace.", field="domain_id")
    return record


def dns_txt(record: SendingDomain) -> tuple[str, str]:
    """The DNS TXT record (name, value) that publishes the domain's public key."""
    return dns_record(record.domain, record.selector, record.public_key)


def signer_for(session: Session, *, from_domain: str, secret: bytes) -> DkimSigner | None:
    """The DKIM signer of the From address's domain, or ``None`` when the workspace has no key for it."""
    record = session.scalar(select(SendingDomain).where(SendingDomain.domain == from_domain.lower()))
    if record is None:
        return None
    try:
        pem = _fernet(secret).decrypt(record.private_key.encode())
    except InvalidToken:
        raise Conflict(
            f"The DKIM key of {record.domain} cannot be read with this ZGODA_SECRET_KEY; "
            "create a new key for the domain (and publish its DNS record).",
            field="domain",
        ) from None
    return DkimSigner(record.domain, record.selector, pem)
