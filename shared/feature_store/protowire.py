"""The protobuf wire format's two primitives, for the few messages written by hand (a leaf of every layer).

transports/grpc_wire.py writes featurestore.v1 answers with them and stores/audit_sinks.py the
Pub/Sub Publish request: each is tested byte for byte against the generated classes.
"""

from __future__ import annotations


def varint(n: int) -> bytes:
    """A base-128 varint; a negative int64 as its 64-bit two's complement (ten bytes)."""
    if n < 0:
        n += 1 << 64
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(key: bytes, body: bytes) -> bytes:
    """A length-delimited field: its key byte(s), the body's length, the body."""
    return key + varint(len(body)) + body
