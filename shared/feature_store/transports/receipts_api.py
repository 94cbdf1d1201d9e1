"""Handler of the read_receipt function: ``GET /api/v1/receipts/{request_id}`` (services/receipts.py)."""

from __future__ import annotations

import re
from typing import Any

from feature_store.services.receipts import checked_request_id
from feature_store.transports.http import Endpoint, Incoming
from feature_store.wiring import services


def read_receipt(request: Incoming, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    """The read's audit record and each served vector recomputed from the offline store, digests compared."""
    del request
    # Checked before the services are built: a malformed id needs neither BigQuery's client nor its import.
    request_id = checked_request_id(match.group("request_id"))
    return 200, services().receipts.receipt(request_id)


READ_RECEIPT = Endpoint(re.compile(r"/api/v1/receipts/(?P<request_id>[^/]*)"), ("GET",), read_receipt)
