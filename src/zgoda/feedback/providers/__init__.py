"""Provider webhooks for feedback: Amazon SES (through SNS), SendGrid, Mailgun and Postmark.

Each provider module verifies a request and maps its events onto one model, ProviderEvent. Everything here
is pure (no database, no HTTP framework); the only I/O is fetching the SNS signing certificate and
confirming an SNS subscription, both through an injectable ``fetch``. docs/feedback-providers.md has the
provider set-up, the checks and the mapping tables.
"""

from zgoda.feedback.providers.errors import WebhookRejected
from zgoda.feedback.providers.mailgun import mailgun_signature, parse_mailgun, verify_mailgun
from zgoda.feedback.providers.model import PROVIDERS, Provider, ProviderEvent
from zgoda.feedback.providers.postmark import parse_postmark, verify_postmark, verify_postmark_token
from zgoda.feedback.providers.refs import provider_ref_headers, ref_from_message_id, valid_ref
from zgoda.feedback.providers.sendgrid import parse_sendgrid, verify_sendgrid
from zgoda.feedback.providers.ses import SesWebhookResult, parse_ses, parse_ses_notification
from zgoda.feedback.providers.sns import (
    CertificateCache,
    SnsMessage,
    check_cert_url,
    check_subscribe_url,
    confirm_subscription,
    verify_sns,
)

__all__ = [
    "PROVIDERS",
    "CertificateCache",
    "Provider",
    "ProviderEvent",
    "SesWebhookResult",
    "SnsMessage",
    "WebhookRejected",
    "check_cert_url",
    "check_subscribe_url",
    "confirm_subscription",
    "mailgun_signature",
    "parse_mailgun",
    "parse_postmark",
    "parse_sendgrid",
    "parse_ses",
    "parse_ses_notification",
    "provider_ref_headers",
    "ref_from_message_id",
    "valid_ref",
    "verify_mailgun",
    "verify_postmark",
    "verify_postmark_token",
    "verify_sendgrid",
    "verify_sns",
]
