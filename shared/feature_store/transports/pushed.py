"""The Pub/Sub push edge on an event loop: ingest_changes served async (FS_CDC_SERVING_MODE=async).

functions-framework's ASGI mode cannot serve ingest_changes as a CloudEvent function: its handler
(``functions_framework.aio._cloudevent_func_wrapper``) answers 400 to any body ``from_http`` does not
read as a CloudEvent, and the raw push body our subscription sends (terraform/modules/pubsub) is not
one: only the threaded server converts it (functions_framework/event_conversion.py). So, served async,
ingest_changes is an async HTTP function that reads the delivery here, into what the threaded server
would hand the CloudEvent function (transports/cloudevents.py: the push body and the event id):

- a binary-mode CloudEvent (Eventarc: ``ce-specversion: 1.0``, ``ce-id``, ``ce-source``, ``ce-type``,
  a body that is not ``application/cloudevents+json``): its body decoded by the CloudEvents SDK's own
  data unmarshaller, and its ``ce-id``;
- the raw push body that functions-framework converts (a ``subscription`` and a message with ``data``,
  ``messageId`` and ``publishTime``): the message as that conversion rebuilds it, and its id;
- anything else (structured mode, other spec versions, a body the framework would not convert): the
  threaded server's own steps (``from_http``, then its background-event conversion, else the 400 that
  ``ingest_rejected_push`` applies as a raw body), run on a Flask request made from this one.

So a delivery gets the outcome it gets threaded (tests/functions/test_pushed.py compares the two).
The message's work (the change's parse, the source statement, Redis, the changelog) runs on the
ingest pool (``Services.ingest_pool``), whose thread waits for the message's batch as a gunicorn
thread does; 200 is answered only once ``Ingestor.handle`` has returned, and a failure raises, which
functions-framework answers with 500: at-least-once delivery holds as threaded. Settings missing or
invalid are answered 500 ``invalid_settings`` as threaded, the message not acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
from cloudevents.conversion import _json_or_string
from cloudevents.exceptions import InvalidRequiredFields, MissingRequiredFields
from cloudevents.http import from_http
from functions_framework import event_conversion
from functions_framework.exceptions import EventConversionException
from starlette.requests import Request
from starlette.responses import Response
from werkzeug.exceptions import BadRequest, HTTPException

from feature_store.errors import SettingsError
from feature_store.transports.asgi import run_on
from feature_store.transports.cloudevents import ingest_body
from feature_store.transports.http import NO_STORE
from feature_store.transports.misconfiguration import answer
from feature_store.wiring import services

STRUCTURED = "application/cloudevents+json"  # the CloudEvents SDK reads any such body as structured mode
PUBSUB_MESSAGE_TYPE = "type.googleapis.com/google.pubsub.v1.PubsubMessage"  # what the conversion names the data


def pushed_event(headers: Mapping[str, str], body: bytes, path: str = "/") -> tuple[Any, str | None]:
    """The push body and event id the threaded server would hand ingest_changes for this delivery.

    ``headers`` are lower-cased names. Raises werkzeug's HTTPException where the threaded server
    answers with an error of its own (a raw body that is not JSON-typed: 415), and whatever its
    conversion raises (an answer of 500).
    """
    if (headers.get("ce-specversion") == "1.0" and "ce-id" in headers and "ce-source" in headers
            and "ce-type" in headers and not headers.get("content-type", "").startswith(STRUCTURED)):
        data = _json_or_string(body or "")
        return (None if data in ("", b"") else data), headers["ce-id"]
    if "ce-specversion" not in headers and _is_json(headers.get("content-type", "")):
        try:
            raw = json.loads(body)
        except (ValueError, RecursionError):  # the threaded steps decide what this gets
            raw = None
        message = raw.get("message") if isinstance(raw, dict) else None
        if (isinstance(raw, dict) and "specversion" not in raw and "context" not in raw and "subscription" in raw
                and isinstance(message, dict) and "data" in message and isinstance(message.get("messageId"), str)
                and message["messageId"] and isinstance(message.get("publishTime"), str)):
            return {"message": {"@type": PUBSUB_MESSAGE_TYPE, "data": message["data"],
                                "attributes": message.get("attributes", {}), "messageId": message["messageId"],
                                "publishTime": message["publishTime"]}}, message["messageId"]
    return _as_threaded(headers, body, path)


def _is_json(content_type: str) -> bool:
    """Flask's ``Request.is_json``: the only bodies its ``get_json`` reads."""
    mimetype = content_type.split(";", 1)[0].strip().lower()
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def _as_threaded(headers: Mapping[str, str], body: bytes, path: str) -> tuple[Any, str | None]:
    """What functions-framework's threaded CloudEvent view makes of a delivery (``_cloud_event_view_func_wrapper``)."""
    import flask
    from werkzeug.test import EnvironBuilder

    request = flask.Request(EnvironBuilder(path=path, method="POST", headers=list(headers.items()),
                                           data=body).get_environ())
    try:
        event = from_http(request.headers, request.get_data())
    except (MissingRequiredFields, InvalidRequiredFields):
        try:
            event = event_conversion.background_event_to_cloud_event(request)
        except (EventConversionException, BadRequest):  # its 400: ingest_rejected_push applies the raw body
            return body, None
    try:
        return event.data, str(event["id"])
    except KeyError:
        return event.data, None


async def ingest_pushed(request: Request) -> Response:
    """The ingest_changes function served async: the delivery read on the loop, the message applied on the pool."""
    if request.method != "POST":  # the threaded CloudEvent function routes POST only
        return Response("Method Not Allowed", 405, media_type="text/plain")
    body = await request.body()
    try:
        data, event_id = pushed_event({k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw},
                                      body, request.scope["path"])
    except HTTPException as exc:
        return Response(exc.description, exc.code or 400, media_type="text/plain")
    try:
        await run_on(services().ingest_pool, ingest_body, data, event_id)
    except SettingsError as exc:  # not acknowledged, as threaded (transports/cloudevents.py)
        status, answer_body = answer(exc, message_id=event_id)
        return Response(orjson.dumps(answer_body), status, NO_STORE, "application/json")
    return Response("OK", 200, media_type="text/plain")
