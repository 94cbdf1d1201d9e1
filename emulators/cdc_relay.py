"""The local change source: PostgreSQL logical decoding -> Debezium envelopes -> Pub/Sub push.

Stands in for Debezium Server (or Datastream) and the Pub/Sub push subscription. It reads a
logical replication slot, turns each row change of the captured tables into Debezium's JSON
change event (payload.before/after/source/op/ts_ms, optionally with the ``schema`` part), and
delivers it as a Pub/Sub push request (base64 data, messageId, publishTime, CloudEvent binary
headers) to the ingest function, or publishes it with google-cloud-pubsub when
PUBSUB_EMULATOR_HOST is set. The slot is advanced only after every change up to a commit was
acknowledged (2xx), so delivery is at least once and a restart resumes at the confirmed position.

Failures (docs/cdc.md, "The local relay"): a lost PostgreSQL connection (a server restart, a
shutdown, a network error) is reconnected with exponential backoff and the relay resumes from the
slot; transactions it had already delivered before the connection dropped but could not confirm
are confirmed without being delivered again. A push endpoint that does not acknowledge is retried
until it does. When the slot has nothing for us the relay still confirms the WAL position it
decoded up to (WAL of other databases included), so retained WAL stays bounded, and it decodes
only when the server has flushed WAL since it last looked (one cheap query per poll when idle).

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
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import pg8000.native
from debezium_wire import Transaction, debezium_event, decode_test_decoding, decode_wal2json, format_lsn, parse_lsn

from feature_store.domain.changes import TABLES
from feature_store.errors import DependencyUnavailable
from feature_store.logs import configure, get_logger
from feature_store.settings import Settings
from feature_store.stores.postgres import Connection, connect

log = get_logger("cdc_relay")

# What a lost or refused PostgreSQL connection raises through Connection.run and connect().
CONNECTION_LOST = (DependencyUnavailable, pg8000.native.Error, OSError, EOFError, struct.error)
# After a peek that found nothing of ours, the next one waits at least this long, doubling up to
# IDLE_PEEK_MAX_S while WAL keeps coming from other databases (decoding it is the relay's main cost).
IDLE_PEEK_MAX_S = 0.2
# With no WAL flushed for IDLE_AFTER_S, the relay looks every IDLE_POLL_S instead of every poll
# interval: an idle stack costs ~0.3% of a core instead of ~1.7%, and the first commit after a
# quiet second waits at most this long more.
IDLE_AFTER_S = 1.0
IDLE_POLL_S = 0.1
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
    """Reads the slot, converts, delivers, then confirms: one ``step()`` per poll.

    ``delivered_upto`` is the end of the last transaction whose changes were all acknowledged;
    a relay built after a lost connection gets the old one's, so that the unconfirmed tail it had
    delivered already is confirmed, not delivered a second time.
    """

    def __init__(self, conn: Connection, slot: str, deliver: Callable[[Sequence[Message]], None], *,
                 server: str = "fs", max_changes: int = 2000, with_schema: bool = False,
                 delivered_upto: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.conn, self.slot, self.deliver = conn, slot, deliver
        self.server, self.max_changes, self.with_schema = server, max_changes, with_schema
        self.db = str(conn.run("SELECT current_database()")[0][0])
        self.plugin = self._ensure_slot()
        self._parents: dict[str, str] = {}
        self._columns: dict[str, dict[str, tuple[str, bool]]] = {}
        self.delivered = 0
        self.skipped_redelivery = 0  # changes confirmed without delivery (delivered before a reconnect)
        self.delivered_upto = delivered_upto
        self._confirmed = parse_lsn(str(conn.run(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = :s", s=self.slot)[0][0]))
        self._decoded_upto = 0  # flush position up to which the slot was found to hold nothing more
        self._clock = clock
        self._idle_delay = 0.0
        self._next_peek = 0.0
        self._flush_seen = 0
        self._flush_moved_at = clock()

    def _ensure_slot(self) -> str:
        level = self.conn.run("SELECT current_setting('wal_level')")[0][0]
        if level != "logical":
            raise SystemExit(f"[cdc-relay] wal_level is {level!r}; logical decoding needs wal_level = logical "
                             "(make services / emulators/postgres_setup.py sets it)")
        found = self.conn.run("SELECT plugin FROM pg_replication_slots WHERE slot_name = :s", s=self.slot)
        if found:
            return str(found[0][0])
        for plugin in ("wal2json", "test_decoding"):
            try:
                self.conn.run("SELECT pg_create_logical_replication_slot(:s, :p)", s=self.slot, p=plugin)
                log.info("created replication slot", extra={"fields": {"slot": self.slot, "plugin": plugin}})
                return plugin
            except pg8000.native.DatabaseError as exc:  # wal2json missing or not allowed: fall back
                log.warning("output plugin unavailable", extra={"fields": {"plugin": plugin, "reason": str(exc)}})
        raise SystemExit("[cdc-relay] could not create a logical replication slot")

    def drop_slot(self) -> None:
        self.conn.run("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = :s",
                      s=self.slot)

    def _peek(self, upto: int) -> list[list[Any]]:
        options = WAL2JSON_OPTIONS if self.plugin == "wal2json" else TEST_DECODING_OPTIONS
        return self.conn.run(f"SELECT lsn::text, xid::text, data FROM pg_logical_slot_peek_changes("
                             f"CAST(:s AS name), CAST(:u AS pg_lsn), CAST(:n AS integer), {options})",
                             s=self.slot, u=format_lsn(upto), n=self.max_changes)

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
        flush = parse_lsn(str(self.conn.run("SELECT pg_current_wal_flush_lsn()::text")[0][0]))
        if flush != self._flush_seen:
            self._flush_seen, self._flush_moved_at = flush, self._clock()
        if flush <= self._decoded_upto or self._clock() < self._next_peek:
            return 0  # no WAL since the slot was last found empty (or it was, moments ago)
        rows = self._peek(flush)
        decode = decode_wal2json if self.plugin == "wal2json" else decode_test_decoding
        transactions = decode(rows)
        fresh = [t for t in transactions if t.commit_lsn > self.delivered_upto]
        self.skipped_redelivery += sum(len(t.changes) for t in transactions if t.commit_lsn <= self.delivered_upto)
        messages = list(self.messages(fresh))
        if messages:
            self.deliver(messages)
        if transactions:
            self.delivered_upto = max(self.delivered_upto, max(t.commit_lsn for t in transactions))
        if len(rows) < self.max_changes:
            # Every transaction that committed before ``flush`` was in this peek: the slot holds
            # nothing else up to there, whatever WAL other databases wrote meanwhile.
            self._confirm(flush)
            self._decoded_upto = flush
        elif transactions:
            self._confirm(max(t.commit_lsn for t in transactions))
        self.delivered += len(messages)
        if messages:
            self._idle_delay = 0.0
        else:
            self._idle_delay = min(max(self._idle_delay * 2, 0.02), IDLE_PEEK_MAX_S)
        self._next_peek = self._clock() + self._idle_delay
        return len(messages)

    def wait_s(self, poll_s: float) -> float:
        """How long to wait before the next step when this one delivered nothing."""
        return poll_s if self._clock() - self._flush_moved_at < IDLE_AFTER_S else max(poll_s, IDLE_POLL_S)

    def _confirm(self, lsn: int) -> None:
        if lsn > self._confirmed:
            self.conn.run("SELECT pg_replication_slot_advance(CAST(:s AS name), CAST(:l AS pg_lsn))",
                          s=self.slot, l=format_lsn(lsn))
            self._confirmed = lsn


class Backoff:
    """Exponential backoff between reconnects: 0.1 s doubling up to 5 s, reset by a working step."""

    def __init__(self, first: float = 0.1, most: float = 5.0) -> None:
        self.first, self.most, self.current = first, most, first

    def next(self) -> float:
        delay, self.current = self.current, min(self.current * 2, self.most)
        return delay

    def reset(self) -> None:
        self.current = self.first


def run(open_relay: Callable[[int], Relay], stopping: threading.Event, poll_s: float, once: bool = False) -> int:
    """Step relays until stopped, reconnecting with backoff whenever PostgreSQL goes away.

    ``open_relay(delivered_upto)`` connects and builds a relay that resumes from the slot. Returns 0.
    """
    relay: Relay | None = None
    delivered_upto, backoff = 0, Backoff()
    while not stopping.is_set():
        try:
            if relay is None:
                relay = open_relay(delivered_upto)
            n = relay.step()
            backoff.reset()
        except InterruptedError:
            break
        except CONNECTION_LOST as exc:
            if relay is not None:
                delivered_upto = relay.delivered_upto
                relay.conn.close()
                relay = None
            delay = backoff.next()
            log.warning("PostgreSQL connection lost; reconnecting",
                        extra={"fields": {"error": f"{type(exc).__name__}: {exc}"[:300], "retry_in_s": delay}})
            stopping.wait(delay)
            continue
        if once and n == 0:
            break
        if n == 0:
            stopping.wait(relay.wait_s(poll_s))
    if relay is not None:
        relay.conn.close()
    return 0


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
    slot = args.slot or cdc.slot
    project = settings.pubsub.project or "local-project"
    if settings.pubsub.emulator_host:
        sink: PushSink | PubSubSink = PubSubSink(project, settings.pubsub.topic)
    else:
        url = args.target_url or cdc.target_url
        if not url and not args.drop_slot:
            parser.error("no target: pass --target-url or set FS_CDC_TARGET_URL (or PUBSUB_EMULATOR_HOST)")
        sink = PushSink(url or "http://127.0.0.1/", project, settings.pubsub.topic, cdc.concurrency, stopping)

    def open_relay(delivered_upto: int) -> Relay:
        conn = Connection(connect(settings.postgres, application_name="fs_cdc_relay"))
        try:
            relay = Relay(conn, slot, sink.deliver, server=cdc.server_name, max_changes=cdc.max_changes,
                          with_schema=cdc.include_schema, delivered_upto=delivered_upto)
        except BaseException:
            conn.close()
            raise
        logging.getLogger("cdc_relay").info("relaying", extra={"fields": {"slot": slot, "plugin": relay.plugin}})
        return relay

    if args.drop_slot:
        relay = open_relay(0)
        relay.drop_slot()
        relay.conn.close()
        return 0
    return run(open_relay, stopping, cdc.poll_interval_ms / 1000, once=args.once)


if __name__ == "__main__":
    sys.exit(main())
