"""Imports every domain's models so the metadata (and Alembic) sees all tables."""

from zgoda.accounts import models as accounts_models
from zgoda.audit import models as audit_models
from zgoda.consent import models as consent_models
from zgoda.contacts import models as contacts_models
from zgoda.contacts.connectors import models as connectors_models
from zgoda.contacts.imports import models as imports_models
from zgoda.core.db import Base

__all__ = [
    "Base",
    "accounts_models",
    "audit_models",
    "connectors_models",
    "consent_models",
    "contacts_models",
    "imports_models",
]
