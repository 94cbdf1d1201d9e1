"""The Publish request written by hand (stores/pubsub_topic.py) is google-cloud-pubsub's, byte for byte."""

from __future__ import annotations

import pytest
from google.pubsub_v1.types import PublishRequest, PubsubMessage

from feature_store.stores.pubsub_topic import MAX_BYTES, TopicPublisher, publish_request

TOPIC = "projects/audit-project/topics/" + "a" * 200  # a name whose length takes two varint bytes


def theirs(datas: list[bytes], attributes: list[dict[str, str]] | None = None) -> bytes:
    messages = [PubsubMessage(data=d, attributes=(attributes or [{}] * len(datas))[i]) for i, d in enumerate(datas)]
    return PublishRequest.serialize(PublishRequest(topic=TOPIC, messages=messages))


@pytest.mark.parametrize("sizes", [[0], [1, 127, 128], [300, 16_384, 2_000_000]])
def test_the_request_is_the_librarys_byte_for_byte_at_varint_boundaries(sizes: list[int]) -> None:
    datas = [bytes([65 + i % 26]) * size for i, size in enumerate(sizes)]

    ours = publish_request(TOPIC, datas)

    assert ours == theirs(datas)
    decoded = PublishRequest.deserialize(ours)
    assert decoded.topic == TOPIC and [m.data for m in decoded.messages] == datas


def test_attributes_are_the_librarys_map_entries() -> None:
    datas = [b'{"a":1}', b"", b"x" * 200]
    attributes = [{"table": "users"}, {"table": "transactions", "k\u00e9y": "v" * 130}, {}]

    ours = publish_request(TOPIC, datas, attributes)

    # A map's entries are written in its insertion order here; protobuf's own order need not be the same,
    # so the message is compared decoded, and byte for byte where one attribute leaves no order to choose.
    decoded = PublishRequest.deserialize(ours)
    assert [(m.data, dict(m.attributes)) for m in decoded.messages] == list(zip(datas, attributes, strict=True))
    assert publish_request(TOPIC, datas[:1], attributes[:1]) == theirs(datas[:1], attributes[:1])


class _Channel:
    def unary_unary(self, method: str) -> object:
        return lambda *a, **k: None


class _Transport:
    grpc_channel = _Channel()


class _Client:
    transport = _Transport()


def test_chunks_keep_within_pubsubs_limits_of_messages_and_bytes() -> None:
    topic = TopicPublisher(_Client(), TOPIC, 1.0, max_messages=3)

    assert list(topic.chunks([b"x"] * 7)) == [(0, 3), (3, 6), (6, 7)]
    assert list(topic.chunks([])) == []
    big = b"x" * (MAX_BYTES // 2)
    assert list(topic.chunks([big, big, big, b"y"])) == [(0, 1), (1, 2), (2, 4)]
    assert list(topic.chunks([b"z" * (MAX_BYTES + 1)])) == [(0, 1)]  # alone; Pub/Sub refuses it, the caller retries
