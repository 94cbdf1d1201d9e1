"""The audit trail's pure parts: request ids, the purpose header, canonical digests, rows that fit the table."""

from __future__ import annotations

import hashlib
import json
import os
import random
from datetime import UTC, datetime

import orjson
import pytest

from conftest import ROOT
from feature_store.domain.audit import (
    ReadAudit,
    VectorAudit,
    canonical_vector,
    check_purpose,
    client_request_id,
    from_rows,
    is_request_id,
    iso_micros,
    new_request_id,
    request_id_time,
    vector_digest,
)

SCHEMA = json.loads((ROOT / "terraform" / "modules" / "bigquery" / "schemas" / "audit_reads.json").read_text())
FEATURES = {"risk": {"risk_score": 0.25, "payment_delays": None}, "velocity": {"orders_1h": 2, "amount_24h": 120.5}}


def test_request_ids_are_ulids_that_sort_by_time_and_tell_it() -> None:
    ids = [new_request_id(1_764_000_000_000 + i, os.urandom(10)) for i in (0, 1, 1000, 86_400_000)]

    assert all(is_request_id(i) and len(i) == 26 for i in ids)
    assert ids == sorted(ids)
    assert request_id_time(ids[2]) == 1_764_000_001.0
    assert len({new_request_id(1_764_000_000_000, os.urandom(10)) for _ in range(1000)}) == 1000


@pytest.mark.parametrize("text", ["", "01HF7YAT0060RK4CSM6MV3EE1", "01HF7YAT0060RK4CSM6MV3EE1SX",
                                  "81HF7YAT0060RK4CSM6MV3EE1S", "01hf7yat0060rk4csm6mv3ee1s",
                                  "01HF7YAT0060RK4CSM6MV3EE1I", "../etc/passwd"])
def test_malformed_request_ids_are_refused(text: str) -> None:
    assert not is_request_id(text)


@pytest.mark.parametrize(("header", "kept"), [
    ("3f2c9a1e-8b7d-4c6a-9e21-0b5c7d9e1f20", True), ("01HF7YAT0060RK4CSM6MV3EE1S", True), ("abc", False),
    ("has space in it", False), ("x" * 129, False), ("a\nb" * 5, False), (None, False)])
def test_a_callers_request_id_is_kept_only_when_well_formed(header: str | None, kept: bool) -> None:
    assert (client_request_id(header) == header) is kept if header is not None else client_request_id(None) is None


def test_purpose_is_printable_and_bounded() -> None:
    assert check_purpose("credit_decision: checkout #42") == "credit_decision: checkout #42"
    assert check_purpose(None) is None and check_purpose("") is None
    with pytest.raises(ValueError, match="at most 128"):
        check_purpose("p" * 129)
    with pytest.raises(ValueError, match="printable"):
        check_purpose("credit\x00decision")
    with pytest.raises(ValueError, match="printable"):
        check_purpose("décision")


def test_the_digest_is_sha256_of_one_canonical_form_of_what_was_served() -> None:
    reordered = {"velocity": {"amount_24h": 120.5, "orders_1h": 2},
                 "risk": {"payment_delays": None, "risk_score": 0.25}}

    canonical = canonical_vector(FEATURES, "0/16B3748", "2026-12-02T13:00:00.123+00:00")

    assert canonical == canonical_vector(reordered, "0/16B3748", "2026-12-02T13:00:00.123+00:00")
    # Written out by hand from docs/security.md's definition (version 2), not by the code under test.
    assert canonical == (b'{"computed_at":"2026-12-02T13:00:00.123+00:00","features":{"risk":{"payment_delays":null,'
                         b'"risk_score":0.25},"velocity":{"amount_24h":120.5,"orders_1h":2}},'
                         b'"source_watermark":"0/16B3748","v":2}')
    digest = vector_digest(FEATURES, "0/16B3748", "2026-12-02T13:00:00.123+00:00")
    assert digest == hashlib.sha256(canonical).hexdigest()


def test_rows_recorded_with_the_first_form_are_still_digested_by_it() -> None:
    canonical = canonical_vector(FEATURES, "0/16B3748", "2026-12-02T13:00:00.123+00:00", version=1)

    assert json.loads(canonical) == {"computed_at": "2026-12-02T13:00:00.123+00:00", "source_watermark": "0/16B3748",
                                     "v": 1, "features": {"amount_24h": 120.5, "orders_1h": 2,
                                                          "payment_delays": None, "risk_score": 0.25}}
    assert vector_digest(FEATURES, "0/16B3748", "2026-12-02T13:00:00.123+00:00", version=1) == \
        hashlib.sha256(canonical).hexdigest()
    rows = _audit().rows()
    for row in rows:
        row["digest_version"] = 1
    assert from_rows(rows).digest_version == 1
    with pytest.raises(ValueError, match="unknown digest version"):
        canonical_vector(FEATURES, None, None, version=3)


