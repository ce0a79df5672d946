"""The feedback message classifier: what a raw inbound message is (bounce, complaint, auto-reply) and why.

``parse_message(raw)`` gives one ``FeedbackReport`` per recipient; ``iter_messages(path)`` reads .eml files,
mbox files and Maildirs. docs/feedback.md describes the formats, the rules and the guarantees.
"""

from zgoda.feedback.parsing.message import MAX_PARSE_BYTES, parse_message
from zgoda.feedback.parsing.report import FeedbackReport
from zgoda.feedback.parsing.sources import iter_messages

__all__ = ["MAX_PARSE_BYTES", "FeedbackReport", "iter_messages", "parse_message"]
