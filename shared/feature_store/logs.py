"""JSON logs, one object per line, in the shape Cloud Logging reads from stdout.

Fields: ``severity``, ``message``, ``time``, ``logger``, the trace id as
``logging.googleapis.com/trace`` when a request carried one, plus whatever structured
``extra={"fields": {...}}`` a caller attached. Never feature values or personal data.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)
_configured = False

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


class CloudJsonFormatter(logging.Formatter):
    """Formats a record as one Cloud Logging structured-log line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        trace = _trace.get()
        if trace:
            entry["logging.googleapis.com/trace"] = trace
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure(level: str = "INFO") -> None:
    """Route the root logger to stdout as JSON lines (idempotent)."""
    global _configured
    root = logging.getLogger()
    root.setLevel(level)
    if _configured:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(CloudJsonFormatter())
    root.handlers[:] = [handler]
    _configured = True


def configure_default() -> None:
    """JSON lines at INFO unless ``configure`` ran already: for what is logged before settings could be read."""
    if not _configured:
        configure()


def set_trace(header: str | None, project: str | None = None) -> None:
    """Remember the trace of the current request (from ``X-Cloud-Trace-Context``)."""
    if not header:
        _trace.set(None)
        return
    trace_id = header.split("/", 1)[0]
    _trace.set(f"projects/{project}/traces/{trace_id}" if project else trace_id)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
