"""The one error every provider webhook raises when a request must not be trusted or cannot be read."""

from __future__ import annotations

from zgoda.core.errors import ZgodaError


class WebhookRejected(ZgodaError):
    """A webhook request was refused: bad signature, stale timestamp, replayed token, malformed body.

    ``reason`` is safe to log and to send back (it never contains a secret or an expected signature).
    ``retryable`` is true when the fault is ours or transient (the SNS signing certificate could not be
    fetched): answer with a 5xx so the provider retries. Otherwise answer 4xx (Mailgun stops retrying on 406).
    """

    title = "Webhook rejected"

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
