"""Logging helpers: one line per event; secrets never leave the process in a log line."""

from __future__ import annotations

import logging
import re

# Shapes of vendor and gateway secrets (OpenAI/Anthropic/OpenRouter/DeepSeek keys, Stripe keys,
# our own API keys, bearer tokens). Matching text is replaced by a mask; a header name is kept.
_SECRET_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(?:sk|rk|pk|whsec)[-_][A-Za-z0-9_\-]{8,}"), "[redacted]"),
    (re.compile(r"\bagk_[A-Za-z0-9]+_[A-Za-z0-9]+"), "[redacted]"),
    (re.compile(r"(?i)(?P<keep>bearer\s+)[A-Za-z0-9._~+/\-]{8,}=*"), r"\g<keep>[redacted]"),
    (re.compile(r"(?i)(?P<keep>x-api-key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._\-]{8,}"), r"\g<keep>[redacted]"),
]


def redact(text: str) -> str:
    """Replace anything shaped like a credential with a mask."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True
