"""The offline changelog through Pub/Sub: each change published as its ``changelog_<table>`` row.

Production's changelog (FS_CDC_CHANGELOG_SINK=pubsub). ingest_changes publishes one message per
change to the changelog topic, its data the row ``bigquery_changelog.changelog_row`` streams (the
same columns, the same text), its attribute ``table`` the source table; one BigQuery subscription per
changelog table, filtered on that attribute, writes each message as a row with the table's own
schema (terraform/modules/pubsub), so no code of ours stands between the topic and BigQuery.

A publish costs the ingesting instance a Publish RPC per batch and a few microseconds per row; a
streaming insert costs it an insertAll per table and batch, which the BigQuery emulator measured at
5 ms of CPU each (docs/cdc.md). Delivery stays at least once: ``append`` returns only once Pub/Sub
has stored every message (a Publish answer), the ingest function acknowledges a change only after
that, and any error raises DependencyUnavailable, so the change is redelivered and published again.
A BigQuery subscription delivers at least once too (no insertId), so duplicates reach the tables
either way; the ``changelog_<table>_dedup`` views (sql/bigquery/changelog.sql) make readers exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from feature_store.domain.changes import Change
from feature_store.errors import DependencyUnavailable
from feature_store.stores.bigquery_changelog import changelog_row
from feature_store.stores.dialect import Dialect
from feature_store.stores.pubsub_topic import TopicPublisher

TABLE_ATTRIBUTE = "table"  # the subscriptions' filter: attributes.table = "<source table>"


class PubSubChangelog:
    """Publishes changes to the changelog topic, one message per change; raises unless all were stored."""

    def __init__(self, publisher: Any, topic_path: str, dialect: Dialect, timeout_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.topic_path = topic_path
        self.dialect = dialect
        self._topic = TopicPublisher(publisher, topic_path, timeout_s)
        self._clock = clock
        self._attributes: dict[str, dict[str, str]] = {}  # one mapping per table, shared by its messages

    def append(self, items: Sequence[tuple[Change, str]]) -> int:
        """Publish ``(change, message_id)`` pairs; return the number of messages Pub/Sub stored."""
        now = self._clock()
        datas = [orjson.dumps(changelog_row(change, message_id, self.dialect, now)) for change, message_id in items]
        attributes = [self._attributes.setdefault(change.table, {TABLE_ATTRIBUTE: change.table})
                      for change, _ in items]
        for start, end in self._topic.chunks(datas):
            try:
                self._topic.send(datas[start:end], attributes[start:end])
            except Exception as exc:  # UNAVAILABLE, DEADLINE_EXCEEDED, PERMISSION_DENIED...: redelivered, republished
                raise DependencyUnavailable("pubsub", f"changelog publish: {type(exc).__name__}") from exc
        return len(datas)
