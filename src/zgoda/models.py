"""Imports every domain's models so the metadata (and Alembic) sees all tables."""

from zgoda.accounts import models as accounts_models
from zgoda.audiences import models as audiences_models
from zgoda.audit import models as audit_models
from zgoda.campaigns import models as campaigns_models
from zgoda.consent import models as consent_models
from zgoda.contacts import models as contacts_models
from zgoda.contacts.connectors import models as connectors_models
from zgoda.contacts.imports import models as imports_models
from zgoda.core import keys as core_keys
from zgoda.core.db import Base
from zgoda.feedback import models as feedback_models

__all__ = [
    "Base",
    "accounts_models",
    "audiences_models",
    "audit_models",
    "campaigns_models",
    "connectors_models",
    "consent_models",
    "contacts_models",
    "core_keys",
    "feedback_models",
    "imports_models",
]
