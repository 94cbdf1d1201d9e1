"""transports/pushed.py reads a delivery into what functions-framework's threaded server hands ingest_changes.

The reference is the threaded server itself: a CloudEvent function served by functions-framework's
own Flask app (with ingest_changes' handler of the framework's 400) records the push body and the
event id it is given, or the status it answers; ``pushed_event`` must give the same for the same
request. Deliveries: every shape a producer sends (tests/producers.py) and, from hypothesis, headers
and bodies around them (spec versions, missing attributes, content types, raw bodies missing a field,
bodies that are not JSON).
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from producers import debezium_change, push_body

CAPTURE = '''
import flask
import functions_framework
from pushed_sink import SEEN
from werkzeug.exceptions import BadRequest


@functions_framework.cloud_event
def capture(cloud_event):
    try:
        event_id = str(cloud_event["id"])
    except KeyError:
        event_id = None
    SEEN.append((cloud_event.data, event_id))


def rejected(error):  # as transports/cloudevents.py's ingest_rejected_push: the raw body, no event id
    SEEN.append((flask.request.get_data(), None))
    return "OK", 200


functions_framework.errorhandler(BadRequest)(rejected)
'''


@pytest.fixture(scope="module")
def threaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, list[Any]]]:
    """functions-framework's threaded app serving a CloudEvent function that records what it is handed."""
    from functions_framework import create_app

    folder = tmp_path_factory.mktemp("capture")
    (folder / "pushed_sink.py").write_text("SEEN: list[object] = []\n")
    (folder / "main.py").write_text(CAPTURE)
    sys.path.insert(0, str(folder))
    try:
        app = create_app(target="capture", source=str(folder / "main.py"), signature_type="cloudevent")
        from pushed_sink import SEEN  # type: ignore[import-not-found]

        yield app.test_client(), SEEN
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("pushed_sink", None)


def both(threaded: tuple[Any, list[Any]], headers: dict[str, str], body: bytes) -> tuple[Any, Any]:
    """(what the threaded server handed the function or answered, what pushed_event gives)."""
    from werkzeug.exceptions import HTTPException

    from feature_store.transports.pushed import pushed_event

    client, seen = threaded
    seen.clear()
    response = client.post("/", headers=headers, data=body)
    expected: Any = seen[0] if response.status_code == 200 and seen else response.status_code
    try:
        got: Any = pushed_event({k.lower(): v for k, v in headers.items()}, body)
    except HTTPException as exc:
        got = exc.code
    except Exception:
        got = 500
    stamped = b"publishTime" not in body  # the conversion then stamps the time it converts at: each its own
    return canonical(expected, stamped), canonical(got, stamped)


def canonical(value: Any, stamped: bool) -> str:
    def mask(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: "<now>" if stamped and k == "publishTime" else mask(x) for k, x in v.items()}
        return [mask(x) for x in v] if isinstance(v, list | tuple) else v

    return json.dumps(mask(value), sort_keys=True, default=repr)


