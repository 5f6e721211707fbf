"""JSON-lines logs (readable lines at a terminal) that carry store_id, event_id and
correlation_id, and never a secret.

Entrypoints bind the identifiers of the message they handle with `log_context(...)`; every
record logged inside that block carries them, with no need to pass them down by hand.
"""
from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

_CONTEXT: contextvars.ContextVar[dict] = contextvars.ContextVar("log_context", default={})

# Keys whose values are replaced wherever they appear in a record's extra fields.
_SECRET_KEY = re.compile(r"secret|signature|password|token|consumer_key|authorization", re.I)
_REDACTED = "[redacted]"
# Personal data never reaches a log line either (logs cannot be erased per person afterwards):
# values under these keys are replaced as secrets are.
_PERSONAL_KEY = re.compile(r"^(e?mail|email_address|phone|first_name|last_name|full_name|"
                           r"name|company|address_[12]|postcode|city|birthday|to|body|billing|"
                           r"shipping|customer_note|ip_address)$", re.I)
_PERSONAL = "[personal]"
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add fields to every log record emitted inside the block (per green thread)."""
    merged = {**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _CONTEXT.set(merged)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind_log_context(**fields: object) -> None:
    """Add fields for the rest of the current green thread (a worker's whole life)."""
    _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})


def redact(value: object) -> object:
    """Replace the values of secret-looking and personal-data keys, recursively."""
    if isinstance(value, dict):
        return {k: _redact_item(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def _redact_item(key: object, value: object) -> object:
    if isinstance(key, str) and _SECRET_KEY.search(key):
        return _REDACTED
    if isinstance(key, str) and _PERSONAL_KEY.match(key) and value not in (None, "", [], {}):
        return _PERSONAL
    return redact(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_CONTEXT.get())
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(redact(entry), default=str)


class TextFormatter(JsonFormatter):
    """One readable line per record for a person at a terminal: time, level, logger, message,
    then the context and extra fields as key=value (redacted as the JSON lines are)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = json.loads(super().format(record))
        stamp = datetime.fromtimestamp(record.created, tz=timezone.utc).strftime("%H:%M:%S")
        head = f"{stamp} {entry.pop('level')[0]} {entry.pop('logger')}: {entry.pop('message')}"
        entry.pop("ts", None)
        exc = entry.pop("exc", None)
        extras = " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}"
                          for k, v in entry.items())
        line = f"{head}  [{extras}]" if extras else head
        return f"{line}\n{exc}" if exc else line


LOG_FORMATS = ("auto", "json", "text")


def configure_logging(level: str = "INFO", stream=None, log_format: str = "json") -> None:
    """Send every logger's records to `stream` (stderr) as JSON lines, or as readable lines
    (`text`; `auto`: text when the stream is a terminal, JSON otherwise); idempotent."""
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter() if log_format == "text" else JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing.formatter, JsonFormatter):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # kombu and amqp are chatty at INFO about reconnects that we log ourselves.
    for noisy in ("amqp", "kombu", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
