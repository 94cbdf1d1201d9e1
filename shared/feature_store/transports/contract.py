"""The parts of docs/openapi.yaml that are generated from the request models, so the two cannot drift.

Generated: the request body schemas (``BatchRequest``, ``RefreshRequest`` and one schema per refresh
mode, ``EtlRequest`` and one per step, ``MigrationRequest`` and one per phase), read_features' query
parameters (``ReadQuery``), the feature groups' schemas (from the catalog), and who may read: the
security schemes, the read operations' security requirement and their 401/403/429 responses, whose
codes come from errors.py. Written by hand: paths, the other responses, the response schemas and the prose.
``python -m feature_store.transports.contract [docs/openapi.yaml]`` rewrites the generated parts in
place; tests/functions/test_openapi_contract.py fails when the document is not what it would write.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from feature_store.domain.catalog import CATALOG
from feature_store.errors import (
    BatchOverClientLimit,
    ClientDisabled,
    FeatureOutOfScope,
    FeatureSetOutOfScope,
    FeatureStoreError,
    InvalidCredentials,
    RateLimited,
    Unauthenticated,
)
from feature_store.settings import ServingSettings
from feature_store.transports.etl_api import EtlRequest
from feature_store.transports.migration_api import MigrationRequest
from feature_store.transports.refresh_api import RefreshRequest
from feature_store.transports.requests import BatchRequest, ReadQuery

REF = "#/components/schemas/{model}"
READ_PATH = "/api/v1/features/user/{user_id}"
BATCH_PATH = "/api/v1/features/batch"
_JSON_TYPES = {"int64": "integer", "float64": "number", "string": "string"}


def _clean(node: Any) -> Any:
    """pydantic's JSON Schema without what the document does not carry: titles, class docstrings."""
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def _model(model: type[BaseModel]) -> dict[str, Any]:
    schema = _clean(model.model_json_schema(ref_template=REF))
    schema.pop("description", None)
    return dict(schema)


def _union(name: str, union: Any) -> dict[str, dict[str, Any]]:
    """A discriminated union of models: its own schema (oneOf + discriminator), then each member's."""
    schema = _clean(TypeAdapter(union).json_schema(ref_template=REF))
    members = schema.pop("$defs")
    return {name: schema, **dict(sorted(members.items()))}


def request_schemas() -> dict[str, dict[str, Any]]:
    """The request body schemas under their component names."""
    batch = _model(BatchRequest)
    batch["properties"]["user_ids"]["maxItems"] = ServingSettings.model_fields["batch_max"].default
    return {"BatchRequest": batch, **_union("RefreshRequest", RefreshRequest), **_union("EtlRequest", EtlRequest),
            **_union("MigrationRequest", MigrationRequest)}


def feature_groups() -> dict[str, dict[str, Any]]:
    """One schema per feature group, listing the features of every catalog version with their types."""
    groups: dict[str, dict[str, Any]] = {}
    first_version: dict[str, int] = {}
    for (_, version), fs in sorted(CATALOG.items()):
        for f in fs.features:
            first_version.setdefault(f.name, version)
            json_type = _JSON_TYPES[f.dtype]
            note = f" (credit_decision v{first_version[f.name]} and later)" if first_version[f.name] > 1 else ""
            group = groups.setdefault(f.group.capitalize(), {"type": "object", "additionalProperties": False,
                                                             "properties": {}})
            group["properties"][f.name] = {"type": [json_type, "null"] if f.default is None else json_type,
                                           "description": f.description + note}
    return groups


def query_parameters() -> list[dict[str, Any]]:
    """read_features' parameters: the path's user id, then ReadQuery's fields as query parameters."""
    schema = _model(ReadQuery)
    params: list[dict[str, Any]] = [{"name": "user_id", "in": "path", "required": True,
                                     "schema": {"$ref": REF.format(model="UserId")}}]
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description")
        param = {"name": name, "in": "query", "required": name in schema.get("required", ()),
                 "description": description, "schema": prop}
        if prop.get("type") == "array":  # a=x,y: one parameter, its items joined by commas
            param.update(style="form", explode=False)
        params.append(param)
    return params


def _error_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description,
            "headers": {"Cache-Control": {"$ref": "#/components/headers/NoStore"}, **(headers or {})},
            "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}


def _codes(*kinds: type[FeatureStoreError]) -> str:
    return ", ".join(k.code for k in kinds)


def security_schemes() -> dict[str, dict[str, Any]]:
    """How a read names its client (docs/security.md): an API key, or a bearer API key or Google ID token."""
    return {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                   "description": "An API key fsk_<key id>_<secret> made with fs-keys."},
        "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "Google ID token or API key",
                   "description": "A Google ID token (minted for the service's audience; on Cloud Run the one IAM "
                                  "verified) whose email or subject is a client's principal, or an API key."},
    }


def access_responses() -> dict[str, dict[str, Any]]:
    """The 401, 403 and 429 answers of the read operations."""
    return {
        "Unauthenticated": _error_response(
            f"{_codes(Unauthenticated)} (no credentials) or {_codes(InvalidCredentials)} (a malformed, unknown, "
            "revoked or expired key, or a token that is not valid for this audience or names no client).",
            {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}),
        "Forbidden": _error_response(
            f"{_codes(ClientDisabled, FeatureOutOfScope, FeatureSetOutOfScope, BatchOverClientLimit)}: the client "
            "may not read this; feature_out_of_scope names the refused features in error.features."),
        "RateLimited": _error_response(
            f"{_codes(RateLimited)}: the client is over its rate (users per second, a batch costs one per distinct "
            "user); the whole request was refused and consumed nothing. Retry after the given seconds.",
            {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}}),
    }


_ACCESS_STATUSES = {"401": "Unauthenticated", "403": "Forbidden", "429": "RateLimited"}


def _secure(operation: dict[str, Any], head: bool = False) -> None:
    operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
    responses = operation["responses"]
    for status, name in _ACCESS_STATUSES.items():
        responses[status] = ({"description": "The headers of the GET answer (an error), without its body."} if head
                             else {"$ref": f"#/components/responses/{name}"})
    operation["responses"] = dict(sorted(responses.items()))


def synced(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with its generated parts as the models and the catalog say today."""
    out = copy.deepcopy(document)
    schemas = out["components"]["schemas"]
    schemas.update(request_schemas())
    schemas.update(feature_groups())
    out["paths"][READ_PATH]["parameters"] = query_parameters()  # shared by GET and HEAD
    out["components"]["securitySchemes"] = security_schemes()
    out["components"]["responses"].update(access_responses())
    _secure(out["paths"][READ_PATH]["get"])
    _secure(out["paths"][READ_PATH]["head"], head=True)
    _secure(out["paths"][BATCH_PATH]["post"])
    return out


def dump(document: dict[str, Any]) -> str:
    import yaml  # a development dependency: the functions never import this module

    return str(yaml.safe_dump(document, sort_keys=False, width=120, allow_unicode=True))


def main(argv: list[str]) -> int:
    import yaml

    path = Path(argv[0] if argv else "docs/openapi.yaml")
    path.write_text(dump(synced(yaml.safe_load(path.read_text()))))
    print(f"{path}: generated parts rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
