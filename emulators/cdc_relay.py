"""The local change source: PostgreSQL logical decoding -> Debezium envelopes -> Pub/Sub push.

Stands in for Debezium Server (or Datastream) and the Pub/Sub push subscription. It reads a
logical replication slot, turns each row change of the captured tables into Debezium's JSON
change event (payload.before/after/source/op/ts_ms, optionally with the ``schema`` part), and
delivers it as a Pub/Sub push request (base64 data, messageId, publishTime, CloudEvent binary
headers) to the ingest function, or publishes it with google-cloud-pubsub when
PUBSUB_EMULATOR_HOST is set. The slot is advanced only after every change up to a commit was
acknowledged (2xx), so delivery is at least once and a restart resumes at the confirmed position.

    python emulators/cdc_relay.py [--target-url URL] [--slot NAME] [--once] [--drop-slot]

Settings: FS_POSTGRES_* and FS_CDC_* (shared/feature_store/settings.py), e.g. ``source .local/stack.env``.
Output plugin: wal2json (format-version 2) when the server may load it, else test_decoding.
Partitions are reported as their parent table (Debezium's publish.via.partition.root).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from debezium_wire import Transaction, debezium_event, decode_test_decoding, decode_wal2json, format_lsn

from feature_store.domain.changes import TABLES
from feature_store.logs import configure, get_logger
from feature_store.settings import Settings
from feature_store.stores.postgres import Connection, connect

log = get_logger("cdc_relay")

HEARTBEAT_PREFIX = "fs_cdc_heartbeat"
WAL2JSON_OPTIONS = ("'format-version', '2', 'include-xids', '1', 'include-timestamp', '1', "
                    "'include-lsn', '1', 'include-types', '0'")
TEST_DECODING_OPTIONS = "'include-xids', '1', 'include-timestamp', '1', 'skip-empty-xacts', '1'"


# --- delivery -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    data: bytes
    message_id: str
    publish_time: str


class PushSink:
    """Posts each message as a Pub/Sub push request (CloudEvent binary mode); retries until 2xx."""

    def __init__(self, url: str, project: str, topic: str, concurrency: int, stopping: threading.Event) -> None:
        parsed = urlparse(url)
        self._host, self._port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self._path = parsed.path or "/"
        self._topic = f"projects/{project}/topics/{topic}"
        self._subscription = f"projects/{project}/subscriptions/{topic}-push"
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="push")
        self._local = threading.local()
        self._stopping = stopping

    def _post(self, msg: Message) -> bool:
        body = json.dumps({"message": {"data": base64.b64encode(msg.data).decode(), "messageId": msg.message_id,
                                       "message_id": msg.message_id, "publishTime": msg.publish_time,
                                       "publish_time": msg.publish_time, "attributes": {}},
                           "subscription": self._subscription}).encode()
        headers = {"Content-Type": "application/json", "ce-id": msg.message_id, "ce-specversion": "1.0",
                   "ce-type": "google.cloud.pubsub.topic.v1.messagePublished", "ce-time": msg.publish_time,
                   "ce-source": f"//pubsub.googleapis.com/{self._topic}"}
        for _ in range(2):  # one retry on a stale keep-alive connection
            conn = getattr(self._local, "conn", None) or http.client.HTTPConnection(self._host, self._port, timeout=30)
            self._local.conn = conn
            try:
                conn.request("POST", self._path, body, headers)
                response = conn.getresponse()
                response.read()
                return 200 <= response.status < 300
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
        return False

    def deliver(self, messages: Sequence[Message]) -> None:
        pending, delay = list(messages), 0.1
        while pending:
            results = list(self._pool.map(self._post, pending))
            pending = [m for m, ok in zip(pending, results, strict=True) if not ok]
            if pending:
                log.warning("push not acknowledged; redelivering", extra={"fields": {"pending": len(pending)}})
                if self._stopping.wait(delay):
                    raise InterruptedError("stopping with undelivered messages (they stay in the slot)")
                delay = min(delay * 2, 5.0)


class PubSubSink:
    """Publishes to a topic with google-cloud-pubsub (used when PUBSUB_EMULATOR_HOST is set)."""

    def __init__(self, project: str, topic: str) -> None:
        from google.cloud import pubsub_v1

        self._client = pubsub_v1.PublisherClient()
        self._topic = self._client.topic_path(project, topic)
        # It may exist already (AlreadyExists), or creating it may not be ours to do: publishing says.
        with contextlib.suppress(Exception):
            self._client.create_topic(name=self._topic)

    def deliver(self, messages: Sequence[Message]) -> None:
        futures = [self._client.publish(self._topic, m.data) for m in messages]
        for future in futures:
            future.result(timeout=60)


# --- the relay ----------------------------------------------------------------------------------


class Relay:
    """Reads the slot, converts, delivers, then confirms: one ``step()`` per poll."""

    def __init__(self, conn: Connection, slot: str, deliver: Callable[[Sequence[Message]], None], *,
                 server: str = "fs", max_changes: int = 2000, with_schema: bool = False) -> None:
        self.conn, self.slot, self.deliver = conn, slot, deliver
        self.server, self.max_changes, self.with_schema = server, max_changes, with_schema
        self.db = str(conn.run("SELECT current_database()")[0][0])
        self.plugin = self._ensure_slot()
        self._parents: dict[str, str] = {}
        self._columns: dict[str, dict[str, tuple[str, bool]]] = {}
        self.delivered = 0

    def _ensure_slot(self) -> str:
        level = self.conn.run("SELECT current_setting('wal_level')")[0][0]
        if level != "logical":
            raise SystemExit(f"[cdc-relay] wal_level is {level!r}; logical decoding needs wal_level = logical "
                             "(emulators/stack.py and .ci/run set it)")
        found = self.conn.run("SELECT plugin FROM pg_replication_slots WHERE slot_name = :s", s=self.slot)
        if found:
            return str(found[0][0])
        for plugin in ("wal2json", "test_decoding"):
            try:
                self.conn.run("SELECT pg_create_logical_replication_slot(:s, :p)", s=self.slot, p=plugin)
                log.info("created replication slot", extra={"fields": {"slot": self.slot, "plugin": plugin}})
                return plugin
            except Exception as exc:  # wal2json missing or not allowed (output_plugin_libraries): fall back
                log.warning("output plugin unavailable", extra={"fields": {"plugin": plugin, "reason": str(exc)}})
        raise SystemExit("[cdc-relay] could not create a logical replication slot")

    def drop_slot(self) -> None:
        self.conn.run("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = :s",
                      s=self.slot)

    def _peek(self) -> list[list[Any]]:
        options = WAL2JSON_OPTIONS if self.plugin == "wal2json" else TEST_DECODING_OPTIONS
        return self.conn.run(f"SELECT lsn::text, xid::text, data FROM pg_logical_slot_peek_changes("
                             f"CAST(:s AS name), NULL, CAST(:n AS integer), {options})",
                             s=self.slot, n=self.max_changes)

    def _parent(self, relname: str) -> str:
        if relname not in self._parents:
            rows = self.conn.run("SELECT CAST(pg_partition_root(c.oid) AS regclass)::text FROM pg_class c "
                                 "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                 "WHERE n.nspname = 'public' AND c.relname = :r", r=relname)
            self._parents[relname] = str(rows[0][0]) if rows and rows[0][0] else relname
        return self._parents[relname]

    def _table_columns(self, table: str) -> dict[str, tuple[str, bool]]:
        if table not in self._columns:
            rows = self.conn.run("SELECT attname::text, format_type(atttypid, atttypmod), NOT attnotnull "
                                 "FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 "
                                 "AND NOT attisdropped ORDER BY attnum", t=f"public.{table}")
            self._columns[table] = {str(n): (str(t), bool(o)) for n, t, o in rows}
        return self._columns[table]

    def messages(self, transactions: Sequence[Transaction]) -> Iterator[Message]:
        for txn in transactions:
            publish_time = datetime.fromtimestamp(txn.commit_ts_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
            for change in txn.changes:
                table = self._parent(change.table)
                if table not in TABLES:
                    continue
                data = debezium_event(server=self.server, db=self.db, table=table, op=change.op, lsn=change.lsn,
                                      commit_lsn=txn.commit_lsn, tx_id=txn.xid, ts_ms=txn.commit_ts_ms,
                                      before=change.before, after=change.after,
                                      columns=self._table_columns(table), with_schema=self.with_schema)
                yield Message(data, str(change.lsn), publish_time)

    def step(self) -> int:
        """Deliver what the slot holds now and confirm it; the number of changes delivered."""
        rows = self._peek()
        if not rows:
            self._heartbeat_if_behind()
            return 0
        decode = decode_wal2json if self.plugin == "wal2json" else decode_test_decoding
        transactions = decode(rows)
        messages = list(self.messages(transactions))
        if messages:
            self.deliver(messages)
        self.conn.run("SELECT pg_replication_slot_advance(CAST(:s AS name), CAST(:l AS pg_lsn))",
                      s=self.slot, l=format_lsn(max(t.commit_lsn for t in transactions)) if transactions
                      else rows[-1][0])
        self.delivered += len(messages)
        return len(messages)

    def _heartbeat_if_behind(self) -> None:
        """WAL of other databases is decoded (and skipped) on every peek until the slot moves past it;
        a tiny transaction of ours gives the next step a commit to confirm (Debezium's heartbeat)."""
        behind = self.conn.run("SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots "
                               "WHERE slot_name = :s", s=self.slot)
        if behind and behind[0][0] is not None and int(behind[0][0]) > 64 * 1024:
            self.conn.run("SELECT pg_logical_emit_message(true, :p, '')", p=HEARTBEAT_PREFIX)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--target-url", help="the ingest function's URL (default FS_CDC_TARGET_URL)")
    parser.add_argument("--slot", help="replication slot (default FS_CDC_SLOT)")
    parser.add_argument("--once", action="store_true", help="deliver what is there, then exit")
    parser.add_argument("--drop-slot", action="store_true", help="drop the slot and exit")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure(settings.log_level)
    cdc = settings.cdc
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    conn = Connection(connect(settings.postgres, application_name="fs_cdc_relay"))
    slot = args.slot or cdc.slot
    project = settings.pubsub.project or "local-project"
    if settings.pubsub.emulator_host:
        sink: PushSink | PubSubSink = PubSubSink(project, settings.pubsub.topic)
    else:
        url = args.target_url or cdc.target_url
        if not url and not args.drop_slot:
            parser.error("no target: pass --target-url or set FS_CDC_TARGET_URL (or PUBSUB_EMULATOR_HOST)")
        sink = PushSink(url or "http://127.0.0.1/", project, settings.pubsub.topic, cdc.concurrency, stopping)
    relay = Relay(conn, slot, sink.deliver, server=cdc.server_name, max_changes=cdc.max_changes,
                  with_schema=cdc.include_schema)
    if args.drop_slot:
        relay.drop_slot()
        return 0
    logging.getLogger("cdc_relay").info("relaying", extra={"fields": {"slot": slot, "plugin": relay.plugin}})
    while not stopping.is_set():
        try:
            n = relay.step()
        except InterruptedError:
            break
        if args.once and n == 0:
            break
        if n == 0:
            stopping.wait(cdc.poll_interval_ms / 1000)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