def binary(event_id: str, **extra: str) -> dict[str, str]:
    return {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": "//pubsub.googleapis.com/projects/p/topics/t",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished", "Content-Type": "application/json", **extra}


def structured(body: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    event = {"specversion": "1.0", "id": "e-1", "source": "//pubsub.googleapis.com/projects/p/topics/t",
             "type": "google.cloud.pubsub.topic.v1.messagePublished", "datacontenttype": "application/json",
             "data": body}
    return {"Content-Type": "application/cloudevents+json"}, json.dumps(event).encode()


CHANGE = debezium_change("users", "c", None, {"user_id": "u1", "age": 30}, lsn=5)
PUSH = push_body(CHANGE, "m-1", {"TABLE_NAME": "users"})
JSON = {"Content-Type": "application/json"}


def without(message_key: str) -> dict[str, Any]:
    body = json.loads(json.dumps(PUSH))
    del body["message"][message_key]
    return body


def replaced(**message: Any) -> dict[str, Any]:
    return {**PUSH, "message": {**PUSH["message"], **message}}


@pytest.mark.parametrize(("headers", "body"), [
    (binary("m-1"), json.dumps(PUSH).encode()),
    (binary("m-1"), json.dumps(push_body(None, "m-2", {"key": "k"})).encode()),
    (binary("m-1"), b""),
    (binary("m-1"), b"not json"),
    (binary("m-1"), b'"a JSON string"'),
    (binary("m-1", **{"Content-Type": "text/plain"}), json.dumps(PUSH).encode()),
    (binary("m-1", **{"ce-specversion": "0.3"}), json.dumps(PUSH).encode()),
    (binary("m-1", **{"ce-specversion": "9.9"}), json.dumps(PUSH).encode()),
    ({k: v for k, v in binary("m-1").items() if k != "ce-source"}, json.dumps(PUSH).encode()),
    structured(PUSH),
    ({"Content-Type": "application/cloudevents+json"}, b"{not json"),
    (JSON, json.dumps(PUSH).encode()),
    (JSON, json.dumps(without("publishTime")).encode()),
    (JSON, json.dumps(without("messageId")).encode()),
    (JSON, json.dumps(without("data")).encode()),
    (JSON, json.dumps(replaced(attributes=None)).encode()),
    (JSON, json.dumps(replaced(attributes={"n": 1})).encode()),
    (JSON, json.dumps(replaced(data=None)).encode()),
    (JSON, json.dumps(replaced(messageId="")).encode()),
    (JSON, json.dumps(replaced(messageId=7)).encode()),
    (JSON, json.dumps(replaced(publishTime=None)).encode()),
    (JSON, json.dumps({**PUSH, "context": {}}).encode()),
    (JSON, json.dumps({"message": PUSH["message"]}).encode()),
    (JSON, json.dumps({"unexpected": True}).encode()),
    (JSON, json.dumps([1, 2]).encode()),
    (JSON, b"not json"),
    (JSON, b""),
    ({"Content-Type": "text/plain"}, json.dumps(PUSH).encode()),
    ({}, json.dumps(PUSH).encode()),
])
def test_a_delivery_is_read_as_the_threaded_server_reads_it(threaded: tuple[Any, list[Any]], headers: dict[str, str],
                                                            body: bytes) -> None:
    expected, got = both(threaded, headers, body)

    assert got == expected


MESSAGES = st.fixed_dictionaries({}, optional={
    "data": st.none() | st.just(base64.b64encode(CHANGE).decode()) | st.text(max_size=8) | st.integers(),
    "messageId": st.none() | st.just("m-9") | st.just("") | st.integers(),
    "message_id": st.just("m-10"),
    "publishTime": st.just("2026-12-03T10:00:00.000Z") | st.none() | st.integers(),
    "attributes": st.none() | st.just({"TABLE_NAME": "users"}) | st.just({"n": 1}) | st.just([]),
})
COMPLETE = st.fixed_dictionaries({"data": st.none() | st.just(base64.b64encode(CHANGE).decode()),
                                   "messageId": st.just("m-9"), "publishTime": st.just("2026-12-03T10:00:00.000Z")},
                                  optional={"attributes": st.none() | st.just({"TABLE_NAME": "users"})})
PARTIAL = st.fixed_dictionaries({}, optional={
    "message": MESSAGES | st.text(max_size=8) | st.none(),
    "subscription": st.just("projects/p/subscriptions/s"),
    "context": st.just({}),
    "specversion": st.just("1.0"),
})
BODIES = st.fixed_dictionaries({"message": COMPLETE, "subscription": st.just("s")}) | PARTIAL
HEADERS = st.fixed_dictionaries({}, optional={
    "ce-specversion": st.sampled_from(["1.0", "0.3", "", "2"]),
    "ce-id": st.sampled_from(["e-1", ""]),
    "ce-source": st.just("//pubsub.googleapis.com/projects/p/topics/t"),
    "ce-type": st.just("google.cloud.pubsub.topic.v1.messagePublished"),
    "Content-Type": st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                     "application/cloudevents+json", "application/x+json"]),
})
RAW = st.binary(max_size=40) | st.sampled_from([b"", b"null", b"[]", b'"x"', b"{}", b"[" * 5000])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=HEADERS, body=BODIES.map(lambda b: json.dumps(b).encode()) | RAW)
def test_any_delivery_is_read_as_the_threaded_server_reads_it(threaded: tuple[Any, list[Any]], headers: dict[str, str],
                                                              body: bytes) -> None:
    expected, got = both(threaded, headers, body)

    assert got == expected