def test_row_timestamps_round_the_microseconds_as_datetime_does() -> None:
    rng = random.Random(7)
    epochs = [rng.uniform(0, 4e9) for _ in range(20_000)] + [round(rng.uniform(1.6e9, 1.9e9), 3) for _ in range(20_000)]
    epochs += [1_764_680_400.9999996, 1_764_680_400.0000004, 1_764_680_400.0000005, 0.0, 1_764_680_399.5]
    for epoch in epochs:
        assert iso_micros(epoch) == datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), epoch


@pytest.mark.parametrize("change", ["value", "type", "watermark", "computed_at", "missing"])
def test_any_change_to_what_was_served_changes_the_digest(change: str) -> None:
    features = {g: dict(v) for g, v in FEATURES.items()}
    watermark, computed_at = "0/16B3748", "2026-12-02T13:00:00.123+00:00"
    before = vector_digest(features, watermark, computed_at)
    if change == "value":
        features["risk"]["risk_score"] = 0.250001
    elif change == "type":
        features["velocity"]["orders_1h"] = 2.0
    elif change == "watermark":
        watermark = "0/16B3749"
    elif change == "computed_at":
        computed_at = "2026-12-02T13:00:00.124+00:00"
    else:
        del features["velocity"]["amount_24h"]

    assert vector_digest(features, watermark, computed_at) != before


def _audit() -> ReadAudit:
    served = VectorAudit("u1", "ok", True, "0/16B3748", "2026-12-02T13:00:00.123+00:00", 1_764_680_400.123456,
                         features=FEATURES)
    return ReadAudit("01HF7YAT0060RK4CSM6MV3EE1S", "lender-checkout", "batch", "rest", "credit_decision", 2,
                     ("risk_score", "orders_1h"), 1_764_680_401.5, 1_764_680_401.502,
                     (served, VectorAudit("u2", "unknown_user", False)), client_request_id="abc-12345678",
                     purpose="credit_decision")


def test_rows_are_one_per_user_and_fit_the_audit_reads_table() -> None:
    rows = _audit().rows()

    assert [r["position"] for r in rows] == [0, 1] and {r["request_id"] for r in rows} == {"01HF7YAT0060RK4CSM6MV3EE1S"}
    columns = {c["name"]: c for c in SCHEMA}
    for row in rows:
        assert set(row) == set(columns)
        for name, column in columns.items():
            if column["mode"] == "REQUIRED":
                assert row[name] is not None, name
            if column["mode"] == "REPEATED":
                assert isinstance(row[name], list), name
        orjson.dumps(row)  # a message's data is the row as JSON
    assert rows[0]["digest"] == vector_digest(FEATURES, "0/16B3748", "2026-12-02T13:00:00.123+00:00")
    assert rows[1]["digest"] is None and rows[1]["status"] == "unknown_user"
    assert rows[0]["served_at"] == "2025-12-02T13:00:01.502000Z"
    assert "0.25" not in orjson.dumps(rows).decode(), "a feature value was recorded"


def test_a_read_is_the_same_read_back_from_its_rows() -> None:
    audit = _audit()

    back = from_rows(list(reversed(audit.rows())))

    assert back.request_id == audit.request_id and back.feature_names == audit.feature_names
    assert back.as_of == pytest.approx(audit.as_of, abs=1e-6) and back.purpose == "credit_decision"
    assert [v.user_id for v in back.vectors] == ["u1", "u2"]
    assert back.vectors[0].digest == audit.vectors[0].digest_of()
    assert back.vectors[0].computed_at_epoch == pytest.approx(1_764_680_400.123456, abs=1e-6)


def test_a_vector_served_without_its_text_records_the_text_rest_serves() -> None:
    """gRPC hands the audit the state's instant, not the ISO text: the row and the digest are REST's."""
    from feature_store.domain.audit import ReadAudit, VectorAudit, iso

    epoch = 1_764_680_400.1239
    features = {"velocity": {"orders_1h": 2}}
    given = VectorAudit("u1", "ok", True, "0/16B3748", iso(epoch), epoch, features=features)
    lazy = VectorAudit("u1", "ok", True, "0/16B3748", None, epoch, features=features)

    def rows(vector: VectorAudit) -> list[dict[str, object]]:
        return ReadAudit("01HF7YAT0060RK4CSM6MV00001", "c", "single", "grpc", "credit_decision", 2, ("orders_1h",),
                         epoch + 1, epoch + 1.1, (vector,)).rows()

    assert rows(lazy) == rows(given)
    assert rows(lazy)[0]["computed_at_served"] == iso(epoch) and rows(lazy)[0]["digest"] == given.digest_of()
