"""protowire's varints (a looked-up table below 4,096, computed above) are protobuf's, at every boundary."""

from __future__ import annotations

import pytest

from feature_store.protowire import field, varint
from feature_store_client.v1 import feature_store_pb2 as pb

BOUNDARIES = [0, 1, 127, 128, 255, 4095, 4096, 16383, 16384, 2**21 - 1, 2**21, 2**63 - 1, -1, -128, -(2**63)]


@pytest.mark.parametrize("n", BOUNDARIES)
def test_a_varint_is_the_generated_classes_int64(n: int) -> None:
    assert b"\x18" + varint(n) == pb.Value(int64_value=n).SerializeToString()


def test_every_looked_up_varint_is_protobufs() -> None:
    for n in range(0, 4200):
        assert pb.Value.FromString(b"\x18" + varint(n)).int64_value == n


@pytest.mark.parametrize("size", [0, 127, 128, 4095, 4096, 20_000])
def test_a_field_is_the_generated_classes_string(size: int) -> None:
    text = "a" * size  # a oneof member is written even when empty
    assert field(b"\x22", text.encode()) == pb.Value(string_value=text).SerializeToString()
