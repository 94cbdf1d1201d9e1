"""The changelog's contract, run against each sink and against the in-memory twin alike.

- bigquery: rows streamed into the BigQuery emulator (the local stack's sink);
- pubsub: production's (stores/pubsub_changelog.py) through google-cloud-pubsub's client to the Publish
  stand-in (tests/pubsub_standin.py: no Pub/Sub emulator runs here), whose messages are then written
  into the BigQuery emulator's tables as the per-table BigQuery subscriptions of terraform/modules/pubsub
  would: filtered on the ``table`` attribute, the data as a row with the table's schema;
- memory: the twin.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pubsub_standin import PubSubStandIn

from conftest import ROOT, closed_port
from feature_store.domain.changes import Change, parse_change
from feature_store.errors import DependencyUnavailable
from feature_store.settings import Settings
from feature_store.stores.bigquery_changelog import BigQueryChangelog
from feature_store.stores.dialect import POSTGRESQL
from feature_store.stores.memory import MemoryChangelog
from feature_store.stores.ports import Changelog
from feature_store.wiring import Services

pytest_plugins = ["bq_fixture"]


@dataclass
class Backend:
    changelog: Changelog
    landed: Callable[[str], list[tuple[str, str]]]  # table -> (row_key, message_id) of its rows
    unreachable: Callable[[], Changelog]
    dependency: str = "bigquery"  # what an unreachable sink names


@pytest.fixture(scope="module")
def dataset(request: pytest.FixtureRequest) -> Iterator[tuple[Any, str]]:
    emulator = request.getfixturevalue("bigquery_emulator")
    name = f"contract_{secrets.token_hex(4)}"
    client = emulator.client()
    BigQueryChangelog(client, name, POSTGRESQL, 30).create_tables()
    yield emulator, name
    client.delete_dataset(name, delete_contents=True, not_found_ok=True)


@pytest.fixture(scope="module")
def standin() -> Iterator[PubSubStandIn]:
    server = PubSubStandIn().start()
    yield server
    server.stop()


def pubsub_changelog(address: str, timeout_s: str = "10") -> Changelog:
    """Production's wiring of the changelog (FS_CDC_CHANGELOG_SINK=pubsub), publishing to ``address``."""
    changelog = Services(Settings.from_env({
        "FS_POSTGRES_HOST": "127.0.0.1", "FS_CDC_CHANGELOG_SINK": "pubsub", "FS_PUBSUB_PROJECT": "cdc-project",
        "FS_PUBSUB_EMULATOR_HOST": address, "FS_BIGQUERY_TIMEOUT_S": timeout_s})).changelog
    assert changelog is not None
    return changelog


def _pubsub_backend(request: pytest.FixtureRequest) -> Backend:
    emulator, name = request.getfixturevalue("dataset")
    standin: PubSubStandIn = request.getfixturevalue("standin")
    client = emulator.client()
    standin.as_bigquery_subscription(client, lambda *_: None)  # earlier tests' messages: not this one's

    def subscription(topic: str, attributes: dict[str, str]) -> str | None:
        assert topic == "projects/cdc-project/topics/cdc-changelog"
        table = f"changelog_{attributes['table']}"
        return f"{name}.{table}"

    def landed(table: str) -> list[tuple[str, str]]:
        for _, data, attributes in standin.messages:
            columns = table_schema(f"changelog_{attributes['table']}")
            row = json.loads(data)
            assert set(row) <= set(columns), f"columns the table lacks: {set(row) - set(columns)}"
            assert {n for n, c in columns.items() if c["mode"] == "REQUIRED"} <= {n for n, v in row.items()
                                                                                 if v is not None}
        standin.as_bigquery_subscription(client, subscription)
        rows = client.query(f"SELECT row_key, message_id FROM `{name}.changelog_{table}`").result()
        return sorted((r["row_key"], r["message_id"]) for r in rows)

    client.query(f"DELETE FROM `{name}.changelog_users` WHERE TRUE").result()
    return Backend(pubsub_changelog(standin.address), landed,
                   lambda: pubsub_changelog(f"127.0.0.1:{closed_port()}", timeout_s="1"), "pubsub")


