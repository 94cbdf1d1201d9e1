"""The CloudEvent edge of Pub/Sub push deliveries (google.cloud.pubsub.topic.v1.messagePublished).

A Pub/Sub push reaches the function in three shapes: a binary-mode CloudEvent (``ce-*`` headers),
a structured-mode one (``application/cloudevents+json``), or the raw push body
``{"message": {"data": <base64>, "messageId": ..., "attributes": ...}, "subscription": ...}``
(https://cloud.google.com/pubsub/docs/push). functions-framework turns the first two into a
CloudEvent whose data is that push body, and converts a raw body too, but only when its message has
both ``data`` and ``messageId`` (functions_framework/event_conversion.py: ``_is_raw_pubsub_payload``);
any other raw body is answered 400 before the function runs. Pub/Sub allows a message with
attributes and no data (https://cloud.google.com/pubsub/docs/reference/rest/v1/PubsubMessage), which
is how an empty (tombstone) value arrives, so ``ingest_rejected_push`` is registered as the
framework's error handler for that 400 and applies the raw body itself.

Outcome mapping, here and only here:

- returns: the message is acknowledged (applied, a tombstone, heartbeat, transaction boundary or
  resolved timestamp, or poison);
- poison (PermanentError from the message itself): one WARNING line with the message id and code,
  no traceback, no content; counted; acknowledged, so it is delivered once instead of looping until
  the dead-letter topic (an acknowledged message never reaches that topic: the log line is its trail);
- settings missing or invalid (SettingsError, the instance's fault): 500 ``invalid_settings`` in the
  error envelope and one ERROR line without a traceback (transports/misconfiguration.py); not
  acknowledged, so Pub/Sub redelivers until the settings are fixed (or, past the subscription's
  delivery attempts, keeps it in the dead-letter topic);
- anything else raises: functions-framework answers 500 and Pub/Sub redelivers. Only a dependency
  of ours failing can get here: the parser turns every content problem into poison.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from feature_store.errors import PoisonMessage, SettingsError, TransientError
from feature_store.logs import get_logger
from feature_store.transports.http import json_response
from feature_store.transports.misconfiguration import answer
from feature_store.wiring import services

log = get_logger("feature_store.cloudevents")
BodyApplier = Callable[[Any, str | None], None]  # a push body (a CloudEvent's data, or the raw body), its event id


@dataclass(frozen=True, slots=True)
class PubSubMessage:
    """One Pub/Sub message as pushed: raw data bytes (empty when it has none), id, attributes."""

    data: bytes
    message_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    publish_time: str | None = None

    @property
    def published_ms(self) -> int | None:
        """The publish time in epoch milliseconds, when the push carried a readable one."""
        try:
            return int(datetime.fromisoformat(str(self.publish_time)).timestamp() * 1000)
        except (ValueError, OverflowError):
            return None


def pubsub_message(body: Any, event_id: str | None = None) -> PubSubMessage:
    """The Pub/Sub message inside a push body (a CloudEvent's data, or the raw body); PoisonMessage if none."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except (ValueError, RecursionError):
            raise PoisonMessage("the push body is not JSON", code="poison_not_pubsub") from None
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict):
        raise PoisonMessage("the event carries no Pub/Sub message", code="poison_not_pubsub")
    message_id = message.get("messageId") or message.get("message_id") or event_id or "unknown"
    raw = message.get("data") or ""
    if not isinstance(raw, str):
        raise PoisonMessage("message.data is not a base64 string", code="poison_not_pubsub")
    try:
        payload = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise PoisonMessage("message.data is not valid base64", code="poison_not_pubsub") from None
    attributes = message.get("attributes")
    attributes = {k: v for k, v in attributes.items() if isinstance(v, str)} if isinstance(attributes, dict) else {}
    published = message.get("publishTime") or message.get("publish_time")
    return PubSubMessage(payload, str(message_id)[:128], attributes, published if isinstance(published, str) else None)


def event_id(event: Any) -> str | None:
    try:
        return str(event["id"])
    except (KeyError, TypeError, AttributeError):
        return None


def pubsub_edge(body: Any, event_id: str | None, handle: Callable[[PubSubMessage], str],
                on_poison: Callable[[str], None]) -> None:
    """Decode the message of a push body, run ``handle``, and acknowledge, count or re-raise as above."""
    started = time.perf_counter()
    message_id = event_id or "unknown"
    try:
        message = pubsub_message(body, event_id)
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
    except SettingsError:  # the instance's fault, not the message's: its edge answers and logs it
        raise
    except Exception:
        log.exception("unexpected failure; the message will be redelivered",
                      extra={"fields": {"message_id": message_id}})
        raise
    if log.isEnabledFor(logging.DEBUG):  # one line per message: only built when it is written
        log.debug("message acknowledged", extra={"fields": {
            "message_id": message_id, "outcome": outcome, "latency": f"{time.perf_counter() - started:.6f}s"}})


def ingest_body(body: Any, event_id: str | None) -> None:
    """One push body (a CloudEvent's data, or the raw body) applied by the instance's ingestor, as above."""
    ingestor = services().ingestor
    pubsub_edge(body, event_id, lambda m: ingestor.handle(m.data, m.message_id, m.attributes, m.published_ms),
                lambda code: ingestor.stats.add(f"poison:{code}"))


def ingest_changes(event: Any) -> None:
    """The ingest_changes function: one change-stream message (Debezium or CockroachDB) per push."""
    cloud_event_edge(ingest_body, event)


def ingest_rejected_push(error: HTTPException) -> flask.Response | tuple[str, int]:
    """functions-framework's handler of the 400 it gives a raw push body ingest_changes cannot be handed."""
    return rejected_push_edge(ingest_body, error)


def cloud_event_edge(apply: BodyApplier, event: Any) -> None:
    """A CloudEvent function's delivery applied; 500 ``invalid_settings`` when the settings refuse it.

    That answer is raised as an HTTPException without a code, which Flask sends as it is and does not
    log: any other exception would be answered 500 too, with Flask's traceback in the log.
    """
    refused = _refused(apply, getattr(event, "data", None), event_id(event))
    if refused is not None:
        flask.abort(refused)


def rejected_push_edge(apply: BodyApplier, error: HTTPException) -> flask.Response | tuple[str, int]:
    """functions-framework's handler of the 400 it gives a raw push body it cannot convert (see above).

    The framework's description of that 400 quotes the whole body; it is replaced, so that a failure
    raised from here (chained to the 400) logs no message content.
    """
    error.description = "a raw push body functions-framework could not convert"
    return _refused(apply, flask.request.get_data(), None) or ("OK", 200)


def _refused(apply: BodyApplier, body: Any, event_id: str | None) -> flask.Response | None:
    """None once ``apply`` returned; the answer to a SettingsError it raised (not acknowledged)."""
    try:
        apply(body, event_id)
    except SettingsError as exc:
        return json_response(*answer(exc, message_id=event_id))
    return None
