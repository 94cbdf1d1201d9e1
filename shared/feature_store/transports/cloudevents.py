"""The CloudEvent edge of Pub/Sub push deliveries (google.cloud.pubsub.topic.v1.messagePublished).

functions-framework hands every shape Pub/Sub push can take (binary-mode ``ce-*`` headers,
structured mode, a raw push body) to the function as a CloudEvent whose data holds
``{"message": {"data": <base64>, "messageId": ..., "attributes": ...}, ...}``. This edge decodes
the message and calls one handler. Outcome mapping, here and only here:

- returns: the message is acknowledged (applied, a Debezium tombstone, or poison);
- poison (PermanentError from the message itself): logged with its message id, counted, acknowledged,
  so it goes to the dead-letter topic's audit trail instead of looping;
- anything else raises: functions-framework answers 500 and Pub/Sub redelivers.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from feature_store.errors import PoisonMessage, TransientError
from feature_store.logs import get_logger
from feature_store.wiring import services

log = get_logger("feature_store.cloudevents")


@dataclass(frozen=True, slots=True)
class PubSubMessage:
    """One Pub/Sub message as pushed: raw data bytes, id, attributes."""

    data: bytes
    message_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    publish_time: str | None = None


def pubsub_message(event: Any) -> PubSubMessage:
    """The Pub/Sub message inside a CloudEvent; PoisonMessage when it has none."""
    data = event.data if hasattr(event, "data") else None
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise PoisonMessage("the push body is not JSON", code="poison_not_pubsub") from None
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, dict):
        raise PoisonMessage("the event carries no Pub/Sub message", code="poison_not_pubsub")
    message_id = message.get("messageId") or message.get("message_id") or _event_id(event) or "unknown"
    raw = message.get("data") or ""
    if not isinstance(raw, str):
        raise PoisonMessage("message.data is not a base64 string", code="poison_not_pubsub")
    try:
        payload = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise PoisonMessage("message.data is not valid base64", code="poison_not_pubsub") from None
    attributes = message.get("attributes")
    return PubSubMessage(payload, str(message_id), attributes if isinstance(attributes, dict) else {},
                         message.get("publishTime") or message.get("publish_time"))


def _event_id(event: Any) -> str | None:
    try:
        return str(event["id"])
    except (KeyError, TypeError, AttributeError):
        return None


def pubsub_edge(event: Any, handle: Callable[[PubSubMessage], str], on_poison: Callable[[str], None]) -> None:
    """Decode the message, run ``handle``, and acknowledge, count or re-raise as described above."""
    started = time.perf_counter()
    message_id = _event_id(event) or "unknown"
    try:
        message = pubsub_message(event)
        message_id = message.message_id
        outcome = handle(message)
    except PoisonMessage as exc:
        on_poison(exc.code)
        log.warning("poison message acknowledged", extra={"fields": {
            "message_id": message_id, "error_code": exc.code, "reason": exc.message, "poison": True}})
        return
    except TransientError as exc:
        log.warning("transient failure; the message will be redelivered", extra={"fields": {
            "message_id": message_id, "error_code": exc.code, "reason": exc.message}})
        raise
    except Exception:
        log.exception("unexpected failure; the message will be redelivered",
                      extra={"fields": {"message_id": message_id}})
        raise
    if log.isEnabledFor(logging.DEBUG):  # one line per message: only built when it is written
        log.debug("message applied", extra={"fields": {
            "message_id": message_id, "outcome": outcome, "latency": f"{time.perf_counter() - started:.6f}s"}})


def ingest_changes(event: Any) -> None:
    """The ingest_changes function: one Debezium change event per Pub/Sub message."""
    ingestor = services().ingestor
    pubsub_edge(event, lambda m: ingestor.handle(m.data, m.message_id),
                lambda code: ingestor.stats.add(f"poison:{code}"))
