"""read_receipt's edge without BigQuery: what it refuses before the receipts service (and BigQuery) is built.

The receipts themselves, against the BigQuery emulator: tests/audit/test_receipts.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import closed_port, function_client
from feature_store import wiring


@pytest.mark.parametrize("request_id", ["not-a-ulid", "01HF7YAT0060RK4CSM6MV3EE1s", ""])
def test_a_malformed_request_id_is_400_before_bigquery_is_touched(env: dict[str, str], request_id: str,
                                                                   use_env: Callable[[dict[str, str]], None]) -> None:
    use_env({**env, "FS_BIGQUERY_PROJECT": "p", "FS_BIGQUERY_DATASET": "d",
             "FS_BIGQUERY_API_ENDPOINT": f"http://127.0.0.1:{closed_port()}"})

    response = function_client("read_receipt").get(f"/api/v1/receipts/{request_id}")

    assert (response.status_code, response.get_json()["error"]["code"]) == (400, "invalid_request_id")
    assert "receipts" not in vars(wiring.services())  # never built: no BigQuery client, no import of it
