"""The gRPC API ``featurestore.v1``: its messages (generated, ``feature_store_pb2``) and its methods.

``feature_store_pb2`` is generated from shared/proto/featurestore/v1/feature_store.proto by
``make proto`` and committed. The methods are bound from the service's descriptor, so a method
added to the proto is served and callable without a second list to keep in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feature_store_client.v1 import feature_store_pb2

SERVICE = feature_store_pb2.DESCRIPTOR.services_by_name["FeatureStore"]
SERVICE_NAME: str = SERVICE.full_name  # featurestore.v1.FeatureStore
ERROR_DOMAIN = "featurestore.v1"  # google.rpc.ErrorInfo.domain of every error the service raises


@dataclass(frozen=True)
class Method:
    """One RPC: its name, its HTTP/2 path and its message classes."""

    name: str
    path: str
    request: Any
    response: Any


def _message_class(full_name: str) -> Any:
    return getattr(feature_store_pb2, full_name.rsplit(".", 1)[1])


METHODS: dict[str, Method] = {
    m.name: Method(m.name, f"/{SERVICE_NAME}/{m.name}", _message_class(m.input_type.full_name),
                   _message_class(m.output_type.full_name))
    for m in SERVICE.methods
}

__all__ = ["ERROR_DOMAIN", "METHODS", "SERVICE_NAME", "Method", "feature_store_pb2"]
