"""Label files for training sets: columns, values and instants checked before anything is built."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from feature_store.errors import InvalidLabels
from feature_store.services.training import parse_time, read_labels

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_good_csv_gives_its_rows_and_the_label_type(tmp_path: Path) -> None:
    path = write(tmp_path / "l.csv", "user_id,decision_time,label,extra\n"
                                     "u000000001,2026-11-01T10:00:00Z,1,x\nu000000002,2026-11-02 10:00:00,0,y\n")

    rows, kind = read_labels(path, NOW)

    assert kind == "INT64"
    assert [(r.row, r.user_id, r.decision_time, r.label) for r in rows] == [
        (1, "u000000001", datetime(2026, 11, 1, 10, tzinfo=UTC), "1"),
        (2, "u000000002", datetime(2026, 11, 2, 10, tzinfo=UTC), "0"),  # no zone: UTC
    ]


@pytest.mark.parametrize(("labels", "kind"), [(["1", "0"], "INT64"), (["0.5", "1"], "FLOAT64"),
                                              (["good", "bad"], "STRING"), (["1", "yes"], "STRING")])
def test_the_label_type_is_the_narrowest_that_holds_every_label(tmp_path: Path, labels: list[str],
                                                                kind: str) -> None:
    text = "user_id,decision_time,label\n" + "".join(f"u{n:09d},2026-11-01T10:00:00Z,{v}\n"
                                                    for n, v in enumerate(labels))

    assert read_labels(write(tmp_path / "l.csv", text), NOW)[1] == kind


def test_missing_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidLabels) as caught:
        read_labels(write(tmp_path / "l.csv", "user,decision_time\nu1,2026-11-01T10:00:00Z\n"), NOW)

    assert caught.value.code == "invalid_labels"
    assert "has no column 'user_id', 'label'" in caught.value.message


def test_every_bad_row_is_named_by_problem_first_ten_then_a_count(tmp_path: Path) -> None:
    future = "\n".join(f"u{n:09d},2027-01-01T00:00:00Z,1" for n in range(13))
    path = write(tmp_path / "l.csv", "user_id,decision_time,label\n"
                                     f"u000000001,2026-11-01T10:00:00Z,1\n{future}\n"
                                     "u000000002,yesterday,1\n,2026-11-01T10:00:00Z,1\nu000000003,,\n")

    with pytest.raises(InvalidLabels) as caught:
        read_labels(path, NOW)

    message = caught.value.message
    assert "13 rows have a decision_time in the future" in message
    assert "row 2 (u000000000, 2027-01-01T00:00:00+00:00)" in message and "and 3 more" in message
    assert "row 12 (u000000010" not in message
    assert "1 row have a decision_time that is not an ISO 8601 instant: row 15 ('yesterday')" in message
    assert "2 rows miss a value: row 16 (user_id), row 17 (decision_time, label)" in message


def test_ndjson_labels_need_every_column_on_every_row(tmp_path: Path) -> None:
    good = write(tmp_path / "l.ndjson", '{"user_id": "u1", "decision_time": "2026-11-01T10:00:00Z", "label": 0.25}\n\n'
                                        '{"user_id": "u2", "decision_time": "2026-11-01T11:00:00+01:00", "label": 1}\n')
    rows, kind = read_labels(good, NOW)
    assert kind == "FLOAT64" and rows[1].decision_time == datetime(2026, 11, 1, 10, tzinfo=UTC)

    partial = write(tmp_path / "p.ndjson", '{"user_id": "u1", "decision_time": "2026-11-01T10:00:00Z", "label": 0}\n'
                                           '{"user_id": "u2", "decision_time": "2026-11-01T10:00:00Z"}\n')
    with pytest.raises(InvalidLabels, match="has no column 'label'"):
        read_labels(partial, NOW)
    with pytest.raises(InvalidLabels, match="row 2 is not a JSON object"):
        read_labels(write(tmp_path / "b.ndjson", '{"user_id": "u1"}\n[1, 2\n'), NOW)


def test_other_files_are_refused_with_a_sentence(tmp_path: Path) -> None:
    with pytest.raises(InvalidLabels, match=r"\.csv or \.ndjson"):
        read_labels(write(tmp_path / "l.xlsx", "x"), NOW)
    with pytest.raises(InvalidLabels, match="no labels file"):
        read_labels(tmp_path / "absent.csv", NOW)
    with pytest.raises(InvalidLabels, match="holds no label rows"):
        read_labels(write(tmp_path / "e.csv", "user_id,decision_time,label\n"), NOW)
    assert parse_time(" 2026-11-01T10:00:00.5Z ") == datetime(2026, 11, 1, 10, 0, 0, 500000, tzinfo=UTC)
