"""The REST transport: the read functions' JSON (docs/openapi.yaml) over pooled HTTP/1.1 (urllib3)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

from feature_store_client.errors import BY_HTTP_STATUS, DeadlineExceeded, InvalidRequest, ServerError, Unavailable
from feature_store_client.results import FeatureVector, HistoricalFeatures, OnlineFeatures

SINGLE_PATH = "/api/v1/features/user/"
BATCH_PATH = "/api/v1/features/batch"


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _vector(item: dict[str, Any]) -> FeatureVector:
    return FeatureVector(item["user_id"], item.get("status", "ok"), item.get("features"),
                         _time(item.get("computed_at")), item.get("source_watermark"), item.get("cache_hit", False))


def _answer(body: dict[str, Any], vectors: list[FeatureVector], counts: dict[str, int]) -> OnlineFeatures:
    return OnlineFeatures(body["feature_set"], body["version"], datetime.fromisoformat(body["as_of"]),
                          body["degraded"], body.get("degraded_reason"), vectors, counts,
                          list(body.get("withheld_features", [])))


class RestTransport:
    """Calls ``read_features`` (``single_url``) and ``read_features_batch`` (``batch_url``)."""

    def __init__(self, single_url: str, batch_url: str, pool_size: int = 10,
                 headers: dict[str, str] | None = None, etl_url: str | None = None) -> None:
        self.single_url = single_url.rstrip("/")
        self.batch_url = batch_url.rstrip("/")
        self.etl_url = None if etl_url is None else etl_url.rstrip("/")
        self.headers = {"Accept": "application/json", **(headers or {})}
        self._http = urllib3.PoolManager(maxsize=pool_size, retries=False)

    def read_one(self, user_id: str, features: Sequence[str] | None, version: int | None, feature_set: str | None,
                 timeout_s: float) -> OnlineFeatures:
        query = {k: v for k, v in (("features", ",".join(features) if features else None),
                                   ("version", version), ("feature_set", feature_set)) if v is not None}
        url = self.single_url + SINGLE_PATH + quote(user_id, safe="")
        body = self._call("GET", url + ("?" + urlencode(query) if query else ""), None, timeout_s)
        return _answer(body, [_vector(body)], {"ok": 1, "unknown_user": 0, "unavailable": 0})

    def read_batch(self, user_ids: Sequence[str], features: Sequence[str] | None, version: int | None,
                   feature_set: str | None, timeout_s: float) -> OnlineFeatures:
        payload: dict[str, Any] = {"user_ids": list(user_ids)}
        for key, value in (("features", list(features) if features else None), ("version", version),
                           ("feature_set", feature_set)):
            if value is not None:
                payload[key] = value
        body = self._call("POST", self.batch_url + BATCH_PATH, json.dumps(payload).encode(), timeout_s)
        return _answer(body, [_vector(r) for r in body["results"]], body["counts"])

    def training(self, labels: list[dict[str, Any]], version: int | None, destination: str | None,
                 timeout_s: float) -> HistoricalFeatures:
        """run_etl's training step: the training set of ``labels``, built in BigQuery, with its rows."""
        if self.etl_url is None:
            raise InvalidRequest("unsupported", "no etl_url: FeatureStoreClient.over_rest(..., etl_url=run_etl's URL)")
        payload: dict[str, Any] = {"step": "training", "labels": labels}
        if version is not None:
            payload["version"] = version
        if destination is not None:
            payload["destination"] = destination
        body = self._call("POST", self.etl_url + "/", json.dumps(payload).encode(), timeout_s)
        return HistoricalFeatures(body["table"], body["feature_set"], int(body["version"]), body["results"])

    def _call(self, method: str, url: str, data: bytes | None, timeout_s: float) -> dict[str, Any]:
        headers = self.headers if data is None else {**self.headers, "Content-Type": "application/json"}
        try:
            response = self._http.request(method, url, body=data, headers=headers,
                                          timeout=urllib3.Timeout(total=timeout_s))
        except urllib3.exceptions.NewConnectionError as exc:  # a subclass of ConnectTimeoutError in urllib3 2
            raise Unavailable("connection_failed", f"{method} {url}: {exc}") from None
        except urllib3.exceptions.TimeoutError:
            raise DeadlineExceeded(f"{method} {url}: no answer within {timeout_s:.3f} s") from None
        except urllib3.exceptions.HTTPError as exc:
            raise Unavailable("connection_failed", f"{method} {url}: {type(exc).__name__}: {exc}") from None
        if response.status == 200:
            body: dict[str, Any] = json.loads(response.data)
            return body
        raise _error(response)


def _error(response: urllib3.BaseHTTPResponse) -> ServerError:
    try:
        error = json.loads(response.data)["error"]
        code, message = str(error["code"]), str(error["message"])
        features = [str(f) for f in error.get("features", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message = f"http_{response.status}", response.data[:200].decode("utf-8", "replace")
        features = []
    retry_after: float | None = None
    header = response.headers.get("Retry-After")
    if header is not None and header.strip().isdigit():
        retry_after = float(header)
    kind = BY_HTTP_STATUS.get(response.status, ServerError)
    return kind(code, message, http_status=response.status, retry_after_s=retry_after, features=features)
