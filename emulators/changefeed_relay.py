"""A stand-in for a CockroachDB changefeed into the Pub/Sub sink, over the migration's PostgreSQL rehearsal target.

After the cutover the target is the source of truth and its changes flow back to the old source through
replicate_changes (docs/migration.md). In production that stream is ``CREATE CHANGEFEED FOR TABLE ...
INTO 'gcpubsub://...' WITH updated, diff, cursor = '<the cutover's HLC>'``. Where no CockroachDB can
run, this relay reads a logical replication slot of the PostgreSQL target (emulators/cdc_relay.py's
slot handling, delivery and confirmation) and writes each row change as such a changefeed writes it to
the Pub/Sub sink: ``{"Key": [...primary key...], "Value": {"after": ..., "updated": "<wall>.<logical>"},
"Topic": "<table>"}`` (https://www.cockroachlabs.com/docs/stable/changefeed-sinks#pub-sub-sink-messages),
DECIMAL as a JSON number, DATE and TIMESTAMPTZ as ISO text.

Like a changefeed, it emits one message per key per transaction (the transaction's last version of
the row) and stamps every message of a transaction with the same ``updated`` timestamp: here the
transaction's commit LSN written as an HLC (``format_watermark(COCKROACHDB, lsn)``), so the position a
replicated row carries is in the same space as the target dialect's watermark (stores/dialect.py).
It has no ``before`` (the ``diff`` option): the rehearsal target keeps the derived schema, which has no
REPLICA IDENTITY FULL; the replication needs only the key for a delete.

    python emulators/changefeed_relay.py --target-url URL [--slot NAME] [--cursor LSN|cutover] [--once]

Settings: FS_POSTGRES_* name the TARGET database here, FS_CDC_* as for cdc_relay.py. ``--cursor cutover``
starts after the position the cutover recorded in the target's fs_migration_state (the changefeed's
``cursor``): what the forward replication wrote before it is not sent back.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from cdc_relay import Message, PushSink, Relay
from debezium_wire import Transaction, format_lsn, parse_timestamptz

from feature_store.domain.changes import TABLES
from feature_store.logs import configure, get_logger
from feature_store.settings import Settings
from feature_store.stores.dialect import COCKROACHDB, format_watermark
from feature_store.stores.postgres import Connection, connect

log = get_logger("changefeed_relay")


def crdb_value(pg_type: str, value: Any) -> Any:
    """A column value as a CockroachDB changefeed's JSON writes it."""
    if value is None:
        return None
    if pg_type.startswith("numeric"):
        return value if isinstance(value, Decimal) else Decimal(str(value))
    if pg_type in ("integer", "smallint", "bigint"):
        return int(value)
    if pg_type == "date":
        return value.isoformat() if isinstance(value, date) else str(value)
    if pg_type == "timestamp with time zone":
        moment = value if isinstance(value, datetime) else parse_timestamptz(str(value))
        return moment.astimezone(UTC).isoformat()
    if pg_type.startswith("character("):
        return str(value)
    return value if isinstance(value, str) else str(value)


def _dumps(obj: Any) -> bytes:
    """JSON with DECIMAL written as a number from its text (through float it would lose digits)."""
    text = json.dumps(obj, default=lambda v: f"\x00{v}\x00" if isinstance(v, Decimal) else str(v))
    return text.replace('"\\u0000', "").replace('\\u0000"', "").encode()


class ChangefeedRelay(Relay):
    """A Relay whose messages are CockroachDB changefeed rows instead of Debezium events."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keys: dict[str, list[str]] = {}

    def _key_columns(self, table: str) -> list[str]:
        if table not in self._keys:
            rows = self.conn.run(
                "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = CAST(:t AS regclass) AND i.indisprimary "
                "ORDER BY array_position(i.indkey, a.attnum)", t=f"public.{table}")
            self._keys[table] = [str(r[0]) for r in rows]
        return self._keys[table]

    def messages(self, transactions: Sequence[Transaction]) -> Iterator[Message]:
        for txn in transactions:
            updated = format_watermark(COCKROACHDB, txn.commit_lsn)
            publish_time = datetime.fromtimestamp(txn.commit_ts_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
            last: dict[tuple[str, str], Message] = {}
            for change in txn.changes:
                table = self._parent(change.table)
                if table not in TABLES:
                    continue
                columns = self._table_columns(table)
                row = change.after if change.op != "d" else change.before
                if row is None:
                    continue
                key = [crdb_value(columns[c][0], row[c]) for c in self._key_columns(table)]
                after = None if change.op == "d" else {c: crdb_value(columns[c][0], v) for c, v in row.items()
                                                        if c in columns}
                data = _dumps({"Key": key, "Value": {"after": after, "updated": updated}, "Topic": table})
                last[(table, json.dumps(key, default=str))] = Message(data, f"{txn.commit_lsn}-{len(last)}",
                                                                      publish_time)
            yield from last.values()


def start_at(conn: Connection, slot: str, cursor: str) -> None:
    """Confirm the slot up to ``cursor`` (an LSN, or the position the cutover recorded) without sending."""
    if cursor == "cutover":
        found = conn.run("SELECT doc -> 'cutover' ->> 'target_position' FROM fs_migration_state WHERE name = 'current'")
        if not found or found[0][0] is None:
            raise SystemExit("[changefeed-relay] no cutover recorded in fs_migration_state yet")
        lsn = format_lsn(int(found[0][0]))
    else:
        lsn = cursor
    conn.run("SELECT pg_replication_slot_advance(CAST(:s AS name), CAST(:l AS pg_lsn)) WHERE CAST(:l AS pg_lsn) > "
             "(SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = :s)", s=slot, l=lsn)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--target-url", action="append", required=True,
                        help="a push endpoint (repeat for each subscription: replicate_changes, ingest_changes)")
    parser.add_argument("--slot", default="fs_changefeed", help="replication slot on the target database")
    parser.add_argument("--cursor", default=None, help="start after this LSN, or 'cutover'")
    parser.add_argument("--create-slot", action="store_true", help="create the slot and exit")
    parser.add_argument("--once", action="store_true", help="deliver what is there, then exit")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure(settings.log_level)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    conn = Connection(connect(settings.postgres, application_name="fs_changefeed_relay"))
    project = settings.pubsub.project or "local-project"
    sinks = [PushSink(url, project, settings.pubsub.topic, settings.cdc.concurrency, stopping)
             for url in args.target_url]

    def deliver(messages: Sequence[Message]) -> None:
        for sink in sinks:  # every subscription gets every message before the slot moves
            sink.deliver(messages)

    relay = ChangefeedRelay(conn, args.slot, deliver, max_changes=settings.cdc.max_changes)
    if args.create_slot:
        return 0
    if args.cursor:
        start_at(conn, args.slot, args.cursor)
    while not stopping.is_set():
        try:
            n = relay.step()
        except InterruptedError:
            break
        if args.once and n == 0:
            break
        if n == 0:
            stopping.wait(settings.cdc.poll_interval_ms / 1000)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