@functools.cache
def table_schema(table: str) -> dict[str, Any]:
    """The columns of ``table`` by name, from its schema file in terraform (read once per table)."""
    path = ROOT / "terraform" / "modules" / "bigquery" / "schemas" / f"{table}.json"
    return {c["name"]: c for c in json.loads(path.read_text())}


@pytest.fixture(params=["bigquery", "pubsub", "memory"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "pubsub":
        return _pubsub_backend(request)
    if request.param == "memory":
        twin = MemoryChangelog()

        def broken() -> Changelog:
            down = MemoryChangelog()

            def fail(_: str) -> None:
                raise DependencyUnavailable("bigquery", "ConnectionError")

            down.fault = fail
            return down

        return Backend(twin, lambda table: sorted((c.row_key, m) for c, m in twin.rows if c.table == table), broken)
    emulator, name = request.getfixturevalue("dataset")
    client = emulator.client()

    def landed(table: str) -> list[tuple[str, str]]:
        rows = client.query(f"SELECT row_key, message_id FROM `{name}.changelog_{table}`").result()
        return sorted((r["row_key"], r["message_id"]) for r in rows)

    def broken() -> Changelog:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        elsewhere = bigquery.Client(project=emulator.project, credentials=AnonymousCredentials(),
                                    client_options=ClientOptions(api_endpoint=f"http://127.0.0.1:{closed_port()}"))
        return BigQueryChangelog(elsewhere, name, POSTGRESQL, 1)

    client.query(f"DELETE FROM `{name}.changelog_users` WHERE TRUE").result()
    return Backend(BigQueryChangelog(client, name, POSTGRESQL, 10), landed, broken)


def user_change(user_id: str, lsn: int) -> Change:
    """A Debezium insert of a users row, as its JSON converter writes it without schemas."""
    message = {"before": None, "after": {"user_id": user_id, "age": 33, "signup_date": 19000,
                                         "verification_status": "verified"},
               "source": {"connector": "postgresql", "db": "fs", "schema": "public", "table": "users",
                          "lsn": lsn, "ts_ms": 1_790_000_000_000, "txId": 7},
               "op": "c", "ts_ms": 1_790_000_000_100}
    change = parse_change(json.dumps(message).encode())
    assert change is not None
    return change


def test_every_appended_change_lands_with_its_message_id(backend: Backend) -> None:
    a, b = user_change("a", 100), user_change("b", 101)

    written = backend.changelog.append([(a, "m1"), (b, "m2")])

    assert written == 2
    assert backend.landed("users") == [(a.row_key, "m1"), (b.row_key, "m2")]
    assert backend.changelog.append([]) == 0


def test_an_unreachable_changelog_is_unavailable(backend: Backend) -> None:
    with pytest.raises(DependencyUnavailable) as down:
        backend.unreachable().append([(user_change("a", 100), "m1")])
    assert down.value.dependency == backend.dependency


def test_a_cockroachdb_position_of_96_bits_lands_exactly(dataset: tuple[Any, str]) -> None:
    emulator, name = dataset
    client = emulator.client()
    position = (1_790_000_000_000_000_000 << 32) | 7  # an HLC (wall ns << 32 | logical): past INT64
    change = dataclasses.replace(user_change("hlc-user", 1), position=position)  # as a changefeed message gives it

    BigQueryChangelog(client, name, POSTGRESQL, 10).append([(change, "m-hlc")])

    rows = list(client.query(f"SELECT lsn FROM `{name}.changelog_users` WHERE message_id = 'm-hlc'").result())
    assert [int(r["lsn"], 16) for r in rows] == [position]


def test_published_twice_a_change_is_one_row_of_the_dedup_view(request: pytest.FixtureRequest) -> None:
    """A BigQuery subscription has no insertId: a redelivered change lands twice, and the view reads it once."""
    backend = _pubsub_backend(request)
    emulator, name = request.getfixturevalue("dataset")
    change = user_change("twice", 200)

    backend.changelog.append([(change, "m-first")])
    backend.changelog.append([(change, "m-redelivered")])

    assert [key for key, _ in backend.landed("users")] == [change.row_key, change.row_key]
    rows = list(emulator.client().query(
        f"SELECT row_key, lsn FROM `{name}.changelog_users_dedup` WHERE user_id = 'twice'").result())
    assert [(r["row_key"], int(r["lsn"], 16)) for r in rows] == [(change.row_key, change.lsn)]
