"""What a read returns: typed vectors with their freshness, and the envelope of the answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas


@dataclass(frozen=True, slots=True)
class FeatureVector:
    """One user's answer. Only an ``ok`` vector has features and freshness.

    ``features`` is ``{group: {name: value}}`` (int, float, str, bool or None), as the server groups them.
    """

    user_id: str
    status: str  # ok, unknown_user or unavailable
    features: dict[str, dict[str, Any]] | None = None
    computed_at: datetime | None = None  # when the source snapshot behind the vector was read
    source_watermark: str | None = None  # the source position it includes (PostgreSQL LSN or CockroachDB HLC)
    cache_hit: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def values(self) -> dict[str, Any]:
        """The features as one flat ``{name: value}`` (names are unique across groups)."""
        return {name: v for group in (self.features or {}).values() for name, v in group.items()}


@dataclass(frozen=True, slots=True)
class OnlineFeatures:
    """The vectors of a read, in the order of the ids asked for, and how they were served.

    A read split into several requests (more ids than the server's batch limit) reports the earliest
    ``as_of``, ``degraded`` if any part was, and the counts summed; every part reads the same version.
    """

    feature_set: str
    version: int
    as_of: datetime  # the instant features were evaluated at
    degraded: bool  # the online store was skipped and the source answered
    degraded_reason: str | None
    vectors: list[FeatureVector]
    counts: dict[str, int]  # ok, unknown_user, unavailable
    # Features of the set left out because the caller's scope excludes them (REST says so; over gRPC the
    # vectors simply list only the features served).
    withheld_features: list[str] = field(default_factory=list)

    def to_dataframe(self) -> pandas.DataFrame:
        """One row per vector (index ``user_id``): ``status``, a column per feature, the freshness columns.

        Integer features are nullable ``Int64`` columns, so a missing value does not turn them into floats.
        """
        pd = _pandas()
        rows = [{"status": v.status, **v.values(), "computed_at": v.computed_at,
                 "source_watermark": v.source_watermark, "cache_hit": v.cache_hit} for v in self.vectors]
        return pd.DataFrame(_columns(rows), index=pd.Index([v.user_id for v in self.vectors], name="user_id"))


@dataclass(frozen=True)
class HistoricalFeatures:
    """A point-in-time training set: per label, every feature as it was at its decision time.

    ``table`` is where the server keeps it in BigQuery (``dataset.table``); ``rows`` are its rows in
    label order: ``label_row``, ``user_id``, ``decision_time``, ``label``, ``feature_set``,
    ``feature_set_version``, then one entry per feature.
    """

    table: str
    feature_set: str
    version: int
    rows: list[dict[str, Any]]

    def to_dataframe(self) -> pandas.DataFrame:
        """One row per label (index ``label_row``), integer features as nullable ``Int64`` columns."""
        pd = _pandas()
        frame = pd.DataFrame(_columns(self.rows))
        if "decision_time" in frame:
            frame["decision_time"] = pd.to_datetime(frame["decision_time"], utc=True, format="ISO8601")
        return frame.set_index("label_row") if "label_row" in frame else frame


def _pandas() -> Any:
    try:
        import pandas
    except ModuleNotFoundError:
        raise ModuleNotFoundError("to_dataframe needs pandas: pip install 'feature-store-client[pandas]'") from None
    return pandas


def _columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Column name -> values, in first-seen order; all-integer columns as nullable ``Int64`` (None stays missing)."""
    pd = _pandas()
    columns: dict[str, Any] = {}
    for name in dict.fromkeys(name for row in rows for name in row):
        values = [row.get(name) for row in rows]
        kinds = {type(x) for x in values if x is not None}
        columns[name] = pd.array(values, dtype="Int64") if kinds == {int} else values
    return columns
