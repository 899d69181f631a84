"""Logging set-up with redaction: secret values never reach a log line."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

_TOKEN_PATTERNS = [
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|token)\s+)[^\s\"',]+"),
    re.compile(
        r"(?i)([\"']?(?:token|task_data_password|task_data_login|aws_secret_access_key)"
        r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"
    ),
]


class RedactingFilter(logging.Filter):
    """Replaces known secret values, and anything shaped like a credential, with ``***``."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        for pattern in _TOKEN_PATTERNS:
            text = pattern.sub(r"\1***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message`` (redacted like every line), and ``error`` with the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


TEXT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def configure_logging(
    level: str = "info", secrets: tuple[str, ...] = (), fmt: str = "text"
) -> None:
    """Root logger to stderr at ``level`` (``fmt``: ``text`` or ``json`` lines), with every
    handler redacting ``secrets``."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if level.lower() != "debug":
        logging.getLogger("alembic").setLevel(logging.WARNING)
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter() if fmt == "json" else TEXT)
    for handler in root.handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(RedactingFilter(secrets))
